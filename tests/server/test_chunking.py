"""CHUNKING and BINARYMIME (RFC 3030) against a real server over raw sockets.

The cases follow go-smtp's server tests (chunking, reset, closed in the middle,
early error, early error during a chunk, message too long, BINARYMIME), with
mailwright's own replies and storage behind them.
"""

from __future__ import annotations

import re

import pytest

from tests.helpers import RawClient, RunningServer, maildir_messages, wait_for

CHUNKING = """
hostname = "mx.example.test"
data_dir = "data"
[smtp]
listen = ["127.0.0.1:0"]
max_message_size = 50
data_timeout = 1.5
max_received_headers = 2
[domains]
local = ["example.test"]
[mailboxes]
"alice@example.test" = {}
"""

ENVELOPE = b"EHLO c.example\r\nMAIL FROM:<root@remote.test>\r\nRCPT TO:<alice@example.test>\r\n"


@pytest.fixture
def chunking_server(server_factory) -> RunningServer:
    server: RunningServer = server_factory(base=CHUNKING)
    return server


def open_transaction(server: RunningServer, envelope: bytes = ENVELOPE) -> RawClient:
    """Greeted, EHLO, MAIL and RCPT sent and all answered positively."""
    client = RawClient(server.host, server.port)
    assert client.read_reply() == "220 mx.example.test ESMTP mailwright"
    client.send(envelope)
    ehlo, mail, rcpt = client.replies(3)
    assert "250-CHUNKING" in ehlo and "250-BINARYMIME" in ehlo
    assert (mail, rcpt) == ("250 2.1.0 Ok", "250 2.1.5 Ok")
    return client


#: Our Received: header (the first one), the last of the lines put on top of the message.
OUR_TRACE = re.compile(rb"Received: from [^\r]*\r\n(?:\t[^\r]*\r\n)+")


def stored(server: RunningServer) -> list[bytes]:
    """The messages in alice's Maildir as the client sent them (after our trace header)."""
    messages = maildir_messages(server.data_dir, "alice@example.test")
    return [OUR_TRACE.split(m, maxsplit=1)[1] for m in messages]


def bdat(data: bytes, *, last: bool = False) -> bytes:
    """One BDAT command with its chunk."""
    return b"BDAT %d%s\r\n%s" % (len(data), b" LAST" if last else b"", data)


def send_marker(server: RunningServer) -> None:
    """A message sent after the one under test: once it is in the Maildir, whatever the
    earlier transaction could have stored would be there too (the queue is in order)."""
    client = open_transaction(server)
    client.send(b"BDAT 8 LAST\r\nmarker\r\n")
    assert client.read_reply().startswith("250 2.0.0 Ok: queued as ")
    client.close()
    wait_for(lambda: any(m.endswith(b"marker\r\n") for m in stored(server)))


def test_chunks_make_one_message_answered_per_chunk(chunking_server: RunningServer) -> None:
    client = open_transaction(chunking_server)
    client.send(bdat(b"Subject: chunks\r\n\r\n"))
    assert client.read_reply() == "250 2.0.0 19 octets received"
    client.send(b"BDAT 8\r\nHey <3\r\n")
    assert client.read_reply() == "250 2.0.0 8 octets received"
    client.send(b"BDAT 8 LAST\r\nHey :3\r\n")
    assert client.read_reply().startswith("250 2.0.0 Ok: queued as ")
    client.close()
    messages = wait_for(lambda: maildir_messages(chunking_server.data_dir, "alice@example.test"))
    assert isinstance(messages, list) and len(messages) == 1
    # The same trace header as DATA gives, then the chunks as they were sent.
    assert b"by mx.example.test (mailwright) with ESMTP" in messages[0]
    assert messages[0].endswith(b"\r\nSubject: chunks\r\n\r\nHey <3\r\nHey :3\r\n")


def test_pipelined_transaction_in_one_write(chunking_server: RunningServer) -> None:
    """Chunks that look like commands and the end-of-data marker are only octets."""
    client = RawClient(chunking_server.host, chunking_server.port)
    client.read_reply()
    body = b"Subject: x\r\n\r\n.\r\nQUIT\r\n"
    client.send(ENVELOPE + bdat(body[:7]) + bdat(body[7:], last=True) + b"NOOP\r\n")
    replies = client.replies(6)
    assert replies[3:5] == ["250 2.0.0 7 octets received", replies[4]]
    assert replies[4].startswith("250 2.0.0 Ok: queued as ")
    assert replies[5] == "250 2.0.0 Ok"
    client.close()
    assert wait_for(lambda: stored(chunking_server)) == [body]


