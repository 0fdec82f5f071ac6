"""SIGTERM against ``mailwright serve`` as a real process: sessions, bodies, delivery.

Real signals, real clients, a real sink as the next hop.  Nothing waits on a
pause: the order of things is read off the protocol (the idle session's 421 says
the shutdown has begun) and the server's log.
"""

from __future__ import annotations

import signal
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import RawClient, ServerProcess, maildir_messages, wait_for
from tests.sink import SinkServer

CONFIG = """
hostname = "mx.example.test"
data_dir = "data"
[smtp]
listen = ["127.0.0.1:0"]
{smtp}
[domains]
local = ["example.test"]
auto_mailbox = ["example.test"]
"""

SHUTTING_DOWN = b"421 4.3.2 Service shutting down; try again later\r\n"

STARTED: list[ServerProcess] = []


@pytest.fixture(autouse=True)
def _no_server_left() -> Iterator[None]:
    yield
    for server in STARTED:
        if server.proc.poll() is None:
            server.kill()
    STARTED.clear()


def start(tmp_path: Path, smtp: str = "", extra: str = "") -> ServerProcess:
    path = tmp_path / "mailwright.toml"
    path.write_text(CONFIG.format(smtp=smtp) + extra)
    server = ServerProcess(path)
    STARTED.append(server)
    return server


def stop(server: ServerProcess) -> None:
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait() == 0


def in_data(server: ServerProcess, subject: str) -> RawClient:
    """A session whose client has sent half a message body."""
    client = RawClient(server.host, server.port)
    assert client.read_reply().startswith("220")
    client.send(b"EHLO c\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\n")
    assert client.replies(4)[-1].startswith("354")
    client.send(f"Subject: {subject}\r\n\r\nfirst half\r\n".encode())
    return client


def idle(server: ServerProcess) -> RawClient:
    client = RawClient(server.host, server.port)
    assert client.read_reply().startswith("220")
    client.send(b"EHLO c.example\r\n")
    assert client.read_reply().startswith("250")
    return client


def test_sigterm_lets_a_body_being_received_finish_and_says_421_to_idle_sessions(
    tmp_path: Path,
) -> None:
    server = start(tmp_path)
    waiting = idle(server)
    busy = in_data(server, "in flight")
    server.proc.send_signal(signal.SIGTERM)
    assert waiting.read_until_closed() == SHUTTING_DOWN  # the shutdown has begun
    busy.send(b"second half\r\n.\r\n")
    assert busy.read_reply().startswith("250 2.0.0 Ok: queued as ")
    assert busy.read_until_closed() == SHUTTING_DOWN  # then it is closed too
    assert server.wait() == 0
    with pytest.raises(OSError):  # the listener is gone
        RawClient(server.host, server.port, timeout=2).read_reply()
    # The message acknowledged during the shutdown is on disk: delivered at the next start.
    server = start(tmp_path)
    bodies = wait_for(lambda: maildir_messages(tmp_path / "data", "u@example.test"))
    assert bodies[0].endswith(b"Subject: in flight\r\n\r\nfirst half\r\nsecond half\r\n")  # type: ignore[index]
    stop(server)


def test_a_body_unfinished_after_shutdown_timeout_gets_421_and_no_250(tmp_path: Path) -> None:
    server = start(tmp_path, smtp="shutdown_timeout = 0.5")
    busy = in_data(server, "cut")
    server.proc.send_signal(signal.SIGTERM)
    assert busy.read_until_closed() == SHUTTING_DOWN  # never a 250: the client keeps it
    assert server.wait() == 0
    assert "result=shutdown" in server.log()
    # Nothing of it was kept: a message sent after the restart arrives alone.
    server = start(tmp_path)
    with smtplib.SMTP(server.host, server.port, timeout=30) as client:
        client.sendmail("a@remote.test", ["u@example.test"], b"Subject: later\r\n\r\nbody\r\n")
    bodies = wait_for(lambda: maildir_messages(tmp_path / "data", "u@example.test"))
    assert len(bodies) == 1 and b"Subject: later" in bodies[0]  # type: ignore[arg-type,index]
    stop(server)


def test_sigterm_during_a_slow_delivery_loses_nothing(tmp_path: Path) -> None:
    """The attempt is cut after the end of its data: repeated after the restart."""
    sink = SinkServer()
    try:
        sink.end_of_data_delay = 120.0  # the next hop takes the body and never answers
        routes = (
            f'[routes]\n"remote.test" = "127.0.0.1:{sink.port}"\n'
            '[relay]\nnetworks = ["127.0.0.0/8"]\n'
        )
        server = start(tmp_path, smtp="shutdown_timeout = 0.5", extra=routes)
        with smtplib.SMTP(server.host, server.port, timeout=30) as client:
            client.sendmail("a@example.test", ["x@remote.test"], b"Subject: slow\r\n\r\nbody\r\n")
        sink.wait_for_messages(1, timeout=30)  # the body is there, its reply held back
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait() == 0
        assert "event=delivery-interrupted id=" in server.log()

        sink.end_of_data_delay = 0.0
        server = start(tmp_path, extra=routes)
        second = sink.wait_for_messages(2, timeout=30)[1]  # tried again, as SMTP allows
        assert second.body.endswith(b"Subject: slow\r\n\r\nbody\r\n")
        assert second.reply is not None and second.reply.code == 250
        stop(server)
    finally:
        sink.stop()
