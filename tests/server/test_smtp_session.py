"""The server against real clients on loopback: smtplib and raw sockets."""

from __future__ import annotations

import smtplib
import socket

import pytest

from tests.helpers import RawClient, RunningServer, maildir_messages, wait_for


def smtp(server: RunningServer) -> smtplib.SMTP:
    return smtplib.SMTP(server.host, server.port, local_hostname="client.example", timeout=10)


def greet(server: RunningServer) -> RawClient:
    client = RawClient(server.host, server.port)
    assert client.read_reply() == "220 mx.example.test ESMTP mailwright"
    return client


def test_greeting_and_ehlo_capabilities(server: RunningServer) -> None:
    with smtp(server) as s:
        code, _ = s.ehlo()
        assert code == 250
        for ext in ("pipelining", "size", "8bitmime", "smtputf8", "enhancedstatuscodes"):
            assert s.has_extn(ext)
        assert s.esmtp_features["size"] == str(26214400)


def test_message_to_mailbox_arrives_in_maildir_with_trace_headers(server: RunningServer) -> None:
    body = "Subject: hello\r\n\r\n.starts with a dot\r\n..two dots\r\nend\r\n"
    with smtp(server) as s:
        refused = s.sendmail("sender@remote.test", ["Alice@EXAMPLE.test"], body)
        assert refused == {}
    msgs = wait_for(lambda: maildir_messages(server.data_dir, "alice@example.test"))
    assert len(msgs) == 1
    raw = msgs[0]
    assert raw.startswith(
        b"Return-Path: <sender@remote.test>\r\nDelivered-To: alice@example.test\r\n"
    )
    assert (
        b"Received: from client.example ([127.0.0.1])\r\n\tby mx.example.test (mailwright) with ESMTP"
        in raw
    )
    assert raw.endswith(b"Subject: hello\r\n\r\n.starts with a dot\r\n..two dots\r\nend\r\n")
    tmp = server.data_dir / "mailboxes" / "example.test" / "alice" / "tmp"
    assert list(tmp.iterdir()) == []


def test_final_reply_names_queue_id(server: RunningServer) -> None:
    with smtp(server) as s:
        s.ehlo()
        s.mail("a@remote.test")
        s.rcpt("alice@example.test")
        code, text = s.data(b"Subject: x\r\n\r\nhi\r\n")
        assert code == 250
        assert text.decode().startswith("2.0.0 Ok: queued as ")


def test_alias_expands_to_each_mailbox_once(server: RunningServer) -> None:
    with smtp(server) as s:
        s.sendmail(
            "a@remote.test", ["team@example.test", "alice@example.test"], "Subject: t\r\n\r\nx\r\n"
        )
    # One message with both copies: once it has left the queue, every copy was made.
    wait_for(lambda: server.call(lambda: server.app.store.list()) == [])
    assert len(maildir_messages(server.data_dir, "dave@example.test")) == 1
    assert len(maildir_messages(server.data_dir, "alice@example.test")) == 1


def test_rcpt_routing_replies(server: RunningServer) -> None:
    with smtp(server) as s:
        s.ehlo()
        s.mail("a@remote.test")
        assert s.rcpt("alice@example.test") == (250, b"2.1.5 Ok")
        code, text = s.rcpt("bob@example.test")
        assert (code, text) == (251, b"2.1.5 User not local; will forward to <bob@elsewhere.test>")
        code, text = s.rcpt("carol@example.test")
        assert (code, text) == (551, b"5.1.6 User not local; please try <carol@newcorp.test>")
        code, text = s.rcpt("nobody@example.test")
        assert code == 550 and text.startswith(b"5.1.1 Mailbox unavailable")
        code, text = s.rcpt("PostMaster@Example.Test")
        assert code == 250
        code, text = s.rcpt("someone@elsewhere.test")
        assert (code, text) == (550, b"5.7.1 Relaying denied")


@pytest.mark.parametrize(
    "address",
    [
        "<user%elsewhere.test@example.test>",
        "<elsewhere.test!user@example.test>",
        "<@example.test:user@elsewhere.test>",
        '<"user@elsewhere.test"@example.test>',
        "<user@elsewhere.test.>",
        "<user@[127.0.0.1]>",
    ],
)
def test_address_tricks_never_relay(server: RunningServer, address: str) -> None:
    client = greet(server)
    client.send(
        b"EHLO c.example\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:" + address.encode() + b"\r\n"
    )
    replies = client.replies(3)
    assert replies[1] == "250 2.1.0 Ok"
    assert replies[2][:3] in ("550", "501", "553"), replies[2]
    client.close()


