"""BDAT and BINARYMIME (RFC 3030) in the server core, fed bytes."""

from __future__ import annotations

import pytest

from mailwright.errors import LocalProtocolError
from mailwright.protocol import replies
from mailwright.protocol.events import (
    NEED_DATA,
    Bdat,
    BodyChunk,
    BodyRejected,
    ConnectionClosed,
    EndOfChunk,
    EndOfData,
    ProtocolViolation,
)
from mailwright.protocol.reply import Reply
from mailwright.protocol.server import ServerConnection
from mailwright.protocol.state import State
from tests.protocol.conftest import Driver, codes, make_driver

ENVELOPE = b"EHLO c.example\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n"
BDAT_SYNTAX = str(replies.BDAT_SYNTAX)


def in_transaction(**config: object) -> Driver:
    driver = make_driver(**config)
    out = codes(driver.feed(ENVELOPE))
    assert out[1:] == ["250 2.1.0 Ok", "250 2.1.5 Ok"], out
    return driver


def test_ehlo_offers_chunking_and_binarymime() -> None:
    driver = make_driver()
    out = driver.feed(b"EHLO c.example\r\n")
    assert b"250-CHUNKING\r\n250-BINARYMIME\r\n" in out


def test_without_chunking_bdat_is_not_implemented_and_binarymime_a_bad_body() -> None:
    driver = make_driver(chunking=False)
    assert b"CHUNKING" not in driver.feed(b"EHLO c.example\r\n")
    assert codes(driver.feed(b"MAIL FROM:<a@x.test> BODY=BINARYMIME\r\nBDAT 0 LAST\r\n")) == [
        "501 5.5.4 Syntax error: BODY must be 7BIT, 8BITMIME or BINARYMIME",
        "502 5.5.1 Command not implemented",
    ]


def test_chunk_events_then_one_reply_after_the_octets() -> None:
    driver = in_transaction()
    assert driver.feed(b"BDAT 11\r\nhello") == b""  # no reply before the whole chunk
    assert driver.conn.receiving_body
    assert codes(driver.feed(b"\r\n.\r\nx")) == ["250 2.0.0 11 octets received"]
    assert driver.conn.state is State.CHUNKING and not driver.conn.receiving_body
    assert driver.events[-4:] == [
        Bdat(size=11, last=False),
        BodyChunk(data=b"hello"),
        BodyChunk(data=b"\r\n.\r\nx"),  # no end-of-data scan, no dot-unstuffing
        EndOfChunk(size=11, total=11),
    ]
    assert codes(driver.feed(b"BDAT 3 LAST\r\nyz\n")) == ["250 2.0.0 Ok: queued as TEST"]
    assert driver.events[-1] == EndOfData(size=14)
    assert driver.bodies == [b"hello\r\n.\r\nxyz\n"]
    assert driver.conn.state is State.READY


def test_bdat_0_last_ends_the_message() -> None:
    driver = in_transaction()
    assert codes(driver.feed(b"BDAT 2\r\nabBDAT 0 LAST\r\n")) == [
        "250 2.0.0 2 octets received",
        "250 2.0.0 Ok: queued as TEST",
    ]
    assert driver.bodies == [b"ab"]


def test_an_empty_message_in_one_bdat_0_last() -> None:
    driver = in_transaction()
    assert codes(driver.feed(b"BDAT 0 LAST\r\n")) == ["250 2.0.0 Ok: queued as TEST"]
    assert driver.bodies == [b""]


def test_chunk_octets_one_at_a_time() -> None:
    driver = in_transaction()
    for byte in b"BDAT 5 LAST\r\n\r\n.\r":
        driver.feed(bytes([byte]))
    assert codes(driver.feed(b"\n")) == ["250 2.0.0 Ok: queued as TEST"]
    assert driver.bodies == [b"\r\n.\r\n"]


@pytest.mark.parametrize(
    ("prefix", "reply"),
    [
        (b"EHLO c.example\r\n", str(replies.NEED_MAIL)),
        (b"EHLO c.example\r\nMAIL FROM:<a@x.test>\r\n", str(replies.NEED_RCPT)),
        (
            b"EHLO c.example\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<nobody@y.test>\r\n",
            str(replies.NO_VALID_RECIPIENTS),
        ),
        (b"", str(replies.NEED_HELO)),
    ],
)
def test_refused_chunk_is_read_and_dropped_before_its_reply(prefix: bytes, reply: str) -> None:
    """RFC 3030 2: the receiver accepts and discards the chunk before the 4xx/5xx."""
    driver = make_driver()
    driver.refuse.add("nobody")
    answered = len(codes(driver.feed(prefix))) if prefix else 0  # b"" would be end of file
    assert driver.feed(b"BDAT 10\r\nNOOP\r\n") == b""  # the refusal waits for the octets
    assert codes(driver.feed(b"QUIT")) == [reply]
    assert codes(driver.feed(b"NOOP\r\n")) == ["250 2.0.0 Ok"]
    assert not any(isinstance(e, BodyChunk | Bdat) for e in driver.events)
    assert len(driver.events) == answered + 2


