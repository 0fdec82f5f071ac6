"""A client that pipelines commands and never reads our replies, against a real server process.

The server must stop handling its input once the replies it has not sent reach
the transport's high-water mark: its memory stays where it was, other clients
are served, and the idle timeout ends the session (RFC 5321 4.5.3.2).
"""

from __future__ import annotations

import smtplib
import socket
from pathlib import Path

from tests.helpers import ServerProcess, wait_for

CONFIG = """
hostname = "mx.example.test"
data_dir = "data"
[smtp]
listen = ["127.0.0.1:0"]
idle_timeout = 8
max_errors = 1000000
[domains]
local = ["example.test"]
"""

FLOOD_LIMIT = 16 * 1024 * 1024  # octets the client offers at most before the test gives up
MEMORY_SLACK_KIB = 16 * 1024  # the two bounded buffers and allocator noise, well below a flood


def resident_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def flood_until_blocked(sock: socket.socket, line: bytes) -> int:
    """Send pipelined ``line`` without reading; the octets sent when the server stopped reading.

    The send blocks only when the server's socket buffers are full, that is
    when the server stopped reading: without flow control it reads (and
    answers into memory) as fast as we send, until FLOOD_LIMIT.
    """
    chunk = line * (65536 // len(line))
    sent = 0
    sock.settimeout(3)
    try:
        while sent < FLOOD_LIMIT:
            sock.sendall(chunk)
            sent += len(chunk)
    except TimeoutError:
        return sent
    raise AssertionError(f"the server read all {sent} octets without our reading a reply")


def test_client_that_never_reads_replies_cannot_grow_server_memory(tmp_path: Path) -> None:
    config = tmp_path / "mailwright.toml"
    config.write_text(CONFIG)
    server = ServerProcess(config)
    try:
        with smtplib.SMTP(server.host, server.port, timeout=10) as warm:
            assert warm.ehlo()[0] == 250  # the code paths of a session are loaded
        before = resident_kib(server.proc.pid)
        attacker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        attacker.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        attacker.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        attacker.connect((server.host, server.port))
        # HELP: 6 octets in, about 200 out, the worst ratio the server has.
        flood_until_blocked(attacker, b"HELP\r\n")
        grown = resident_kib(server.proc.pid) - before
        assert grown < MEMORY_SLACK_KIB, f"server grew by {grown} KiB"
        with smtplib.SMTP(server.host, server.port, timeout=10) as other:
            assert other.noop()[0] == 250  # the event loop is not held by the flood
        # The session that reads nothing ends at the idle timeout, not never.
        wait_for(lambda: 'result="timeout (write)"' in server.log(), timeout=60)
        attacker.close()
    finally:
        server.kill()