def test_forwarded_message_is_stored_durably(server: RunningServer) -> None:
    with smtp(server) as s:
        s.sendmail("a@remote.test", ["bob@example.test"], "Subject: fwd\r\n\r\nx\r\n")
    messages = server.call(lambda: server.app.store.list())
    targets = [r.target for m in messages for r in m.recipients]
    assert [(str(t.address), str(t.original), t.local) for t in targets] == [
        ("bob@elsewhere.test", "bob@example.test", False)
    ]


def test_sequence_errors_over_the_wire(server: RunningServer) -> None:
    client = greet(server)
    client.send(b"MAIL FROM:<a@remote.test>\r\n")
    assert client.read_reply() == "503 5.5.1 Bad sequence of commands: send EHLO or HELO first"
    client.send(b"HELO c.example\r\nRCPT TO:<alice@example.test>\r\n")
    assert client.replies(2)[1] == "503 5.5.1 Bad sequence of commands: send MAIL FROM first"
    client.send(b"MAIL FROM:<a@remote.test>\r\nDATA\r\n")
    assert client.replies(2)[1] == "503 5.5.1 Bad sequence of commands: send RCPT TO first"
    client.send(b"MAIL FROM:<a@remote.test>\r\n")
    assert client.read_reply() == (
        "503 5.5.1 Bad sequence of commands: nested MAIL command; send RSET to start over"
    )
    client.send(b"RCPT TO:<nobody@example.test>\r\nDATA\r\n")
    assert client.replies(2)[1] == "554 5.5.1 No valid recipients"
    client.send(b"QUIT\r\n")
    assert client.read_reply() == "221 2.0.0 Bye"
    client.close()


def test_pipelined_500_rcpts_get_500_replies_in_order(server_factory) -> None:
    server = server_factory()
    client = greet(server)
    rcpts = b"".join(b"RCPT TO:<alice@example.test>\r\n" for _ in range(500))
    client.send(b"EHLO c.example\r\nMAIL FROM:<a@remote.test>\r\n" + rcpts + b"RSET\r\nQUIT\r\n")
    replies = client.replies(1 + 1 + 500 + 2)
    assert replies[0].startswith("250-mx.example.test")
    assert replies[1] == "250 2.1.0 Ok"
    assert all(r == "250 2.1.5 Ok" for r in replies[2:102])
    assert all(r.startswith("452 4.5.3") for r in replies[102:502])
    assert replies[-2:] == ["250 2.0.0 Ok: transaction cleared", "221 2.0.0 Bye"]
    client.close()


def test_smuggling_over_the_wire_queues_nothing(server: RunningServer) -> None:
    client = greet(server)
    client.send(
        b"EHLO c.example\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
    )
    assert client.replies(4)[-1].startswith("354")
    client.send(
        b"Subject: legit\r\n\r\nhello\n.\nMAIL FROM:<admin@example.test>\r\n"
        b"RCPT TO:<dave@example.test>\r\nDATA\r\nSubject: forged\r\n\r\nx\r\n.\r\n"
    )
    reply = client.read_reply()
    assert reply.startswith("554 5.6.0 Message refused: bare CR or LF")
    client.send(b"NOOP\r\n")
    assert client.read_reply() == "250 2.0.0 Ok"
    client.close()
    # A message sent after the smuggling attempt is delivered after anything it queued.
    with smtp(server) as s:
        s.sendmail("a@remote.test", ["postmaster@example.test"], "Subject: after\r\n\r\nx\r\n")
    wait_for(lambda: maildir_messages(server.data_dir, "postmaster@example.test"))
    wait_for(lambda: server.call(lambda: server.app.store.list()) == [])
    assert maildir_messages(server.data_dir, "dave@example.test") == []
    assert maildir_messages(server.data_dir, "alice@example.test") == []
    assert server.call(lambda: server.app.store.list()) == []


