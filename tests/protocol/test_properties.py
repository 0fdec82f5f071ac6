"""Property tests of the server core (hypothesis): any bytes, in any pieces."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailwright.protocol.state import State
from tests.protocol.conftest import codes, make_driver

COMMANDS = [
    b"EHLO c.example",
    b"HELO c.example",
    b"MAIL FROM:<a@x.test>",
    b"MAIL FROM:<>",
    b"MAIL FROM:<a@x.test> SIZE=100",
    b"RCPT TO:<b@y.test>",
    b"RCPT TO:<nobody@y.test>",
    b"RSET",
    b"NOOP",
    b"VRFY b",
    b"HELP",
    b"DATA",
    b"QUIT",
    b"MAIL FROM:a@x.test",
    b"BOGUS",
    b"",
    b"RCPT TO:<@r.test:b@y.test>",
    b"MAIL FROM:<" + b"l" * 70 + b"@x.test>",
    # BDAT with no octets to follow, so each line still gets exactly one reply
    b"BDAT 0",
    b"BDAT 0 LAST",
    b"BDAT x",
    b"MAIL FROM:<a@x.test> BODY=BINARYMIME",
]

settings.register_profile("ci", max_examples=150, deadline=None)
settings.load_profile("ci")

junk = st.binary(max_size=700)
lines = st.lists(st.one_of(st.sampled_from(COMMANDS), junk), max_size=30)


@given(data=st.binary(max_size=4000), cuts=st.lists(st.integers(0, 4000), max_size=10))
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_any_bytes_in_any_pieces_never_crash_the_core(data: bytes, cuts: list[int]) -> None:
    driver = make_driver()
    points = sorted({0, len(data), *[c for c in cuts if c <= len(data)]})
    for start, end in itertools.pairwise(points):
        driver.feed(data[start:end])  # raises only on a bug: nothing is caught here
        if driver.closed:
            break
    driver.feed(b"")
    assert driver.closed  # end of input always ends the session cleanly


@given(
    commands=st.lists(
        st.sampled_from([c for c in COMMANDS if c not in (b"DATA", b"QUIT")]), max_size=40
    )
)
def test_every_command_line_gets_exactly_one_reply(commands: list[bytes]) -> None:
    driver = make_driver(max_errors=1000)
    driver.refuse.add("nobody")
    out = driver.feed(b"".join(c + b"\r\n" for c in commands))
    assert len(codes(out)) == len(commands)


@given(
    commands=st.lists(
        st.sampled_from([c for c in COMMANDS if c not in (b"QUIT",)])
        | junk.filter(lambda b: b"\n" not in b),
        max_size=30,
    )
)
def test_pipelined_stream_answers_in_one_to_one_order(commands: list[bytes]) -> None:
    """Without DATA bodies: one reply per line, whatever the lines are (QUIT excluded)."""
    commands = [
        c for c in commands if c.split(b" ")[0].upper() not in (b"DATA", b"QUIT") and b"\r" not in c
    ]
    driver = make_driver(max_errors=1000)
    out = driver.feed(b"".join(c + b"\r\n" for c in commands))
    assert len(codes(out)) == len(commands)


@given(
    prefix=st.lists(
        st.sampled_from([c for c in COMMANDS if c not in (b"QUIT", b"DATA")]), max_size=20
    )
)
def test_rset_returns_to_the_state_after_ehlo(prefix: list[bytes]) -> None:
    driver = make_driver(max_errors=1000)
    driver.feed(
        b"EHLO c.example\r\n"
        + b"".join(c + b"\r\n" for c in prefix)
        + b"EHLO c.example\r\nRSET\r\n"
    )
    reference = make_driver()
    reference.feed(b"EHLO c.example\r\n")
    conn, ref = driver.conn, reference.conn
    assert conn.state is ref.state is State.READY
    assert not conn.in_transaction
    assert (conn.esmtp, conn.helo_name) == (ref.esmtp, ref.helo_name)
    # and the next transaction behaves exactly the same on both
    tail = b"RCPT TO:<b@y.test>\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n"
    assert driver.feed(tail) == reference.feed(tail)
    assert driver.feed(b"x\r\n.\r\n") == reference.feed(b"x\r\n.\r\n")
    assert driver.bodies[-1:] == reference.bodies == [b"x\r\n"]


@given(body=st.binary(max_size=3000), size=st.integers(1, 64))
def test_dot_stuffed_body_round_trips(body: bytes, size: int) -> None:
    """Any CRLF-clean body, stuffed by the client side, comes out of the server unchanged."""
    from mailwright.protocol.data import DotStuffer

    body = body.replace(b"\r", b"").replace(b"\n", b"\r\n")
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    stuffer = DotStuffer()
    wire = stuffer.stuff(body) + stuffer.finish()
    driver = make_driver(max_message_size=10**6)
    driver.feed(b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n")
    for i in range(0, len(wire), size):
        driver.feed(wire[i : i + size])
    assert driver.bodies == [body]


@given(st.binary(max_size=2000))
def test_nothing_sent_with_starttls_is_ever_answered(injected: bytes) -> None:
    """CVE-2011-0411: whatever follows STARTTLS in the same packet gets no reply, before
    the handshake or after it; the session after TLS starts from a fresh greeting."""
    driver = make_driver(starttls=True, auth_mechanisms=("PLAIN", "LOGIN"))
    driver.feed(b"EHLO c.example\r\n")
    assert driver.feed(b"STARTTLS\r\n" + injected) == b"220 2.0.0 Ready to start TLS\r\n"
    assert driver.conn.state is State.CONNECTED and driver.conn.helo_name is None
    assert codes(driver.feed(b"NOOP\r\n")) == ["250 2.0.0 Ok"]


def _crlf_clean(body: bytes) -> bytes:
    body = body.replace(b"\r", b"").replace(b"\n", b"\r\n")
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body


def _in_chunks(body: bytes, sizes: list[int]) -> bytes:
    """``body`` as BDAT commands of the given sizes (what is left goes in the LAST one)."""
    wire, start = b"", 0
    for size in sizes:
        piece = body[start : start + size]
        start += len(piece)
        wire += b"BDAT %d\r\n" % len(piece) + piece
    rest = body[start:]
    return wire + b"BDAT %d LAST\r\n" % len(rest) + rest


def _feed_in_pieces(
    wire: bytes,
    size: int,
    *,
    mail: bytes = b"MAIL FROM:<a@x.test>",
    data: bool = False,
    max_body_line: int = 0,
) -> list[bytes]:
    """The bodies a session stores when ``wire`` follows the envelope in pieces of ``size``
    (after DATA's 354 with ``data``: a client waits for it, RFC 2920 3.1)."""
    driver = make_driver(max_message_size=10**6, max_body_line=max_body_line)
    command = b"DATA\r\n" if data else b""
    driver.feed(b"EHLO c\r\n" + mail + b"\r\nRCPT TO:<b@y.test>\r\n" + command)
    for i in range(0, len(wire), size):
        driver.feed(wire[i : i + size])
    return driver.bodies


#: A body, the sizes of its BDAT chunks (the rest goes in the LAST), and how it arrives.
CHUNKED = {
    "body": st.binary(max_size=3000),
    "sizes": st.lists(st.integers(0, 700), max_size=12),
    "piece": st.integers(1, 97),
}


@given(**CHUNKED)
def test_bdat_in_any_chunks_and_pieces_stores_what_data_stores(
    body: bytes, sizes: list[int], piece: int
) -> None:
    """RFC 3030: the same message sent with DATA or in BDAT chunks of any sizes, each
    arriving in pieces of any size, is the same stored message."""
    from mailwright.protocol.data import DotStuffer

    body = _crlf_clean(body)
    stuffer = DotStuffer()
    by_data = _feed_in_pieces(stuffer.stuff(body) + stuffer.finish(), piece, data=True)
    by_bdat = _feed_in_pieces(_in_chunks(body, sizes), piece)
    assert by_bdat == by_data == [body]


@given(**CHUNKED)
def test_binarymime_body_is_stored_octet_for_octet(
    body: bytes, sizes: list[int], piece: int
) -> None:
    """Any octets at all, bare CR, LF, NUL and CRLF.CRLF included, come out as they went in."""
    wire = _in_chunks(body, sizes)
    assert _feed_in_pieces(wire, piece, mail=b"MAIL FROM:<a@x.test> BODY=BINARYMIME") == [body]


@given(
    lengths=st.lists(st.integers(990, 1002), max_size=6),
    sizes=st.lists(st.integers(0, 1500), max_size=6),
    piece=st.integers(1, 700),
)
def test_bdat_and_data_agree_on_long_lines(
    lengths: list[int], sizes: list[int], piece: int
) -> None:
    """max_body_line refuses the same messages whether they come after DATA or in chunks."""
    from mailwright.protocol.data import DotStuffer

    body = b"".join(b"x" * n + b"\r\n" for n in lengths)
    stuffer = DotStuffer()
    wire = stuffer.stuff(body) + stuffer.finish()
    by_data = _feed_in_pieces(wire, piece, data=True, max_body_line=1000)
    by_bdat = _feed_in_pieces(_in_chunks(body, sizes), piece, max_body_line=1000)
    assert by_bdat == by_data == ([body] if all(n <= 998 for n in lengths) else [])
