"""What a server costs: CPU time and memory of a process and its descendants, from /proc.

Linux only, standard library only. A server is the process the harness started
plus everything below it (Postfix's master forks one process per role and per
session), so every figure here is taken over that tree:

- CPU: utime + stime of each live process plus cutime + cstime, the CPU of
  children it has already reaped; a difference of two readings therefore also
  counts Postfix processes that came and went in between.
- Memory of one process: VmRSS now, VmHWM (the peak, resettable through
  /proc/PID/clear_refs). Memory of several: the sum of Pss (proportional set
  size) so that shared library pages are counted once, not once per process.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024
#: Fields of /proc/PID/stat after "(comm) ": state is 0, ppid 1, utime 11 ... cstime 14.
_PPID, _UTIME, _STIME, _CUTIME, _CSTIME = 1, 11, 12, 13, 14


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # the process ended between listing and reading
        return None
    # comm may hold spaces and parentheses: the fields start after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def tree(root: int) -> list[int]:
    """``root`` and all its descendants that are alive now."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[_PPID]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if _stat(pid) is None:
            continue
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def cpu_seconds(root: int) -> float:
    """CPU seconds used so far by ``root``'s tree, reaped children included."""
    ticks = 0
    for pid in tree(root):
        fields = _stat(pid)
        if fields is not None:
            ticks += sum(int(fields[i]) for i in (_UTIME, _STIME, _CUTIME, _CSTIME))
    return ticks / CLOCK_TICKS


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_rss_mib(pid: int) -> float:
    """VmHWM of one process: its resident peak since start or the last reset_peak."""
    return _status_kib(pid, "VmHWM") / 1024


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux 4.0+); False where not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class Memory:
    processes: int
    rss_mib: float  # sum of VmRSS: shared pages counted once per process
    pss_mib: float  # sum of Pss: shared pages divided among their users

    @property
    def resident_mib(self) -> float:
        """The figure reported: RSS for one process, PSS summed for a process tree."""
        return self.rss_mib if self.processes == 1 else self.pss_mib


def memory(root: int) -> Memory:
    pids = tree(root)
    rss = sum(_status_kib(pid, "VmRSS") for pid in pids)
    pss = sum(_pss_kib(pid) for pid in pids) if len(pids) > 1 else rss
    return Memory(processes=len(pids), rss_mib=rss / 1024, pss_mib=pss / 1024)


class PeakSampler:
    """Samples a tree's memory every ``interval`` seconds in a thread; keeps the peak.

    For one process VmHWM is exact and sampling only backs it up; for a tree
    (Postfix) the sampled peak of the summed PSS is the figure, so a short spike
    between two samples can be missed.
    """

    def __init__(self, root: int, interval: float = 0.25) -> None:
        self.root = root
        self.interval = interval
        self.peak = Memory(0, 0.0, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-sampler", daemon=True)

    def __enter__(self) -> PeakSampler:
        reset_peak(self.root)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        now = memory(self.root)
        if now.resident_mib > self.peak.resident_mib:
            self.peak = now

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    @property
    def peak_mib(self) -> float:
        if self.peak.processes <= 1:
            return max(self.peak.resident_mib, peak_rss_mib(self.root))
        return self.peak.resident_mib
