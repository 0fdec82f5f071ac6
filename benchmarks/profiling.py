"""Where mailwright spends its time under load: py-spy, three ways, summarised as text.

mailwright runs under smtp-source (1 KiB, 20 sessions, many messages per
connection, or one per connection with ``--profile-load 1k-20-new``) while
py-spy samples it three times for the same duration:

- ``gil``: only the thread holding the GIL: where Python burns CPU.
- ``threads``: every busy thread, per thread: wall-clock view, waits on fsync,
  locks and futures included.
- ``native``: every thread with C frames too; the share of each thread's
  samples inside ``pthread_cond_*`` is time spent waiting to take the GIL back.

The raw files are py-spy's collapsed stacks (one ``frame;frame;... count`` per
line): speedscope or flamegraph.pl read them as they are.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import deps
from servers import LOOPBACK, SENDER, Mailwright, Server

WARM_UP = 1.0
SAMPLE_RATE = 100
#: smtp-source never gets to the end of this: it is killed when profiling is done.
MESSAGES = 1_000_000
MODES = (("gil", ["--gil"]), ("threads", ["--threads"]), ("native", ["--native", "--threads"]))
#: Frames every stack of a thread starts with; they say nothing about where time goes.
WRAPPER_FILES = (
    "<frozen runpy>",
    "uvloop/__init__.py",
    "asyncio/runners.py",
    "mailwright/cli.py",
    "mailwright/__main__.py",
)
WRAPPER_FUNCTIONS = (
    "Thread._bootstrap",
    "Thread._bootstrap_inner",
    "Thread.run",
    "_worker",
    "_WorkItem.run",
)


def profile(
    started: Callable[[Server], contextlib.AbstractContextManager[Server]],
    directory: Path,
    seconds: float,
    out: Path,
    *,
    reuse: bool = True,
) -> str:
    """Profile a fresh mailwright in ``directory``; raw files go to ``out``.

    ``reuse`` False sends one message per connection, to see the cost of sessions.
    """
    py_spy = str(deps.py_spy())
    reports = []
    with started(Mailwright(directory)) as server:
        argv = [deps.require_tool("smtp-source"), "-s", "20", "-m", str(MESSAGES)]
        argv += ["-l", "1024", "-f", SENDER, "-t", server.recipient]
        if reuse:
            argv.append("-d")
        argv.append(f"{LOOPBACK}:{server.port}")
        source = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            time.sleep(WARM_UP)
            for mode, flags in MODES:
                raw = out / f"profile-mailwright-{'1k-20' if reuse else '1k-20-new'}-{mode}.txt"
                try:
                    _record(py_spy, server.pid, seconds, raw, flags)
                except subprocess.CalledProcessError as exc:
                    # py-spy 0.3 can crash with --native across subprocesses.
                    reports.append(f"profile ({mode}): py-spy failed ({exc.returncode})")
                    continue
                reports.append(summarize(raw, mode))
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(source.pid, signal.SIGKILL)
            source.wait(10)
    return "\n\n".join(reports)


def _record(py_spy: str, pid: int, seconds: float, raw: Path, flags: list[str]) -> None:
    subprocess.run(
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--subprocesses",  # with [smtp] processes, the work is in children
            "--duration",
            str(int(seconds)),
            "--rate",
            str(SAMPLE_RATE),
            "--nolineno",
            "--format",
            "raw",
            "-o",
            str(raw),
            *flags,
        ],
        check=True,
        timeout=seconds + 60,
        capture_output=True,
    )


def _file(frame: str) -> str:
    return frame.rsplit("(", 1)[-1].rstrip(")")


def _is_wrapper(frame: str) -> bool:
    return _file(frame) in WRAPPER_FILES or frame.split(" (", 1)[0] in WRAPPER_FUNCTIONS


def _thread(frames: list[str]) -> str:
    """A thread's role, from its stack (names of executor threads differ by loop)."""
    if any("cmd_serve" in f for f in frames):
        if any(f.startswith(("DeliveryWorker.", "SmtpDeliverer.")) for f in frames):
            return "event loop, delivering"
        return "event loop, receiving (main thread)"
    if any(f.startswith("_Writer._run ") for f in frames):
        return "queue writer thread"
    if any(f.startswith("_worker (concurrent/futures") for f in frames):
        return "executor threads (to_thread)"
    return "other threads"


def summarize(raw: Path, mode: str, top: int = 20) -> str:
    """Top functions and files by own samples and by samples under them."""
    own: Counter[str] = Counter()
    under: Counter[str] = Counter()
    files: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    gil_wait: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if not f.startswith(("thread (", "process "))]
        if not frames:
            continue
        total += n
        role = _thread(frames)
        threads[role] += n
        if any(f.startswith("pthread_cond_") for f in frames):
            gil_wait[role] += n
        python = [f for f in frames if f.endswith(".py)") or "(<" in f]
        if mode == "native":
            continue
        own[frames[-1]] += n
        for frame in {f for f in python if not _is_wrapper(f)}:
            under[frame] += n
        for name in {_file(f) for f in python if not _is_wrapper(f)}:
            files[name] += n
    if not total:
        return f"profile ({mode}): no samples"

    def block(title: str, counter: Counter[str], k: int, base: int = total) -> list[str]:
        rows = [f"  {100 * n / base:5.1f}%  {name}" for name, n in counter.most_common(k)]
        return [title, *rows]

    what = {
        "gil": "samples of the thread holding the GIL (where Python spends CPU)",
        "threads": "samples of every busy thread (wall clock: fsync and lock waits included)",
        "native": "samples of every busy thread, C frames included",
    }[mode]
    lines = [f"profile ({mode}): {total} {what}; {raw.name}"]
    if mode == "native":
        lines.append("share of each thread's busy samples spent waiting to take the GIL:")
        for role, n in threads.most_common():
            lines.append(f"  {100 * gil_wait[role] / n:5.1f}%  {role} ({n} samples)")
        return "\n".join(lines)
    if mode == "threads":
        lines += block("by thread:", threads, 8)
    lines += block("own time (leaf function):", own, top)
    lines += block("time under (function and what it calls; wrappers left out):", under, top)
    lines += block("time under, per source file:", files, 15)
    return "\n".join(lines)