@pytest.mark.parametrize(
    ("line", "discarded"),
    [
        (b"BDAT", 0),
        (b"BDAT x", 0),
        (b"BDAT -1", 0),
        (b"BDAT 1" + b"0" * 20, 0),  # more than 20 digits: not a size
        (b"BDAT 2 LAST LAST", 2),
        (b"BDAT 2 FIRST", 2),
    ],
)
def test_bad_bdat_gets_501_and_drops_the_octets_it_can_count(line: bytes, discarded: int) -> None:
    driver = in_transaction()
    out = codes(driver.feed(line + b"\r\n" + b"ab"[:discarded] + b"NOOP\r\n"))
    assert out == [BDAT_SYNTAX, "250 2.0.0 Ok"]
    assert driver.conn.state is State.READY  # RFC 3030 2: a failed BDAT fails the transaction


@pytest.mark.parametrize("first", [b"", b"BDAT 5\r\nhello"])
@pytest.mark.parametrize("refused", [b"BDAT 3 FIRST\r\nxyz", b"BDAT x\r\n"])
def test_chunks_pipelined_after_a_refused_bdat_are_discarded(first: bytes, refused: bytes) -> None:
    """RFC 3030 2: after a failed BDAT the receiver MUST accept and discard the chunks
    already pipelined behind it: a LAST among them must not store a message with a
    chunk missing."""
    driver = in_transaction()
    out = codes(driver.feed(first + refused + b"BDAT 3 LAST\r\nabc"))
    assert out[-2:] == [BDAT_SYNTAX, str(replies.NEED_MAIL)]
    assert driver.bodies == []
    assert driver.conn.state is State.READY and not driver.conn.in_transaction


def test_size_is_enforced_over_the_sum_of_chunks() -> None:
    driver = in_transaction(max_message_size=10)
    assert codes(driver.feed(b"BDAT 6\r\n123456")) == ["250 2.0.0 6 octets received"]
    assert driver.feed(b"BDAT 5\r\n1234") == b""
    assert codes(driver.feed(b"5BDAT 1 LAST\r\nxNOOP\r\n")) == [
        "552 5.3.4 Message size exceeds fixed maximum message size of 10 octets",
        str(replies.NEED_MAIL),  # the transaction ended: later chunks are read and dropped
        "250 2.0.0 Ok",
    ]
    assert any(isinstance(e, BodyRejected) for e in driver.events)
    assert driver.bodies == []


def test_exactly_max_message_size_in_chunks_passes() -> None:
    driver = in_transaction(max_message_size=10)
    assert codes(driver.feed(b"BDAT 6\r\n123456BDAT 4 LAST\r\n7890")) == [
        "250 2.0.0 6 octets received",
        "250 2.0.0 Ok: queued as TEST",
    ]


def test_data_rcpt_and_mail_after_bdat_are_out_of_sequence() -> None:
    driver = in_transaction()
    driver.feed(b"BDAT 1\r\nx")
    assert codes(driver.feed(b"DATA\r\n")) == [str(replies.DATA_AFTER_BDAT)]
    assert codes(driver.feed(b"RCPT TO:<c@y.test>\r\n")) == [str(replies.RCPT_AFTER_BDAT)]
    assert codes(driver.feed(b"MAIL FROM:<a@x.test>\r\n")) == [str(replies.NESTED_MAIL)]
    assert codes(driver.feed(b"BDAT 1 LAST\r\ny")) == ["250 2.0.0 Ok: queued as TEST"]
    assert driver.bodies == [b"xy"]


def test_rset_discards_the_chunks_and_the_transaction() -> None:
    driver = in_transaction()
    driver.feed(b"BDAT 3\r\nabcRSET\r\n")
    assert driver.conn.state is State.READY and not driver.conn.in_transaction
    assert codes(driver.feed(ENVELOPE[16:] + b"BDAT 1 LAST\r\nz")) == [
        "250 2.1.0 Ok",
        "250 2.1.5 Ok",
        "250 2.0.0 Ok: queued as TEST",
    ]
    assert driver.bodies == [b"z"]


