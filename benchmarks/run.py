"""mailwright's benchmark: throughput, CPU and memory against Postfix, aiosmtpd and smtp-sink.

    python benchmarks/run.py --quick            # one run each, small counts (~2-3 minutes)
    python benchmarks/run.py                    # the full matrix, median of 3
    python benchmarks/run.py --profile 10       # ... then py-spy on mailwright for 10 s

Run it as root on a Debian-like Linux: Postfix's master must start as root.
Needs Postfix's tools (``--install`` gets them with apt-get) and, for aiosmtpd
and the profile, a private venv under ~/.cache/mailwright-bench that is made
on first use. Everything listens on 127.0.0.1 only; every client is bounded in
count and time; every server is stopped at the end, whatever happens.

Prints the machine, then one table: per load and server, msg/s, CPU ms per
message (the server's whole process tree, from the first connection until the
last message is stored, Maildir delivery included), peak memory, and each as a
ratio to Postfix. See docs/performance.md for what the figures mean.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import deps
import loads
import procstat
import profiling
from loads import DRAIN, LOADS, Load
from servers import (
    Aiosmtpd,
    Mailwright,
    MailwrightPostgres,
    Postfix,
    Server,
    ServerError,
    SmtpSink,
)

REPO = Path(__file__).resolve().parent.parent
SERVER_KEYS = (
    "smtp-sink",
    "postfix",
    "aiosmtpd-noop",
    "aiosmtpd-fsync",
    "mailwright",
    "mailwright-postgresql",
)
BASELINE = "postfix"
DRAIN_SERVERS = ("postfix", "mailwright", "mailwright-postgresql")
#: How long after the client's last 250 the stored count may take to catch up.
STORE_TIMEOUT = 120.0
SOURCE_TIMEOUT = 600.0
IDLE_TIMEOUT = 120.0
BIG_TIMEOUT = 300.0
FSYNC_PROBE_SECONDS = 1.0
FSYNC_PROBE_LIMIT = 5000
OPEN_FILES = 16384


@dataclass
class Result:
    load: str
    server: str
    run: int
    messages: int = 0
    msgs_per_s: float | None = None
    cpu_ms_per_msg: float | None = None
    peak_mib: float | None = None
    #: Seconds from the client's last reply until every message was stored (or relayed).
    store_lag: float | None = None
    extra: dict[str, float] = field(default_factory=dict)
    error: str = ""


# ------------------------------------------------------------------ the machine


def machine(workdir: Path) -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
    fsyncs = fsync_rate(workdir)
    info = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": f"{len(os.sched_getaffinity(0))} ({cpu})",
        "memory": f"{mem_kib / 1024 / 1024:.0f} GiB",
        "kernel": platform.release(),
        "filesystem": filesystem(workdir),
        "fsync": f"{fsyncs:,.0f}/s ({1000 / fsyncs:.2f} ms per 1 KiB write+fsync)",
        "python": platform.python_version(),
        "event loop": version_of("uvloop", prefix="uvloop ") or "asyncio",
        "mailwright": mailwright_version(),
        "postfix": postfix_version(),
        "load average": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }
    return info


def fsync_rate(directory: Path) -> float:
    """1 KiB appends, each followed by fsync, for about a second: the disk's commit rate."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    block = b"x" * 1024
    count = 0
    started = time.monotonic()
    try:
        while count < FSYNC_PROBE_LIMIT and time.monotonic() - started < FSYNC_PROBE_SECONDS:
            os.write(fd, block)
            os.fsync(fd)
            count += 1
    finally:
        os.close(fd)
        path.unlink()
    return count / (time.monotonic() - started)


def filesystem(path: Path) -> str:
    best = ("?", "?", "")
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, kind = line.split()[:3]
            if str(path.resolve()).startswith(mount) and len(mount) >= len(best[2]):
                best = (device, kind, mount)
    return f"{best[1]} on {best[0]}"


def version_of(package: str, prefix: str = "") -> str:
    try:
        return prefix + importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return ""


