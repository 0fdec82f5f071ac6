"""Shared test helpers: a real mailwright server (in a thread or as a process), raw and
waiting helpers.  Fixtures live in conftest.py; everything a test imports lives here."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mailwright.app import App
from mailwright.config import Config, parse_config

T = TypeVar("T")

BASE_CONFIG = """
hostname = "mx.example.test"
data_dir = "data"
[smtp]
listen = ["127.0.0.1:0"]
[domains]
local = ["example.test"]
[mailboxes]
"alice@example.test" = {}
"dave@example.test" = {}
[aliases]
"team@example.test" = ["alice@example.test", "dave@example.test"]
[forward]
"bob@example.test" = "bob@elsewhere.test"
[relocated]
"carol@example.test" = "carol@newcorp.test"
"""


class RunningServer:
    """An App started on its own event loop in a background thread."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.app: App | None = None
        ready = threading.Event()
        self._error: BaseException | None = None

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                self.app = App(config)
                self.loop.run_until_complete(self.app.start())
            except BaseException as exc:  # surface start-up failures to the test
                self._error = exc
                ready.set()
                return
            ready.set()
            self.loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(30)
        if self._error is not None:
            raise self._error
        assert self.app is not None
        self.host, self.port = self.app.addresses[0]

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir

    def call(self, coro_factory: Callable[[], object], timeout: float = 30) -> object:
        fut = asyncio.run_coroutine_threadsafe(coro_factory(), self.loop)  # type: ignore[arg-type]
        return fut.result(timeout)

    def stop(self, grace: float = 5.0) -> None:
        if self.app is not None and not self.loop.is_closed():
            app = self.app
            self.call(lambda: app.stop(grace), timeout=grace + 30)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(30)
            self.loop.close()


def make_config(tmp_path: Path, extra: str = "", base: str = BASE_CONFIG) -> Config:
    return parse_config(base + "\n" + extra, source="test", base_dir=tmp_path)


def wait_for(
    predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.02
) -> object:
    """Poll until ``predicate()`` is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def maildir_messages(data_dir: Path, address: str) -> list[bytes]:
    local, domain = address.lower().split("@")
    new = data_dir / "mailboxes" / domain / local / "new"
    if not new.is_dir():
        return []
    # In the order written: Maildir names do not sort by time (their microseconds have no
    # leading zeros), so two messages of one second may sort either way by name.
    files = sorted(new.iterdir(), key=lambda p: (p.stat().st_mtime_ns, p.name))
    return [p.read_bytes() for p in files]


class RawClient:
    """A raw socket client for pipelining and broken clients: send bytes, read replies."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_reply(self) -> str:
        """One complete (possibly multiline) reply, as text without the final CRLF."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"closed; got so far: {self.buf!r} {lines}")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            text = line.decode()
            lines.append(text)
            if text[3:4] != "-":
                return "\r\n".join(lines)

    def replies(self, n: int) -> list[str]:
        return [self.read_reply() for _ in range(n)]

    def read_until_closed(self) -> bytes:
        data = self.buf
        while True:
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            data += chunk
        self.buf = b""
        return data

    def close(self) -> None:
        self.sock.close()


class ServerProcess:
    """``mailwright serve`` as a real process (for signals and kill -9)."""

    def __init__(self, config_path: Path, *, log_level: str = "info") -> None:
        import re
        import subprocess
        import sys

        self.config_path = config_path
        self.stderr_path = config_path.with_suffix(f".{time.monotonic_ns()}.log")
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mailwright",
                "serve",
                "--config",
                str(config_path),
                "--log-level",
                log_level,
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )
        pattern = re.compile(rb"event=listening address=([\d.]+):(\d+)")

        def listening() -> tuple[str, int] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.log()}")
            text = self.stderr_path.read_bytes()
            if b"event=started" not in text:  # every listener is up, delivery too
                return None
            m = pattern.search(text)
            return (m.group(1).decode(), int(m.group(2))) if m else None

        try:
            self.host, self.port = wait_for(listening, timeout=30)  # type: ignore[misc]
        except BaseException:
            self.kill()  # never leave a half-started server behind a failed test
            raise

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._stderr.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.wait()


def run(test: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run an async test body on a fresh event loop."""
    return asyncio.run(test())


@contextlib.contextmanager
def mounted_tmpfs(mount_point: Path, size: str | int) -> Iterator[Path]:
    """A real tmpfs of ``size`` at ``mount_point``: a file system that really fills up.

    Skips the test with a "needs ..." reason where mounting is not allowed (not
    root); under CI such a skip fails the run (conftest.py).
    """
    import subprocess

    mount_point.mkdir(exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"needs root and a tmpfs mount: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


class AdminClient:
    """The admin listener (``[http]``) over real HTTP: (status, decoded JSON or text)."""

    def __init__(self, host: str, port: int, token: str | None = None) -> None:
        self.base = f"http://{host}:{port}"
        self.token = token

    def request(
        self, method: str, path: str, *, token: str | None = None, timeout: float = 30
    ) -> tuple[int, Any]:
        import json
        import urllib.error
        import urllib.request

        req = urllib.request.Request(self.base + path, method=method)
        if (token or self.token) is not None:
            req.add_header("Authorization", f"Bearer {token or self.token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                status, body, kind = response.status, response.read(), response.headers
        except urllib.error.HTTPError as error:
            status, body, kind = error.code, error.read(), error.headers
        text = body.decode("utf-8")
        return status, json.loads(text) if "json" in kind.get("Content-Type", "") else text

    def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return self.request("POST", path, **kwargs)