def test_binarymime_refuses_data_and_takes_bdat() -> None:
    driver = make_driver()
    out = driver.feed(b"EHLO c\r\nMAIL FROM:<a@x.test> BODY=BINARYMIME\r\nRCPT TO:<b@y.test>\r\n")
    assert codes(out)[1:] == ["250 2.1.0 Ok", "250 2.1.5 Ok"]
    assert codes(driver.feed(b"DATA\r\n")) == [str(replies.BINARYMIME_NEEDS_BDAT)]
    assert replies.BINARYMIME_NEEDS_BDAT.code == 503
    assert codes(driver.feed(b"BDAT 3 LAST\r\n\x00\n\r")) == ["250 2.0.0 Ok: queued as TEST"]
    assert driver.bodies == [b"\x00\n\r"]
    # The next transaction is not BINARYMIME: DATA works again.
    driver.feed(b"MAIL FROM:<a@x.test> BODY=8BITMIME\r\nRCPT TO:<b@y.test>\r\n")
    assert codes(driver.feed(b"DATA\r\n")) == ["354 End data with <CR><LF>.<CR><LF>"]


def test_end_of_file_inside_a_chunk_closes_and_stores_nothing() -> None:
    driver = in_transaction()
    driver.feed(b"BDAT 10 LAST\r\nabc")
    driver.feed(b"")
    assert driver.closed and isinstance(driver.events[-1], ConnectionClosed)
    assert driver.bodies == []


def at_end_of_chunk(chunk: bytes) -> ServerConnection:
    """A connection whose next event was the end of a one-chunk BDAT, not yet answered."""
    driver = make_driver()
    driver.feed(ENVELOPE)
    conn = driver.conn
    conn.receive_data(b"BDAT %d\r\n%s" % (len(chunk), chunk))
    assert isinstance(conn.next_event(), Bdat)
    if chunk:
        assert conn.next_event() == BodyChunk(data=chunk)
    assert conn.next_event() == EndOfChunk(size=len(chunk), total=len(chunk))
    return conn


def test_an_error_answering_a_chunk_ends_the_transaction() -> None:
    conn = at_end_of_chunk(b"x")
    conn.send(replies.STORAGE_FULL)
    assert conn.state is State.READY and not conn.in_transaction
    assert conn.next_event() is NEED_DATA


def test_end_of_chunk_must_be_answered_250_or_an_error() -> None:
    conn = at_end_of_chunk(b"")
    with pytest.raises(LocalProtocolError):
        conn.send(Reply(354, None, "go on"))


def test_refused_bdat_counts_toward_max_errors() -> None:
    driver = make_driver(max_errors=3)
    out = driver.feed(b"EHLO c\r\n" + b"BDAT 1\r\nx" * 3)
    assert codes(out)[-1] == str(replies.TOO_MANY_ERRORS)
    assert driver.closed


def test_refusal_events_are_protocol_violations() -> None:
    driver = make_driver()
    driver.feed(b"EHLO c\r\nBDAT 2\r\nab")
    assert isinstance(driver.events[-1], ProtocolViolation)
    assert driver.events[-1].reply == replies.NEED_MAIL


def test_body_line_limit_applies_to_text_chunks_across_their_ends() -> None:
    """max_body_line as after DATA; a line may run on into the next chunk, or a chunk end
    between its CR and LF."""
    driver = in_transaction(max_body_line=1000)
    line = b"x" * 998 + b"\r\n"  # 1000 octets: the most allowed
    out = driver.feed(b"BDAT 999\r\n" + line[:999] + b"BDAT 1001\r\n" + line[999:] + line)
    assert codes(out) == ["250 2.0.0 999 octets received", "250 2.0.0 1001 octets received"]
    out = driver.feed(b"BDAT 500\r\n" + b"y" * 500 + b"BDAT 502 LAST\r\n" + b"y" * 500 + b"\r\n")
    assert codes(out) == [
        "250 2.0.0 500 octets received",
        str(replies.body_line_too_long(1000)),
    ]
    assert driver.bodies == [] and driver.conn.state is State.READY


def test_body_line_limit_does_not_apply_to_binarymime() -> None:
    driver = make_driver(max_body_line=1000)
    driver.feed(b"EHLO c\r\nMAIL FROM:<a@x.test> BODY=BINARYMIME\r\nRCPT TO:<b@y.test>\r\n")
    out = driver.feed(b"BDAT 3000 LAST\r\n" + b"z" * 3000)
    assert codes(out) == ["250 2.0.0 Ok: queued as TEST"]