def mailwright_version() -> str:
    version = version_of("mailwright") or "?"
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return version
    dirty = f" + {len(changed)} uncommitted files in src/" if changed else ""
    return f"{version} at {head}{dirty}"


def postfix_version() -> str:
    postconf = deps.find_tool("postconf")
    if postconf is None:
        return "not installed"
    out = subprocess.run([postconf, "-dh", "mail_version"], capture_output=True, text=True)
    return out.stdout.strip() or "?"


# ------------------------------------------------------------------ measuring


class Lab:
    """Owns the temporary directories and every server started; stops them all at the end."""

    def __init__(self, base: Path, keep: bool) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mailwright-bench-", dir=base))
        self.root.chmod(0o711)  # Postfix's daemons (user postfix) reach their queue below
        spread_subdirectories(self.root)
        self.keep = keep
        self.running: list[Server] = []
        self._serial = 0

    def directory(self, name: str) -> Path:
        self._serial += 1
        path = self.root / f"{self._serial:03d}-{name}"
        path.mkdir()
        return path

    @contextlib.contextmanager
    def started(self, server: Server) -> Iterator[Server]:
        self.running.append(server)
        try:
            server.start()
            yield server
        finally:
            server.stop()
            self.running.remove(server)

    def close(self) -> None:
        for server in reversed(self.running):
            server.stop()
        self.running.clear()
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)


def spread_subdirectories(root: Path) -> None:
    """Give each cell's directory its own ext4 block group (``chattr +T``), where it can.

    ext4 without a journal (this benchmark's VM disk) will not reuse an inode
    freed in the last ~30 s: to create a file it scans past every such inode of
    the group, about 0.2 µs each.  Postfix deletes a queue file per message, so
    a cell that followed Postfix in the same block group paid up to a millisecond
    of kernel CPU per created file for Postfix's deletions.  With the "top of
    directory hierarchy" flag on the lab root, ext4's Orlov allocator spreads the
    cells' directories over block groups as it does top-level directories, and
    each server pays only for its own deletions.  On other file systems this does
    nothing (and chattr may refuse: that is fine).
    """
    chattr = shutil.which("chattr")
    if chattr is not None:
        subprocess.run([chattr, "+T", str(root)], capture_output=True, check=False)


def make_server(key: str, directory: Path) -> Server:
    if key == "mailwright":
        return Mailwright(directory)
    if key == "mailwright-postgresql":
        return MailwrightPostgres(directory)
    if key == "postfix":
        return Postfix(directory)
    if key == "smtp-sink":
        return SmtpSink(directory)
    if key.startswith("aiosmtpd-"):
        return Aiosmtpd(directory, handler=key.removeprefix("aiosmtpd-"))
    raise ValueError(key)