def test_bdat_0_last_ends_a_message_sent_in_earlier_chunks(chunking_server: RunningServer) -> None:
    client = open_transaction(chunking_server)
    client.send(bdat(b"Subject: z\r\n\r\n") + b"BDAT 0 LAST\r\n")
    assert client.read_reply() == "250 2.0.0 14 octets received"
    assert client.read_reply().startswith("250 2.0.0 Ok: queued as ")
    client.close()
    assert wait_for(lambda: stored(chunking_server)) == [b"Subject: z\r\n\r\n"]


def test_rset_discards_the_chunks_so_far(chunking_server: RunningServer) -> None:
    client = open_transaction(chunking_server)
    client.send(b"BDAT 8\r\nHey <3\r\nRSET\r\n")
    assert client.replies(2) == ["250 2.0.0 8 octets received", "250 2.0.0 Ok: transaction cleared"]
    # The transaction is gone: a LAST chunk now has no MAIL to belong to.
    client.send(b"BDAT 8 LAST\r\nHey :3\r\nNOOP\r\n")
    assert client.replies(2) == [
        "503 5.5.1 Bad sequence of commands: send MAIL FROM first",
        "250 2.0.0 Ok",
    ]
    client.close()
    send_marker(chunking_server)
    assert stored(chunking_server) == [b"marker\r\n"]


def test_connection_closed_in_the_middle_of_a_chunk_queues_nothing(
    chunking_server: RunningServer,
) -> None:
    client = open_transaction(chunking_server)
    client.send(b"BDAT 8 LAST\r\nHey <")
    client.close()
    wait_for(lambda: len(chunking_server.app.listener.sessions) == 0)
    send_marker(chunking_server)
    assert stored(chunking_server) == [b"marker\r\n"]


def test_early_errors_still_read_the_chunk(chunking_server: RunningServer) -> None:
    """BDAT before MAIL, before RCPT, and with every recipient refused: each refused
    chunk's octets are read and dropped (they hold command lines here, never run), so
    the next command is answered as itself."""
    client = RawClient(chunking_server.host, chunking_server.port)
    client.read_reply()
    client.send(b"EHLO c.example\r\n")
    client.read_reply()
    client.send(b"BDAT 6\r\nRSET\r\nNOOP\r\n")
    assert client.replies(2) == [
        "503 5.5.1 Bad sequence of commands: send MAIL FROM first",
        "250 2.0.0 Ok",
    ]
    client.send(b"MAIL FROM:<root@remote.test>\r\nBDAT 6\r\nQUIT\r\nNOOP\r\n")
    assert client.replies(3) == [
        "250 2.1.0 Ok",
        "503 5.5.1 Bad sequence of commands: send RCPT TO first",
        "250 2.0.0 Ok",
    ]
    client.send(b"RCPT TO:<nobody@example.test>\r\nBDAT 6 LAST\r\nQUIT\r\nNOOP\r\n")
    rcpt, bdat, noop = client.replies(3)
    assert rcpt.startswith("550 5.1.1")
    assert (bdat, noop) == ("554 5.5.1 No valid recipients", "250 2.0.0 Ok")
    client.close()


def test_bad_chunk_size_gets_501_and_ends_the_transaction(chunking_server: RunningServer) -> None:
    """RFC 3030 2: after a failed BDAT the chunks pipelined behind it are read and dropped,
    so a LAST among them stores no message with a chunk missing."""
    client = open_transaction(chunking_server)
    client.send(b"BDAT 2\r\nokBDAT ten\r\nBDAT 3 NOTLAST\r\nabcBDAT 1 LAST\r\n!NOOP\r\n")
    assert client.replies(5) == [
        "250 2.0.0 2 octets received",
        "501 5.5.4 Syntax error: send BDAT <size in octets> [LAST]",
        "503 5.5.1 Bad sequence of commands: send MAIL FROM first",  # its 3 octets dropped
        "503 5.5.1 Bad sequence of commands: send MAIL FROM first",
        "250 2.0.0 Ok",
    ]
    client.send(ENVELOPE[16:] + b"BDAT 6 LAST\r\nnext\r\n")
    assert client.replies(3)[-1].startswith("250 2.0.0 Ok: queued as ")
    client.close()
    assert wait_for(lambda: stored(chunking_server)) == [b"next\r\n"]