def test_message_too_big_is_drained_and_session_goes_on(server_factory) -> None:
    server = server_factory("", base=BASE_WITH_LIMIT)
    with smtp(server) as s:
        s.ehlo()
        code, _ = s.mail("a@remote.test", ["SIZE=5000"])
        assert code == 552
        s.rset()
        s.mail("a@remote.test")
        s.rcpt("alice@example.test")
        code, text = s.data(b"Subject: big\r\n\r\n" + b"x" * 5000 + b"\r\n")
        assert code == 552 and text.startswith(b"5.3.4")
        assert s.noop()[0] == 250
        s.mail("a@remote.test")
        s.rcpt("alice@example.test")
        assert s.data(b"Subject: small\r\n\r\nok\r\n")[0] == 250


BASE_WITH_LIMIT = """
hostname = "mx.example.test"
data_dir = "data"
[smtp]
listen = ["127.0.0.1:0"]
max_message_size = 2000
max_errors = 3
idle_timeout = 1
[domains]
local = ["example.test"]
[mailboxes]
"alice@example.test" = {}
"""


def test_too_many_errors_closes_with_421(server_factory) -> None:
    server = server_factory("", base=BASE_WITH_LIMIT)
    client = greet(server)
    client.send(b"FOO\r\nBAR\r\nBAZ\r\nNOOP\r\n")
    data = client.read_until_closed().decode()
    assert data.endswith("421 4.7.0 Too many errors; closing connection\r\n")
    assert data.count("500 5.5.2") == 3
    client.close()


def test_idle_timeout_closes_with_421(server_factory) -> None:
    server = server_factory("", base=BASE_WITH_LIMIT)
    client = greet(server)
    data = client.read_until_closed()
    assert data == b"421 4.4.2 Timeout exceeded; closing connection\r\n"
    client.close()


def test_per_ip_connection_limit(server_factory) -> None:
    server = server_factory(base=BASE_CONN_LIMIT)
    first = greet(server)
    second = greet(server)
    third = RawClient(server.host, server.port)
    assert third.read_reply() == "421 4.7.0 Too many connections from your address; try again later"
    assert third.read_until_closed() == b""
    first.close()
    second.close()
    third.close()
    # once the others are gone, a new connection is welcome again
    wait_for(lambda: len(server.app.listener.sessions) == 0)
    fourth = greet(server)
    fourth.close()


BASE_CONN_LIMIT = """
hostname = "mx.example.test"
data_dir = "data"
[smtp]
listen = ["127.0.0.1:0"]
max_connections_per_ip = 2
[domains]
local = ["example.test"]
"""


def test_total_connection_limit(server_factory) -> None:
    server = server_factory(
        base=BASE_CONN_LIMIT.replace("max_connections_per_ip = 2", "max_connections = 1")
    )
    first = greet(server)
    second = RawClient(server.host, server.port)
    assert second.read_reply().startswith("421 4.7.0 Too many connections")
    first.close()
    second.close()


def test_client_that_closes_mid_data_leaves_nothing(server: RunningServer) -> None:
    client = greet(server)
    client.send(b"EHLO c\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    client.replies(4)
    client.send(b"Subject: cut\r\n\r\npartial")
    client.sock.shutdown(socket.SHUT_RDWR)
    client.close()
    wait_for(lambda: len(server.app.listener.sessions) == 0)  # the session has ended
    assert server.call(lambda: server.app.store.list()) == []
    assert maildir_messages(server.data_dir, "alice@example.test") == []


def test_8bit_and_utf8_addresses(server_factory) -> None:
    server = server_factory(base=BASE_UTF8)
    client = greet(server)
    client.send(
        "EHLO c\r\nMAIL FROM:<josé@remote.test> SMTPUTF8 BODY=8BITMIME\r\nRCPT TO:<ünï@example.test>\r\nDATA\r\n".encode()
    )
    replies = client.replies(4)
    assert replies[1:] == ["250 2.1.0 Ok", "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>"]
    client.send("Subject: héllo\r\n\r\nçà\r\n.\r\n".encode())
    assert client.read_reply().startswith("250 2.0.0")
    client.close()


BASE_UTF8 = """
hostname = "mx.example.test"
data_dir = "data"
[smtp]
listen = ["127.0.0.1:0"]
[domains]
local = ["example.test"]
[mailboxes]
"ünï@example.test" = {}
"""
