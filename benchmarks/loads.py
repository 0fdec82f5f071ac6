"""The loads: what each one sends, and the clients that send it.

Throughput loads use Postfix's ``smtp-source`` (a C client, so the client's cost
is small and the same for every server). The memory loads need what
smtp-source cannot do (hold connections open; send 20 MB at once) and use the
small asyncio client below. Every client is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import deps
from servers import LOOPBACK, SENDER

T = TypeVar("T")

CLIENT_HELO = "client.bench.test"
#: At most this many connections are being opened at once (the listen backlogs are larger).
OPEN_CONCURRENCY = 50
#: Pause once every connection is open, so the server has settled before memory is read.
IDLE_SETTLE = 1.0
BODY_LINE = b"x" * 76 + b"\r\n"
WRITE_CHUNK = 1 << 20


@dataclass(frozen=True)
class Load:
    key: str
    title: str
    kind: str  # "source" (smtp-source), "idle", "big", "drain"
    sessions: int
    size: int  # octets of payload per message
    reuse: bool = True  # many messages per connection
    quick: int = 0  # messages (connections for "idle") in --quick
    full: int = 0  # ... in the full matrix
    quick_size: int = 0  # a smaller message size for --quick, where it dominates the time

    def count(self, quick: bool) -> int:
        return self.quick if quick else self.full

    def message_size(self, quick: bool) -> int:
        return self.quick_size if quick and self.quick_size else self.size

    def heading(self, quick: bool) -> str:
        return self.title.format(mb=f"{self.message_size(quick) / 1e6:.0f}")


LOADS = (
    Load("1k-20", "1 KiB, 20 sessions, many msgs/conn", "source", 20, 1024, True, 600, 5000),
    Load("1k-100", "1 KiB, 100 sessions, many msgs/conn", "source", 100, 1024, True, 600, 5000),
    Load("1k-20-new", "1 KiB, 20 sessions, 1 msg/conn", "source", 20, 1024, False, 400, 3000),
    Load("64k-20", "64 KiB, 20 sessions, many msgs/conn", "source", 20, 65536, True, 300, 2000),
    Load("idle-1000", "1000 idle connections (after EHLO)", "idle", 1000, 0, True, 1000, 1000),
    Load(
        "big-20",
        "20 concurrent {mb} MB messages",
        "big",
        20,
        20_000_000,
        True,
        20,
        20,
        quick_size=5_000_000,
    ),
)
DRAIN = Load(
    "drain", "queue drain: 1 KiB, 20 sessions, relayed", "drain", 20, 1024, True, 600, 5000
)
LOAD_KEYS = tuple(load.key for load in (*LOADS, DRAIN))


@dataclass
class SourceRun:
    elapsed: float
    returncode: int
    error: str


def smtp_source(
    port: int,
    *,
    sessions: int,
    count: int,
    size: int,
    reuse: bool,
    recipient: str,
    timeout: float,
) -> SourceRun:
    """Run smtp-source once; ``elapsed`` is its wall time (connect to last reply)."""
    argv = [deps.require_tool("smtp-source"), "-s", str(sessions), "-m", str(count)]
    argv += ["-l", str(size), "-f", SENDER, "-t", recipient, "-M", CLIENT_HELO]
    if reuse:
        argv.append("-d")
    argv.append(f"{LOOPBACK}:{port}")
    started = time.monotonic()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return SourceRun(time.monotonic() - started, -1, f"smtp-source timed out ({timeout:.0f} s)")
    elapsed = time.monotonic() - started
    error = " ".join(done.stderr.split())[-300:]
    return SourceRun(elapsed, done.returncode, error)


class SmtpFailure(Exception):
    pass


async def _reply(reader: asyncio.StreamReader) -> int:
    while True:
        line = await reader.readline()
        if not line:
            raise SmtpFailure("connection closed")
        if len(line) < 4 or line[3:4] != b"-":
            return int(line[:3])


async def _command(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: str, expect: int
) -> None:
    writer.write(line.encode("ascii") + b"\r\n")
    code = await _reply(reader)
    if code != expect:
        raise SmtpFailure(f"{line.split()[0]} got {code}")


async def _greet(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(LOOPBACK, port, limit=1 << 16)
    try:
        if (code := await _reply(reader)) != 220:
            raise SmtpFailure(f"greeting {code}")
        await _command(reader, writer, f"EHLO {CLIENT_HELO}", 250)
    except BaseException:
        writer.close()
        raise
    return reader, writer


@dataclass
class IdleRun:
    opened: int
    failed: int
    open_seconds: float
    first_error: str


def idle_connections(
    port: int, count: int, timeout: float, measure: Callable[[], T]
) -> tuple[IdleRun, T]:
    """Open ``count`` connections (greeting + EHLO), call ``measure()`` while they idle."""
    return asyncio.run(_idle(port, count, timeout, measure))


async def _idle(
    port: int, count: int, timeout: float, measure: Callable[[], T]
) -> tuple[IdleRun, T]:
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def open_one() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with gate:
            return await _greet(port)

    started = time.monotonic()
    tasks = [asyncio.create_task(open_one()) for _ in range(count)]
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    open_seconds = time.monotonic() - started
    writers = [task.result()[1] for task in done if task.exception() is None]
    errors = [repr(task.exception()) for task in done if task.exception() is not None]
    try:
        await asyncio.sleep(IDLE_SETTLE)
        measured = measure()
    finally:
        for writer in writers:
            writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True), 30
            )
    run = IdleRun(len(writers), count - len(writers), open_seconds, errors[0] if errors else "")
    return run, measured


def message(size: int, recipient: str) -> bytes:
    """A message of about ``size`` octets in 78-octet lines, ending with the final dot."""
    head = (
        f"From: <{SENDER}>\r\nTo: <{recipient}>\r\nSubject: benchmark {size} octets\r\n\r\n"
    ).encode("ascii")
    return head + BODY_LINE * max(1, size // len(BODY_LINE)) + b".\r\n"


@dataclass
class BigRun:
    elapsed: float
    accepted: int
    first_error: str


def big_messages(port: int, count: int, size: int, recipient: str, timeout: float) -> BigRun:
    """``count`` sessions at once, each sending one message of ``size`` octets."""
    return asyncio.run(_big(port, count, size, recipient, timeout))


async def _big(port: int, count: int, size: int, recipient: str, timeout: float) -> BigRun:
    data = message(size, recipient)

    async def send_one() -> None:
        reader, writer = await _greet(port)
        try:
            await _command(reader, writer, f"MAIL FROM:<{SENDER}> SIZE={len(data)}", 250)
            await _command(reader, writer, f"RCPT TO:<{recipient}>", 250)
            await _command(reader, writer, "DATA", 354)
            view = memoryview(data)
            for offset in range(0, len(view), WRITE_CHUNK):
                writer.write(view[offset : offset + WRITE_CHUNK])
                await writer.drain()
            if (code := await _reply(reader)) != 250:
                raise SmtpFailure(f"end of data got {code}")
            await _command(reader, writer, "QUIT", 221)
        finally:
            writer.close()

    started = time.monotonic()
    tasks = [asyncio.create_task(send_one()) for _ in range(count)]
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    elapsed = time.monotonic() - started
    errors = [repr(task.exception()) for task in done if task.exception() is not None]
    if pending:
        errors.append(f"{len(pending)} still sending after {timeout:.0f} s")
    accepted = sum(1 for task in done if task.exception() is None)
    return BigRun(elapsed, accepted, errors[0] if errors else "")
