"""aiosmtpd as a comparison server, started by run.py in the benchmark's own venv.

``--handler noop`` answers 250 to every message and keeps nothing: the cost of
aiosmtpd's protocol handling alone. ``--handler fsync`` writes each message to
its own file and fsyncs it (in the default thread pool, so the event loop keeps
serving other sessions) before the 250: the least a durable server must do.

The chosen port is written to ``--port-file`` once the socket listens.
SIGTERM or SIGINT stops the server.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session

HOSTNAME = "aiosmtpd.bench.test"
BACKLOG = 2048
MAX_MESSAGE = 32 * 1024 * 1024


class NoopHandler:
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return "250 OK"


class FsyncHandler:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._names = itertools.count()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        path = self.directory / f"{os.getpid()}.{next(self._names)}"
        content = envelope.original_content or b""
        await asyncio.get_running_loop().run_in_executor(None, _write_synced, path, content)
        return "250 OK"


def _write_synced(path: Path, content: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    if args.handler == "fsync":
        args.directory.mkdir(parents=True, exist_ok=True)
        handler: object = FsyncHandler(args.directory)
    else:
        handler = NoopHandler()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname=HOSTNAME, data_size_limit=MAX_MESSAGE),
        args.host,
        args.port,
        backlog=BACKLOG,
    )
    port = server.sockets[0].getsockname()[1]
    args.port_file.write_text(f"{port}\n")
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--handler", choices=["noop", "fsync"], required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--directory", type=Path, help="where the fsync handler writes")
    args = parser.parse_args()
    if args.handler == "fsync" and args.directory is None:
        parser.error("--handler fsync needs --directory")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
