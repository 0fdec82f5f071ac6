"""Running ``mailwright send`` and ``probe`` in tests, and the peers they talk to.

Most tests call the tools' real entry point (argument parsing included) in
this process and read what it printed; a process start costs more than a
second on a busy machine, so only the tests about the process itself (exit
status seen by a shell, standard input) start ``python -m mailwright``.
Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from mailwright.cli import main
from tests.sink import SinkServer

#: Every step of a test run may take this long; a hang fails fast instead of at 30 s.
STEP_TIMEOUT = "5"


@dataclass(frozen=True)
class ToolRun:
    status: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


def _argv(args: tuple[str, ...]) -> list[str]:
    """Defaults a test would otherwise repeat: English, a fixed EHLO name, a short timeout."""
    argv = list(args)
    if "--lang" not in argv:
        argv += ["--lang", "en"]
    if "--helo" not in argv:
        argv += ["--helo", "client.test"]
    if "--timeout" not in argv:
        argv += ["--timeout", STEP_TIMEOUT]
    return argv


@pytest.fixture
def tool(capsys: pytest.CaptureFixture[str]) -> Callable[..., ToolRun]:
    """``tool("send", "--server", ...)``: the CLI entry point, in this process."""

    def run(*args: str) -> ToolRun:
        try:
            status = main(_argv(args))
        except SystemExit as exc:  # argparse's usage errors
            status = int(exc.code or 0)
        captured = capsys.readouterr()
        return ToolRun(status, captured.out, captured.err)

    return run


@pytest.fixture
def tool_process() -> Callable[..., ToolRun]:
    """``tool_process("send", ..., stdin=b"...")``: ``python -m mailwright`` as a process."""

    def run(*args: str, stdin: bytes = b"") -> ToolRun:
        done = subprocess.run(
            [sys.executable, "-m", "mailwright", *_argv(args)],
            input=stdin,
            capture_output=True,
            timeout=60,
            check=False,
        )
        return ToolRun(done.returncode, done.stdout.decode("utf-8"), done.stderr.decode("utf-8"))

    return run


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def sink_certificate(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("sink.test", "127.0.0.1")


@pytest.fixture
def tls_sink(sink_certificate: trustme.LeafCert) -> Iterator[SinkServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sink_certificate.configure_cert(context)
    server = SinkServer(tls=context)
    yield server
    server.stop()


@pytest.fixture
def cafile(ca: trustme.CA, tmp_path: Path) -> str:
    """The test CA as a PEM file, for ``--cafile``."""
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def address(host: str, port: int) -> str:
    return f"{host}:{port}"