def wait_stored(count_now: Callable[[], int | None], target: int, timeout: float) -> bool:
    """Until ``count_now()`` reaches ``target`` (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while True:
        now = count_now()
        if now is None or now >= target:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def measure_source(server: Server, load: Load, count: int, run: int) -> Result:
    result = Result(load.key, server.name, run, messages=count)
    stored_before = server.delivered()
    cpu_before = procstat.cpu_seconds(server.pid)
    with procstat.PeakSampler(server.pid) as sampler:
        source = loads.smtp_source(
            server.port,
            sessions=load.sessions,
            count=count,
            size=load.size,
            reuse=load.reuse,
            recipient=server.recipient,
            timeout=SOURCE_TIMEOUT,
        )
        finished = time.monotonic()
        if source.returncode != 0:
            result.error = f"smtp-source exit {source.returncode}: {source.error}"
        target = (stored_before or 0) + count
        stored = wait_stored(server.delivered, target, STORE_TIMEOUT if not result.error else 5)
        result.store_lag = time.monotonic() - finished
    cpu = procstat.cpu_seconds(server.pid) - cpu_before
    result.peak_mib = sampler.peak_mib
    if not stored and not result.error:
        result.error = f"only {(server.delivered() or 0) - (stored_before or 0)} of {count} stored"
    if not result.error:
        result.msgs_per_s = count / source.elapsed
        result.cpu_ms_per_msg = cpu * 1000 / count
    return result


def measure_idle(server: Server, load: Load, count: int, run: int) -> Result:
    result = Result(load.key, server.name, run, messages=0)
    before = procstat.memory(server.pid)
    idle, during = loads.idle_connections(
        server.port, count, IDLE_TIMEOUT, lambda: procstat.memory(server.pid)
    )
    result.peak_mib = during.resident_mib
    result.extra = {
        "open_s": idle.open_seconds,
        "kib_per_conn": (during.resident_mib - before.resident_mib) * 1024 / max(idle.opened, 1),
        "processes": during.processes,
        "rss_sum_mib": during.rss_mib,
    }
    if idle.failed:
        result.error = f"{idle.failed} of {count} connections failed: {idle.first_error}"
    return result


def measure_big(server: Server, load: Load, count: int, size: int, run: int) -> Result:
    result = Result(load.key, server.name, run, messages=count)
    stored_before = server.delivered()
    cpu_before = procstat.cpu_seconds(server.pid)
    with procstat.PeakSampler(server.pid, interval=0.1) as sampler:
        big = loads.big_messages(server.port, count, size, server.recipient, BIG_TIMEOUT)
        finished = time.monotonic()
        stored = wait_stored(server.delivered, (stored_before or 0) + big.accepted, STORE_TIMEOUT)
        result.store_lag = time.monotonic() - finished
    cpu = procstat.cpu_seconds(server.pid) - cpu_before
    result.peak_mib = sampler.peak_mib
    if big.accepted != count:
        result.error = f"{count - big.accepted} of {count} failed: {big.first_error}"
    elif not stored:
        result.error = "not all stored in time"
    else:
        result.msgs_per_s = count / big.elapsed
        result.cpu_ms_per_msg = cpu * 1000 / count
        result.extra = {"mb_per_s": count * size / 1e6 / big.elapsed, "size": size}
    return result


def measure_drain(lab: Lab, key: str, count: int, run: int) -> Result:
    """Mail relayed to a local smtp-sink: does it leave as fast as it arrives?"""
    result = Result(DRAIN.key, key, run, messages=count)
    sink = SmtpSink(lab.directory("drain-sink"), counting=True)
    with lab.started(sink):
        directory = lab.directory(f"drain-{key}")
        server: Server
        if key == "mailwright":
            server = Mailwright(directory, forward_to=sink.port)
        elif key == "mailwright-postgresql":
            server = MailwrightPostgres(directory, forward_to=sink.port)
        else:
            server = Postfix(directory, relay_to=sink.port)
        with lab.started(server):
            cpu_before = procstat.cpu_seconds(server.pid)
            with procstat.PeakSampler(server.pid) as sampler:
                source = loads.smtp_source(
                    server.port,
                    sessions=DRAIN.sessions,
                    count=count,
                    size=DRAIN.size,
                    reuse=True,
                    recipient=server.recipient,
                    timeout=SOURCE_TIMEOUT,
                )
                arrived = time.monotonic()
                relayed_by_then = sink.received
                done = wait_stored(lambda: sink.received, count, STORE_TIMEOUT)
                left = time.monotonic()
            cpu = procstat.cpu_seconds(server.pid) - cpu_before
    result.peak_mib = sampler.peak_mib
    if source.returncode != 0:
        result.error = f"smtp-source exit {source.returncode}: {source.error}"
    elif not done:
        result.error = f"only {sink.received} of {count} relayed within {STORE_TIMEOUT:.0f} s"
    else:
        result.msgs_per_s = count / source.elapsed
        result.cpu_ms_per_msg = cpu * 1000 / count
        result.store_lag = left - arrived
        result.extra = {
            "out_per_s": relayed_by_then / source.elapsed,
            "backlog": count - relayed_by_then,
        }
    return result


def measure(server: Server, load: Load, quick: bool, run: int) -> Result:
    count = load.count(quick)
    if load.kind == "source":
        return measure_source(server, load, count, run)
    if load.kind == "idle":
        return measure_idle(server, load, count, run)
    if load.kind == "big":
        return measure_big(server, load, count, load.message_size(quick), run)
    raise ValueError(load.kind)


def run_matrix(
    lab: Lab,
    servers: list[str],
    chosen: list[Load],
    runs: int,
    quick: bool,
    on_result: Callable[[Result], None],
) -> None:
    """Every measurement gets a freshly started server in a new directory.

    Loads are the outer loop so the servers compared in one row of the table
    were measured minutes apart at most, under the same background load.
    """
    for run in range(1, runs + 1):
        for load in chosen:
            keys = servers if load.kind != "drain" else [k for k in DRAIN_SERVERS if k in servers]
            for key in keys:
                began = time.monotonic()
                try:
                    if load.kind == "drain":
                        result = measure_drain(lab, key, load.count(quick), run)
                    else:
                        server = make_server(key, lab.directory(f"{load.key}-{key}"))
                        with lab.started(server):
                            result = measure(server, load, quick, run)
                except ServerError as exc:
                    result = Result(load.key, key, run, error=f"server: {exc}")
                result.extra["wall_s"] = time.monotonic() - began
                result.extra["load1"] = os.getloadavg()[0]
                on_result(result)


# ------------------------------------------------------------------ reporting


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def combine(results: list[Result]) -> list[Result]:
    """One Result per (load, server): the median of each figure over the runs."""
    groups: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.load, r.server), []).append(r)
    combined = []
    for (load, server), rs in groups.items():
        good = [r for r in rs if not r.error] or rs
        keys = {k for r in good for k in r.extra}
        combined.append(
            Result(
                load,
                server,
                run=len(good),
                messages=good[0].messages,
                msgs_per_s=median([r.msgs_per_s for r in good]),
                cpu_ms_per_msg=median([r.cpu_ms_per_msg for r in good]),
                peak_mib=median([r.peak_mib for r in good]),
                store_lag=median([r.store_lag for r in good]),
                extra={
                    k: v for k in keys if (v := median([r.extra.get(k) for r in good])) is not None
                },
                error="; ".join(sorted({r.error for r in rs if r.error})),
            )
        )
        rates = [r.msgs_per_s for r in good if r.msgs_per_s is not None]
        if len(rates) > 1:
            combined[-1].extra.update(msgs_min=min(rates), msgs_max=max(rates))
    return combined


def fmt(value: float | None) -> str:
    """Three significant figures or so: 18,170 / 535 / 3.45 / 0.08."""
    if value is None:
        return "—"
    digits = 0 if value >= 100 else 1 if value >= 10 else 2
    return f"{value:,.{digits}f}"


def ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "—"
    return f"{value / base:.2f}×"


def note(r: Result) -> str:
    parts = []
    if r.load == "idle-1000" and "kib_per_conn" in r.extra:
        parts.append(f"{r.extra['kib_per_conn']:.0f} KiB/conn")
        if r.extra.get("processes", 1) > 1:
            parts.append(
                f"{r.extra['processes']:.0f} processes, RSS sum {r.extra['rss_sum_mib']:.0f} MB"
            )
    if r.load == DRAIN.key and "out_per_s" in r.extra:
        parts.append(f"out {r.extra['out_per_s']:,.0f}/s while arriving")
        parts.append(f"backlog {r.extra['backlog']:.0f} when input ended")
        parts.append(f"all out {r.store_lag:.1f} s later")
    elif r.store_lag is not None and r.store_lag >= 0.5 and not r.error:
        parts.append(f"stored {r.store_lag:.1f} s after last 250")
    if "mb_per_s" in r.extra:
        parts.append(f"{r.extra['mb_per_s']:.0f} MB/s in")
    if "msgs_min" in r.extra:
        parts.append(f"runs {fmt(r.extra['msgs_min'])}–{fmt(r.extra['msgs_max'])} msg/s")
    if r.error:
        parts.append("ERROR: " + r.error[:160])
    return "; ".join(parts)


def table(results: list[Result], servers: list[str], chosen: list[Load], quick: bool) -> str:
    by_key = {(r.load, r.server): r for r in results}
    labels = {
        "smtp-sink": "smtp-sink (discards)",
        "postfix": "Postfix",
        "aiosmtpd-noop": "aiosmtpd no-op",
        "aiosmtpd-fsync": "aiosmtpd fsync",
        "mailwright": "**mailwright**",
    }
    head = (
        "| load | server | msg/s | CPU ms/msg | peak MB | msg/s ÷ Postfix "
        "| CPU ÷ Postfix | MB ÷ Postfix | notes |"
    )
    lines = [head, "|" + "---|" * 9]
    for load in chosen:
        keys = servers if load.kind != "drain" else [k for k in DRAIN_SERVERS if k in servers]
        base = by_key.get((load.key, BASELINE))
        for key in keys:
            r = by_key.get((load.key, key))
            if r is None:
                continue
            lines.append(
                f"| {load.heading(quick)} | {labels.get(key, key)} | {fmt(r.msgs_per_s)} "
                f"| {fmt(r.cpu_ms_per_msg)} | {fmt(r.peak_mib)} "
                f"| {ratio(r.msgs_per_s, base and base.msgs_per_s)} "
                f"| {ratio(r.cpu_ms_per_msg, base and base.cpu_ms_per_msg)} "
                f"| {ratio(r.peak_mib, base and base.peak_mib)} | {note(r)} |"
            )
    return "\n".join(lines)


def progress(r: Result) -> None:
    figures = f"{fmt(r.msgs_per_s)} msg/s, {fmt(r.cpu_ms_per_msg)} CPU ms/msg, {fmt(r.peak_mib)} MB"
    took = f"[{r.extra.get('wall_s', 0):.0f} s]"
    line = f"  run {r.run} {r.load:10} {r.server:15} {took:6} {figures}  {note(r)}"
    print(line, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one run each, small counts")
    parser.add_argument("--runs", type=int, help="repetitions (default: 3, or 1 with --quick)")
    parser.add_argument(
        "--servers",
        default=",".join(SERVER_KEYS),
        help=f"comma-separated subset of {','.join(SERVER_KEYS)}",
    )
    parser.add_argument(
        "--loads",
        default=",".join(loads.LOAD_KEYS),
        help=f"comma-separated subset of {','.join(loads.LOAD_KEYS)}",
    )
    parser.add_argument(
        "--profile",
        type=float,
        default=0,
        metavar="SECONDS",
        help="then profile mailwright with py-spy under 1 KiB x 20 sessions",
    )
    parser.add_argument(
        "--profile-load",
        choices=["1k-20", "1k-20-new"],
        default="1k-20",
        help="load while profiling: many messages per connection, or one (default: 1k-20)",
    )
    parser.add_argument("--profile-only", action="store_true", help="skip the matrix")
    parser.add_argument("--out", type=Path, help="where to write results (default: a new temp dir)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="where servers keep their files (the disk under test)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the servers' directories")
    parser.add_argument(
        "--mailwright-processes",
        default="auto",
        metavar="N",
        help='mailwright\'s [smtp] processes: "auto" (default, one per CPU) or a number',
    )
    parser.add_argument(
        "--table-from", type=Path, metavar="JSON", help="print the table of a saved results.json"
    )
    parser.add_argument(
        "--install",
        action="store_true",
        help="apt-get install postfix first (root; no system configuration)",
    )
    args = parser.parse_args(argv)
    args.servers = [s for s in args.servers.split(",") if s]
    args.loads = [s for s in args.loads.split(",") if s]
    for name, chosen, known in (
        ("server", args.servers, SERVER_KEYS),
        ("load", args.loads, loads.LOAD_KEYS),
    ):
        if unknown := [c for c in chosen if c not in known]:
            parser.error(f"unknown {name} {unknown[0]!r}; choose from {', '.join(known)}")
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.profile_only and not args.profile:
        args.profile = 10
    return args


def raise_open_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = OPEN_FILES if hard == resource.RLIM_INFINITY else min(OPEN_FILES, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def check_dependencies(args: argparse.Namespace) -> None:
    if missing := deps.missing_postfix_tools():
        if not args.install:
            raise deps.MissingTool(f"{', '.join(missing)} not found; {deps.INSTALL_HINT}")
        deps.install_postfix()
    if "postfix" in args.servers and not deps.is_root():
        print("note: Postfix skipped: its master must start as root", file=sys.stderr)
        args.servers.remove("postfix")
    try:
        import mailwright  # noqa: F401
    except ImportError as exc:
        raise deps.MissingTool("mailwright is not importable: pip install -e . first") from exc
    if args.profile or any(s.startswith("aiosmtpd") for s in args.servers):
        deps.venv_python()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def print_saved(path: Path) -> int:
    """Print the machine and the table of a saved results.json again."""
    saved = json.loads(path.read_text())
    results = [Result(**r) for r in saved["runs"]]
    present = {r.load for r in results}
    servers = [k for k in SERVER_KEYS if any(r.server == k for r in results)]
    chosen = [load for load in (*LOADS, DRAIN) if load.key in present]
    print("machine:")
    for key, value in saved["machine"].items():
        print(f"  {key:13} {value}")
    print(f"  command       python benchmarks/run.py {' '.join(saved['args'])}".rstrip())
    print()
    print(table(combine(results), servers, chosen, "--quick" in saved["args"]))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table_from:
        return print_saved(args.table_from)
    try:
        check_dependencies(args)
    except deps.MissingTool as exc:
        print(f"benchmark: {exc}", file=sys.stderr)
        return 2
    raise_open_files()
    # SIGTERM ends the run like Ctrl-C, through the finally below.
    signal.signal(signal.SIGTERM, _interrupt)
    out = args.out or Path(tempfile.mkdtemp(prefix="mailwright-bench-results-"))
    out.mkdir(parents=True, exist_ok=True)
    Mailwright.processes = (
        int(args.mailwright_processes)
        if args.mailwright_processes.isdigit()
        else args.mailwright_processes
    )
    lab = Lab(args.workdir, args.keep)
    chosen = [load for load in (*LOADS, DRAIN) if load.key in args.loads]
    results: list[Result] = []
    started = time.monotonic()
    try:
        info = machine(lab.root)
        print("machine:")
        for key, value in info.items():
            print(f"  {key:13} {value}")
        mode = "quick: one run each" if args.quick else f"median of {args.runs} runs"
        if args.profile_only:
            mode = f"profile only ({args.profile:.0f} s per py-spy mode)"
        print(f"  command       {' '.join(['python', 'benchmarks/run.py', *sys.argv[1:]])}")
        print(f"  mode          {mode}", flush=True)
        if not args.profile_only:
            run_matrix(
                lab,
                args.servers,
                chosen,
                args.runs,
                args.quick,
                lambda r: (results.append(r), progress(r)),
            )
            combined = combine(results)
            text = table(combined, args.servers, chosen, args.quick)
            info["load average at end"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
            info["duration"] = f"{time.monotonic() - started:.0f} s"
            print()
            print(text)
            print(f"\n(load average at end {info['load average at end']}; {info['duration']})")
            (out / "table.md").write_text(text + "\n")
            (out / "results.json").write_text(
                json.dumps(
                    {
                        "machine": info,
                        "args": sys.argv[1:],
                        "runs": [asdict(r) for r in results],
                        "median": [asdict(r) for r in combined],
                    },
                    indent=2,
                )
                + "\n"
            )
        if args.profile:
            report = profiling.profile(
                lab.started,
                lab.directory("profile"),
                args.profile,
                out,
                reuse=args.profile_load == "1k-20",
            )
            print()
            print(report)
            (out / "profile-summary.txt").write_text(report + "\n")
    except KeyboardInterrupt:
        print("interrupted; stopping servers", file=sys.stderr)
        return 130
    finally:
        lab.close()
    print(f"\nresults in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
