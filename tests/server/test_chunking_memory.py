"""A BDAT chunk is never held whole: big chunks, taken or refused, in a real server process."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.helpers import RawClient, ServerProcess, maildir_messages, wait_for
from tests.server.test_flow_control import MEMORY_SLACK_KIB, resident_kib

CONFIG = """
hostname = "mx.example.test"
data_dir = "data"
[smtp]
listen = ["127.0.0.1:0"]
max_message_size = 67108864
[domains]
local = ["example.test"]
[mailboxes]
"alice@example.test" = {}
"""

CHUNK = 48 * 1024 * 1024  # three times the slack: held whole, it would show
PIECE = b"y" * 998 + b"\r\n"


def send_octets(sock: socket.socket, total: int) -> None:
    block = PIECE * (65536 // len(PIECE))
    sent = 0
    while sent < total:
        part = block[: total - sent]
        sock.sendall(part)
        sent += len(part)


def test_big_chunks_taken_or_refused_cost_no_memory(tmp_path: Path) -> None:
    config = tmp_path / "mailwright.toml"
    config.write_text(CONFIG)
    server = ServerProcess(config)
    try:
        client = RawClient(server.host, server.port, timeout=60)
        client.read_reply()
        client.send(b"EHLO c.example\r\n")
        client.read_reply()
        before = resident_kib(server.proc.pid)
        # Refused (no MAIL yet): read and dropped as it comes.
        client.send(b"BDAT %d\r\n" % CHUNK)
        send_octets(client.sock, CHUNK)
        assert client.read_reply().startswith("503 5.5.1")
        # Taken: streamed to the spool as it comes.
        client.send(b"MAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.test>\r\n")
        assert client.replies(2) == ["250 2.1.0 Ok", "250 2.1.5 Ok"]
        client.send(b"BDAT %d LAST\r\n" % CHUNK)
        send_octets(client.sock, CHUNK)
        assert client.read_reply().startswith("250 2.0.0 Ok: queued as ")
        grown = resident_kib(server.proc.pid) - before
        assert grown < MEMORY_SLACK_KIB, f"server grew by {grown} KiB"
        client.close()
        data = config.parent / "data"
        (message,) = wait_for(lambda: maildir_messages(data, "alice@example.test"), timeout=60)
        assert len(message) > CHUNK and message.endswith(b"y" * 100)
    finally:
        server.kill()
