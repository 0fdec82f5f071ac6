"""``[smtp] processes = N``: a supervisor, a server process and acceptors on one port.

Real processes and real sockets: the kernel spreads connections over the
processes (SO_REUSEPORT), every message reaches the Maildir whichever process
took it, and signals, crashes and kill -9 leave no process behind.
"""

from __future__ import annotations

import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ServerProcess, maildir_messages, wait_for

CONFIG = """
hostname = "mx.example.test"
data_dir = "data"
[smtp]
listen = ["127.0.0.1:0"]
processes = 2
[domains]
local = ["example.test"]
auto_mailbox = ["example.test"]
"""

pytestmark = pytest.mark.skipif(
    not Path("/proc/net/tcp").exists(), reason="needs Linux /proc to see which process holds what"
)


def children(pid: int) -> set[int]:
    """The live child processes of ``pid`` (from /proc)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def established_inodes(port: int) -> set[str]:
    """Socket inodes of established connections whose local port is ``port``."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        if local_port == port and fields[3] == "01":  # TCP_ESTABLISHED
            inodes.add(fields[9])
    return inodes


def sockets_of(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


@pytest.fixture(autouse=True)
def _no_process_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """Whatever a test does or fails to do, no server process outlives it."""
    yield
    for server in STARTED:
        if server.proc.poll() is None:
            server.kill()  # the children get SIGTERM from the kernel (PDEATHSIG)
    STARTED.clear()


STARTED: list[ServerProcess] = []


def start(tmp_path: Path, text: str = CONFIG) -> ServerProcess:
    config = tmp_path / "mailwright.toml"
    config.write_text(text)
    server = ServerProcess(config)
    STARTED.append(server)
    # The supervisor logs event=processes once the acceptors were started.
    wait_for(lambda: "event=processes count=2" in server.log())
    wait_for(lambda: server.log().count("event=started") == 3)  # the server, 2 acceptors
    return server


def pid_of(server: ServerProcess, role: str) -> int:
    """The pid a process of ``role`` logged at start (the newest one)."""
    found = re.findall(rf"event=started role={role} pid=(\d+)", server.log())
    return int(found[-1])


def send(server: ServerProcess, number: int) -> None:
    with smtplib.SMTP(server.host, server.port, timeout=30) as client:
        client.sendmail(
            "a@example.test",
            ["u@example.test"],
            f"Subject: m{number}\r\n\r\nmessage {number}\r\n",
        )


def test_connections_are_spread_and_every_message_is_delivered(tmp_path: Path) -> None:
    server = start(tmp_path)
    try:
        workers = children(server.proc.pid)
        assert len(workers) == 3
        receiving = workers - {pid_of(server, "server")}  # the server process only delivers
        # Hold 16 connections open at once, then see which process has each.
        held = [socket.create_connection((server.host, server.port), timeout=10) for _ in range(16)]
        for conn in held:
            assert conn.recv(1024).startswith(b"220")
        connections = established_inodes(server.port)
        per_process = {pid: len(sockets_of(pid) & connections) for pid in receiving}
        assert sum(per_process.values()) == 16
        assert all(count > 0 for count in per_process.values()), per_process
        for conn in held:
            conn.close()

        threads = [threading.Thread(target=send, args=(server, n)) for n in range(30)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        messages = wait_for(
            lambda: len(maildir_messages(tmp_path / "data", "u@example.test")) == 30
        )
        assert messages
        bodies = maildir_messages(tmp_path / "data", "u@example.test")
        assert sorted(b.split(b"message ")[1].strip() for b in bodies) == sorted(
            str(n).encode() for n in range(30)
        )
    finally:
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait() == 0
    assert not any(alive(pid) for pid in workers)


def test_a_killed_acceptor_is_started_again(tmp_path: Path) -> None:
    server = start(tmp_path)
    try:
        first = children(server.proc.pid)
        acceptor = pid_of(server, "acceptor")
        os.kill(acceptor, signal.SIGKILL)
        replacement = wait_for(lambda: (children(server.proc.pid) - first) or None)
        assert len(replacement) == 1 and acceptor not in children(server.proc.pid)
        assert re.search(rf"event=process-exited index=[12] pid={acceptor} ", server.log())
        wait_for(lambda: server.log().count("event=started") == 4)
        for n in range(10):
            send(server, n)
        wait_for(lambda: len(maildir_messages(tmp_path / "data", "u@example.test")) == 10)
    finally:
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait() == 0


def test_when_the_server_process_dies_everything_stops_with_exit_1(tmp_path: Path) -> None:
    server = start(tmp_path)
    workers = children(server.proc.pid)
    os.kill(pid_of(server, "server"), signal.SIGKILL)
    assert server.wait() == 1
    wait_for(lambda: not any(alive(pid) for pid in workers))


def test_children_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    server = start(tmp_path)
    workers = children(server.proc.pid)
    server.kill()  # SIGKILL: the supervisor cannot pass anything on
    wait_for(lambda: not any(alive(pid) for pid in workers))
    # The port is free again and the queue can be opened by a new server.
    again = ServerProcess(tmp_path / "mailwright.toml")
    STARTED.append(again)
    try:
        send(again, 1)
        wait_for(lambda: maildir_messages(tmp_path / "data", "u@example.test"))
    finally:
        again.proc.send_signal(signal.SIGTERM)
        assert again.wait() == 0


def serve_once(config: Path) -> subprocess.CompletedProcess[str]:
    """``mailwright serve`` expected to refuse to start: its exit code and output."""
    return subprocess.run(
        [sys.executable, "-m", "mailwright", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("processes", [1, 2])
def test_a_second_server_on_the_same_queue_exits_1_with_one_line(
    tmp_path: Path, processes: int
) -> None:
    first = start(tmp_path)
    try:
        config = tmp_path / "second.toml"
        config.write_text(CONFIG.replace("processes = 2", f"processes = {processes}"))
        result = serve_once(config)
        assert result.returncode == 1
        errors = [line for line in result.stderr.splitlines() if "cannot start" in line]
        assert len(errors) == 1 and "another mailwright server" in errors[0]
        assert "Traceback" not in result.stderr
    finally:
        first.proc.send_signal(signal.SIGTERM)
        assert first.wait() == 0


def test_a_second_server_cannot_share_the_port_of_a_running_one(tmp_path: Path) -> None:
    """SO_REUSEPORT must not let a second instance take half the connections."""
    first = start(tmp_path)
    try:
        other = tmp_path / "other"
        other.mkdir()
        config = other / "mailwright.toml"
        config.write_text(CONFIG.replace("127.0.0.1:0", f"127.0.0.1:{first.port}"))
        result = serve_once(config)
        assert result.returncode == 1
        assert "cannot start" in result.stderr and "in use" in result.stderr
        assert not (other / "data").exists()  # it stopped before touching a queue
    finally:
        first.proc.send_signal(signal.SIGTERM)
        assert first.wait() == 0