def test_data_after_bdat_is_503(chunking_server: RunningServer) -> None:
    client = open_transaction(chunking_server)
    client.send(b"BDAT 3\r\nab\nDATA\r\n")
    assert client.replies(2) == [
        "250 2.0.0 3 octets received",
        "503 5.5.1 Bad sequence of commands: DATA after BDAT; end the message with BDAT <size> LAST",
    ]
    client.send(b"RCPT TO:<alice@example.test>\r\nBDAT 0 LAST\r\n")
    assert client.read_reply() == (
        "503 5.5.1 Bad sequence of commands: RCPT after BDAT; send RSET to start over"
    )
    assert client.read_reply().startswith("250 2.0.0 Ok: queued as ")
    client.close()
    assert wait_for(lambda: stored(chunking_server)) == [b"ab\n"]


def test_message_too_long_over_the_sum_of_chunks(chunking_server: RunningServer) -> None:
    """max_message_size is 50: 30 octets pass, 30 more do not; the rest is read and dropped."""
    client = open_transaction(chunking_server)
    client.send(b"BDAT 30\r\n" + b"a" * 28 + b"\r\n")
    assert client.read_reply() == "250 2.0.0 30 octets received"
    client.send(b"BDAT 30\r\n" + b"b" * 28 + b"\r\nBDAT 10 LAST\r\nNOOP\r\nxxxxNOOP\r\n")
    assert client.replies(3) == [
        "552 5.3.4 Message size exceeds fixed maximum message size of 50 octets",
        "503 5.5.1 Bad sequence of commands: send MAIL FROM first",
        "250 2.0.0 Ok",
    ]
    client.close()
    send_marker(chunking_server)
    assert stored(chunking_server) == [b"marker\r\n"]


def test_binarymime_message_is_stored_octet_for_octet(chunking_server: RunningServer) -> None:
    body = b"Subject: bin\r\n\r\n\x00\xff\r\n.\r\n\n\r" + bytes(range(8))
    client = open_transaction(
        chunking_server,
        ENVELOPE.replace(b"<root@remote.test>", b"<root@remote.test> BODY=BINARYMIME"),
    )
    client.send(b"DATA\r\n")
    assert client.read_reply() == (
        "503 5.5.1 Bad sequence of commands: BODY=BINARYMIME needs BDAT, not DATA"
    )
    client.send(bdat(body, last=True))
    assert client.read_reply().startswith("250 2.0.0 Ok: queued as ")
    client.close()
    assert wait_for(lambda: stored(chunking_server)) == [body]


def test_body_binarymime_needs_chunking_offered(chunking_server: RunningServer) -> None:
    client = open_transaction(chunking_server)
    client.send(b"RSET\r\nMAIL FROM:<a@remote.test> BODY=BINARY\r\n")
    assert client.replies(2)[1] == (
        "501 5.5.4 Syntax error: BODY must be 7BIT, 8BITMIME or BINARYMIME"
    )
    client.close()


def test_chunks_go_through_the_same_checks_as_data(chunking_server: RunningServer) -> None:
    """The loop check (max_received_headers = 2) refuses a chunked message as it does DATA."""
    client = open_transaction(chunking_server)
    head = b"Received: a\r\nReceived: b\r\nReceived: c\r\n\r\n"
    client.send(bdat(head, last=True))
    assert client.read_reply() == "554 5.4.6 Too many Received: headers; mail loop detected"
    client.close()
    send_marker(chunking_server)
    assert stored(chunking_server) == [b"marker\r\n"]


def test_short_chunk_is_cut_off_at_data_timeout(chunking_server: RunningServer) -> None:
    """A chunk announced and never sent in full: 421 at data_timeout, nothing queued."""
    client = open_transaction(chunking_server)
    client.send(b"BDAT 20 LAST\r\nonly ten..")
    assert client.read_until_closed() == b"421 4.4.2 Timeout exceeded; closing connection\r\n"
    client.close()
    send_marker(chunking_server)
    assert stored(chunking_server) == [b"marker\r\n"]
