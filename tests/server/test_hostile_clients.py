"""Clients that talk out of turn or too slowly, against a real server on loopback."""

from __future__ import annotations

import socket
import time

from tests.helpers import RawClient, RunningServer, maildir_messages, wait_for

HOSTILE = """
hostname = "mx.example.test"
data_dir = "data"
[smtp]
listen = ["127.0.0.1:0"]
greet_delay = 0.5
idle_timeout = 5
command_timeout = 1
data_timeout = 1.5
[domains]
local = ["example.test"]
[mailboxes]
"alice@example.test" = {}
"""


def test_early_talker_gets_554_and_is_closed(server_factory) -> None:
    server: RunningServer = server_factory(base=HOSTILE)
    sock = socket.create_connection((server.host, server.port), timeout=10)
    sock.sendall(b"EHLO eager.example\r\nMAIL FROM:<spam@x.test>\r\n")
    client = RawClient.__new__(RawClient)
    client.sock, client.buf = sock, b""
    assert client.read_until_closed() == b"554 5.5.0 Error: SMTP protocol synchronization\r\n"
    sock.close()


def test_patient_client_is_greeted_after_the_delay(server_factory) -> None:
    server: RunningServer = server_factory(base=HOSTILE)
    client = RawClient(server.host, server.port)
    assert client.read_reply() == "220 mx.example.test ESMTP mailwright"
    client.close()


def test_message_content_before_354_is_refused_and_nothing_queued(server_factory) -> None:
    server: RunningServer = server_factory(base=HOSTILE)
    client = RawClient(server.host, server.port)
    client.read_reply()
    client.send(
        b"EHLO c\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
        b"Subject: eager\r\n\r\nbody\r\n.\r\n"
    )
    data = client.read_until_closed().decode()
    assert data.endswith("554 5.5.0 Error: SMTP protocol synchronization\r\n")
    assert "354" not in data
    client.close()
    wait_for(lambda: len(server.app.listener.sessions) == 0)  # the session has ended
    assert server.call(lambda: server.app.store.list()) == []
    assert maildir_messages(server.data_dir, "alice@example.test") == []


def test_commands_after_quit_are_a_sync_error(server_factory) -> None:
    server: RunningServer = server_factory(base=HOSTILE)
    client = RawClient(server.host, server.port)
    client.read_reply()
    client.send(b"QUIT\r\nNOOP\r\n")
    assert client.read_until_closed() == b"554 5.5.0 Error: SMTP protocol synchronization\r\n"
    client.close()


def trickle(client: RawClient, pieces: list[bytes], interval: float) -> int:
    """Send pieces one by one until the server says something; how many went out."""
    client.sock.setblocking(False)
    sent = 0
    try:
        for piece in pieces:
            try:
                if client.sock.recv(1, socket.MSG_PEEK):
                    break
            except BlockingIOError:
                pass
            client.sock.sendall(piece)
            sent += 1
            time.sleep(interval)
    except OSError:
        pass  # the server closed on us
    finally:
        client.sock.setblocking(True)
        client.sock.settimeout(10)
    return sent


def test_one_byte_at_a_time_cannot_hold_a_command_open(server_factory) -> None:
    server: RunningServer = server_factory(base=HOSTILE)
    client = RawClient(server.host, server.port)
    client.read_reply()
    line = [bytes([b]) for b in b"NOOP " + b"x" * 95]  # 100 bytes, 10 s at 0.1 s each
    sent = trickle(client, line, 0.1)
    # each byte came well within idle_timeout (5 s): only command_timeout (1 s) could stop it
    assert sent < len(line)
    assert client.read_until_closed() == b"421 4.4.2 Timeout exceeded; closing connection\r\n"
    client.close()


def test_slow_body_cannot_hold_data_open(server_factory) -> None:
    server: RunningServer = server_factory(base=HOSTILE)
    client = RawClient(server.host, server.port)
    client.read_reply()
    client.send(b"EHLO c\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    assert client.replies(4)[-1].startswith("354")
    lines = [b"slow line\r\n"] * 100  # 10 s at 0.1 s each, never silent for long
    sent = trickle(client, lines, 0.1)
    assert sent < len(lines)  # data_timeout (1.5 s for the whole DATA phase) ended it
    assert client.read_until_closed().endswith(b"421 4.4.2 Timeout exceeded; closing connection\r\n")
    client.close()
    assert server.call(lambda: server.app.store.list()) == []


def test_guessing_recipients_is_cut_off_after_max_refused_recipients(server_factory) -> None:
    server: RunningServer = server_factory(base=HOSTILE)
    client = RawClient(server.host, server.port)
    client.read_reply()
    # 500 pipelined guesses, as a directory-harvesting client sends them
    client.send(
        b"EHLO c\r\nMAIL FROM:<a@remote.test>\r\n"
        + b"".join(b"RCPT TO:<unknown%d@example.test>\r\n" % i for i in range(500))
    )
    answers = client.read_until_closed().decode().split("\r\n")
    refused = [a for a in answers if a.startswith("550 5.1.1")]
    assert len(refused) == 21  # the default max_refused_recipients is 20: the 21st closes
    assert answers[-2] == "421 4.7.0 Too many refused recipients; closing connection"
    client.close()
