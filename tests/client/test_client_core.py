"""The client core, tested by feeding it bytes, and run against the real server core without sockets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailwright.errors import LocalProtocolError, RemoteProtocolError
from mailwright.model import Address
from mailwright.protocol.client import (
    DEFAULT_MAX_REPLY_LINE,
    DEFAULT_MAX_REPLY_LINES,
    Capabilities,
    ClientConnection,
    CommandKind,
    ReplyReceived,
)
from mailwright.protocol.events import NEED_DATA, ConnectionClosed, Mail, Rcpt
from mailwright.protocol.reply import Reply
from tests.protocol.conftest import Driver, make_driver

ALICE = Address("alice", "example.test")
BOB = Address("bob", "example.test")
SENDER = Address("sender", "remote.test")

EHLO_REPLY = (
    b"250-mx.example.test greets client.test\r\n"
    b"250-PIPELINING\r\n"
    b"250-SIZE 1000000\r\n"
    b"250-8BITMIME\r\n"
    b"250-SMTPUTF8\r\n"
    b"250-STARTTLS\r\n"
    b"250-AUTH PLAIN LOGIN\r\n"
    b"250-AUTH=XOAUTH2\r\n"
    b"250-CHUNKING\r\n"
    b"250 ENHANCEDSTATUSCODES\r\n"
)


def events(conn: ClientConnection, data: bytes = b"") -> list[object]:
    """Feed ``data`` and take every event until the core needs more."""
    if data:
        conn.receive_data(data)
    out: list[object] = []
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            return out
        out.append(event)
        if isinstance(event, ConnectionClosed):
            return out


def reply_of(conn: ClientConnection, data: bytes) -> ReplyReceived:
    (event,) = events(conn, data)
    assert isinstance(event, ReplyReceived)
    return event


def greeted(extensions: bytes = EHLO_REPLY) -> ClientConnection:
    """A core that has read a greeting and a 250 to EHLO."""
    conn = ClientConnection()
    reply_of(conn, b"220 mx.example.test ESMTP\r\n")
    assert conn.ehlo("client.test") == b"EHLO client.test\r\n"
    reply_of(conn, extensions)
    return conn


# ---------------------------------------------------------------- replies


def test_greeting_is_the_first_reply_and_answers_no_command() -> None:
    conn = ClientConnection()
    assert conn.next_event() is NEED_DATA
    event = reply_of(conn, b"220 mx.example.test ESMTP ready\r\n")
    assert event.command is not None and event.command.kind is CommandKind.GREETING
    assert event.reply == Reply(220, None, "mx.example.test ESMTP ready")


def test_multiline_reply_is_one_event_even_fed_byte_by_byte() -> None:
    conn = greeted()
    conn.rset()
    wire = b"250-2.0.0 first\r\n250-2.0.0 second\r\n250 2.0.0 last\r\n"
    seen: list[object] = []
    for i in range(len(wire)):
        seen += events(conn, wire[i : i + 1])
    (event,) = seen
    assert isinstance(event, ReplyReceived)
    assert event.reply == Reply(250, "2.0.0", ("first", "second", "last"))
    assert event.lines == ("250-2.0.0 first", "250-2.0.0 second", "250 2.0.0 last")
    assert event.command is not None and event.command.line == "RSET"


def test_bare_lf_ends_a_reply_line() -> None:
    conn = ClientConnection()
    event = reply_of(conn, b"220-hello\n220 there\n")
    assert event.reply.lines == ("hello", "there")


def test_ehlo_reply_becomes_capabilities() -> None:
    caps = greeted().capabilities
    assert caps.pipelining and caps.starttls and caps.smtputf8 and caps.eight_bit_mime
    assert caps.chunking and caps.enhanced_status_codes
    assert caps.max_size == 1_000_000
    assert caps.auth_mechanisms == ("PLAIN", "LOGIN", "XOAUTH2")
    assert caps.has("pipelining") and not caps.has("DSN")


def test_size_zero_or_without_value_means_no_fixed_limit() -> None:
    for line in ("SIZE", "SIZE 0", "SIZE lots"):
        caps = Capabilities.parse(Reply(250, None, ["mx", line]))
        assert caps.has("SIZE") and caps.max_size is None


def test_malformed_capability_lines_are_ignored() -> None:
    caps = Capabilities.parse(Reply(250, None, ["mx", "", "-BAD", "GOOD x"]))
    assert dict(caps.keywords) == {"GOOD": ("x",)}


def test_helo_leaves_no_capabilities() -> None:
    conn = ClientConnection()
    reply_of(conn, b"220 mx\r\n")
    conn.ehlo("client.test")
    assert reply_of(conn, b"502 5.5.1 EHLO not implemented\r\n").reply.code == 502
    assert conn.helo("client.test") == b"HELO client.test\r\n"
    reply_of(conn, b"250 mx\r\n")
    assert not conn.esmtp and conn.capabilities == Capabilities()
    assert conn.mail(SENDER) == b"MAIL FROM:<sender@remote.test>\r\n"


# --------------------------------------------------------- hostile server


def test_endless_reply_line_fails_once_the_limit_is_crossed() -> None:
    conn = ClientConnection()
    conn.receive_data(b"220 " + b"x" * (DEFAULT_MAX_REPLY_LINE - 10))
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"x" * 10)  # no line ending yet, and already too long
    with pytest.raises(RemoteProtocolError, match="longer than 4096"):
        conn.next_event()
    with pytest.raises(RemoteProtocolError):  # the connection stays failed
        conn.next_event()
    with pytest.raises(LocalProtocolError):
        conn.quit()


def test_reply_line_at_the_limit_is_accepted() -> None:
    conn = ClientConnection()
    line = b"220 " + b"x" * (DEFAULT_MAX_REPLY_LINE - 6) + b"\r\n"
    assert len(line) == DEFAULT_MAX_REPLY_LINE
    assert reply_of(conn, line).reply.code == 220


def test_long_line_with_its_ending_in_the_same_chunk_still_fails() -> None:
    conn = ClientConnection(max_reply_line=64)
    conn.receive_data(b"220 " + b"x" * 100 + b"\r\n")
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


def test_reply_with_too_many_lines_fails() -> None:
    conn = ClientConnection()
    conn.receive_data(b"220-more\r\n" * DEFAULT_MAX_REPLY_LINES)
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"220-more\r\n")
    with pytest.raises(RemoteProtocolError, match="more than 100 lines"):
        conn.next_event()


@pytest.mark.parametrize(
    "wire",
    [
        b"hello there\r\n",
        b"22 short\r\n",
        b"220_bad separator\r\n",
        b"220-first\r\n421 second\r\n",
        b"600 out of range\r\n",
        b"220 bare\rcr\r\n",
    ],
)
def test_malformed_replies_are_remote_protocol_errors(wire: bytes) -> None:
    conn = ClientConnection()
    conn.receive_data(wire)
    with pytest.raises(RemoteProtocolError):
        conn.next_event()


def test_reply_without_a_command_is_an_error() -> None:
    conn = greeted()
    conn.receive_data(b"250 nobody asked\r\n")
    with pytest.raises(RemoteProtocolError, match="without a command"):
        conn.next_event()


def test_unsolicited_421_closes_the_session() -> None:
    conn = greeted()
    event, closed = events(conn, b"421 4.4.2 Timeout exceeded; closing connection\r\n")
    assert isinstance(event, ReplyReceived) and isinstance(closed, ConnectionClosed)
    assert event.command is None and event.reply.code == 421
    assert conn.closed
    with pytest.raises(LocalProtocolError, match="closed"):
        conn.noop()


def test_eof_is_connection_closed_and_unanswered_commands_are_kept() -> None:
    conn = greeted()
    conn.mail(SENDER)
    conn.rcpt(ALICE)
    conn.receive_data(b"250 2.1.0 Ok\r\n")
    conn.receive_data(b"")
    first, second = events(conn)
    assert isinstance(first, ReplyReceived) and isinstance(second, ConnectionClosed)
    assert [c.line for c in conn.unanswered] == ["RCPT TO:<alice@example.test>"]


# --------------------------------------------------------------- commands


def test_talking_before_the_greeting_is_refused() -> None:
    with pytest.raises(LocalProtocolError, match="greeting"):
        ClientConnection().ehlo("client.test")


def test_mail_before_ehlo_is_refused() -> None:
    conn = ClientConnection()
    reply_of(conn, b"220 mx\r\n")
    with pytest.raises(LocalProtocolError, match="EHLO or HELO"):
        conn.mail(SENDER)


def test_pipelining_needs_the_extension() -> None:
    conn = greeted(b"250-mx\r\n250 8BITMIME\r\n")
    conn.mail(SENDER)
    with pytest.raises(LocalProtocolError, match="PIPELINING"):
        conn.rcpt(ALICE)


@pytest.mark.parametrize("ender", ["data", "noop", "quit", "starttls"])
def test_commands_that_end_a_pipelined_group_wait_for_their_reply(ender: str) -> None:
    conn = greeted()
    conn.mail(SENDER)
    conn.rcpt(ALICE)
    getattr(conn, ender)()
    with pytest.raises(LocalProtocolError, match="RFC 2920"):
        conn.rset()


def test_body_before_354_is_refused() -> None:
    conn = greeted()
    conn.mail(SENDER)
    conn.rcpt(ALICE)
    conn.data()
    with pytest.raises(LocalProtocolError, match="354"):
        conn.body(b"RCPT TO:<evil@example.test>\r\n")
    events(conn, b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n554 5.5.1 No valid recipients\r\n")
    with pytest.raises(LocalProtocolError, match="354"):
        conn.body(b"would be read as commands\r\n")


def test_commands_inside_the_body_are_refused() -> None:
    conn = greeted()
    conn.mail(SENDER)
    conn.rcpt(ALICE)
    conn.data()
    events(conn, b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n")
    assert conn.sending_body
    with pytest.raises(LocalProtocolError, match="end_body"):
        conn.quit()
    assert conn.end_body() == b".\r\n"
    assert not conn.sending_body


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.raw("NOOP\r\nRCPT TO:<x@y.test>"),
        lambda c: c.ehlo("client.test\r\nMAIL FROM:<x@y.test>"),
        lambda c: c.rcpt(Address("a\r\nDATA", "y.test")),
        lambda c: c.ehlo("not a host name!"),
    ],
)
def test_cr_lf_and_bad_names_never_reach_the_wire(call: object) -> None:
    conn = greeted()
    with pytest.raises(LocalProtocolError):
        call(conn)  # type: ignore[operator]


def test_mail_parameters_need_their_extensions() -> None:
    conn = greeted()
    line = conn.mail(Address("josé", "remote.test"), size=1234, body_8bit=True, smtputf8=True)
    assert line == "MAIL FROM:<josé@remote.test> SIZE=1234 BODY=8BITMIME SMTPUTF8\r\n".encode()
    bare = greeted(b"250-mx\r\n250 PIPELINING\r\n")
    for kwargs in ({"size": 1}, {"body_8bit": True}, {"smtputf8": True}):
        with pytest.raises(LocalProtocolError, match="did not offer"):
            bare.mail(SENDER, **kwargs)  # type: ignore[arg-type]


def test_non_ascii_addresses_need_smtputf8() -> None:
    conn = greeted()
    with pytest.raises(LocalProtocolError, match="SMTPUTF8"):
        conn.mail(Address("josé", "remote.test"))
    conn.mail(SENDER)
    with pytest.raises(LocalProtocolError, match="SMTPUTF8"):
        conn.rcpt(Address("zoë", "example.test"))


def test_null_sender() -> None:
    assert greeted().mail(None) == b"MAIL FROM:<>\r\n"


def test_raw_command_reply_is_matched_in_order() -> None:
    conn = greeted()
    assert conn.raw("VRFY postmaster") == b"VRFY postmaster\r\n"
    event = reply_of(conn, b"252 2.5.0 Cannot VRFY user\r\n")
    assert event.command is not None and event.command.kind is CommandKind.RAW


def test_quit_reply_closes() -> None:
    conn = greeted()
    conn.quit()
    bye, closed = events(conn, b"221 2.0.0 Bye\r\n")
    assert isinstance(bye, ReplyReceived) and bye.reply.code == 221
    assert isinstance(closed, ConnectionClosed) and conn.closed


def test_421_to_a_pipelined_command_closes_and_drops_the_rest() -> None:
    conn = greeted()
    conn.mail(SENDER)
    conn.rcpt(ALICE)
    event, closed = events(conn, b"421 4.3.2 Shutting down\r\n250 2.1.5 Ok\r\n")
    assert isinstance(event, ReplyReceived) and isinstance(closed, ConnectionClosed)
    assert event.command is not None and event.command.kind is CommandKind.MAIL
    assert conn.closed and conn.unanswered == ()


def test_starttls_drops_plain_text_buffered_after_220_and_forgets_capabilities() -> None:
    conn = greeted()
    conn.starttls()
    # An attacker appends a fake reply to the 220 (CVE-2011-0411 style).
    event = reply_of(conn, b"220 2.0.0 Ready to start TLS\r\n250-evil\r\n250 AUTH PLAIN\r\n")
    assert event.command is not None and event.command.kind is CommandKind.STARTTLS
    assert conn.capabilities == Capabilities() and not conn.esmtp
    assert conn.next_event() is NEED_DATA
    with pytest.raises(LocalProtocolError, match="EHLO"):
        conn.mail(SENDER)
    conn.ehlo("client.test")  # the first bytes written inside TLS
    reply_of(conn, b"250-mx\r\n250 PIPELINING\r\n")
    assert conn.capabilities.pipelining and not conn.capabilities.starttls


def test_starttls_needs_the_extension() -> None:
    with pytest.raises(LocalProtocolError, match="STARTTLS"):
        greeted(b"250-mx\r\n250 PIPELINING\r\n").starttls()


# ------------------------------------------------ against the server core


def exchange(conn: ClientConnection, driver: Driver, out: bytes) -> list[ReplyReceived]:
    """Write ``out`` to the server core, feed its answer back; return the replies."""
    got = events(conn, driver.feed(out))
    assert all(isinstance(e, ReplyReceived) for e in got)
    return got  # type: ignore[return-value]


def connected(driver: Driver) -> ClientConnection:
    conn = ClientConnection()
    reply_of(conn, b"220 test.example ESMTP mailwright\r\n")
    (ehlo,) = exchange(conn, driver, conn.ehlo("client.test"))
    assert ehlo.reply.code == 250
    return conn


def test_pipelined_transaction_against_the_server_core() -> None:
    driver = make_driver()
    driver.refuse.add("nobody")
    conn = connected(driver)
    assert conn.capabilities.pipelining and conn.capabilities.max_size == 26_214_400
    out = (
        conn.mail(SENDER, size=40)
        + conn.rcpt(ALICE)
        + conn.rcpt(Address("nobody", "example.test"))
        + conn.rcpt(BOB)
        + conn.data()
    )
    got = exchange(conn, driver, out)
    assert [(str(e.command), e.reply.code) for e in got] == [
        ("MAIL FROM:<sender@remote.test> SIZE=40", 250),
        ("RCPT TO:<alice@example.test>", 250),
        ("RCPT TO:<nobody@example.test>", 550),
        ("RCPT TO:<bob@example.test>", 250),
        ("DATA", 354),
    ]
    out = conn.body(b"Subject: hi\n\n.hidden dot\n") + conn.body(b".\nend") + conn.end_body()
    (end,) = exchange(conn, driver, out)
    assert end.command is not None and end.command.kind is CommandKind.END_OF_DATA
    assert end.reply.code == 250
    assert driver.bodies == [b"Subject: hi\r\n\r\n.hidden dot\r\n.\r\nend\r\n"]
    bye, closed = events(conn, driver.feed(conn.quit()))
    assert isinstance(bye, ReplyReceived) and bye.reply.code == 221
    assert isinstance(closed, ConnectionClosed) and driver.closed


def test_all_recipients_refused_then_data_refused_against_the_server_core() -> None:
    driver = make_driver()
    driver.refuse.add("nobody")
    conn = connected(driver)
    out = conn.mail(SENDER) + conn.rcpt(Address("nobody", "example.test")) + conn.data()
    got = exchange(conn, driver, out)
    assert [e.reply.code for e in got] == [250, 550, 554]
    assert not conn.sending_body
    (rset,) = exchange(conn, driver, conn.rset())
    assert rset.reply.code == 250


def test_body_in_tiny_pieces_across_dot_and_line_boundaries() -> None:
    driver = make_driver()
    conn = connected(driver)
    exchange(conn, driver, conn.mail(SENDER) + conn.rcpt(ALICE) + conn.data())
    body = b".a\r\n..b\r\n.\r\n\r\n.\r\r\n.\n.c"
    out = b"".join(conn.body(body[i : i + 1]) for i in range(len(body))) + conn.end_body()
    (end,) = exchange(conn, driver, out)
    assert end.reply.code == 250
    assert driver.bodies == [b".a\r\n..b\r\n.\r\n\r\n.\r\n\r\n.\r\n.c\r\n"]


def normalised(body: bytes) -> bytes:
    """What the server must receive: every line ending CRLF, a final CRLF."""
    text = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    return text if not text or text.endswith(b"\r\n") else text + b"\r\n"


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(st.sampled_from([b"", b".", b"..", b".x", b"x.", b"text", b"\xc3\xa9"])),
    endings=st.lists(st.sampled_from([b"\r\n", b"\n", b"\r"]), min_size=1),
    cuts=st.lists(st.integers(min_value=1, max_value=7), min_size=1),
)
def test_dot_stuffing_round_trip(lines: list[bytes], endings: list[bytes], cuts: list[int]) -> None:
    body = b"".join(line + endings[i % len(endings)] for i, line in enumerate(lines))
    driver = make_driver()
    conn = connected(driver)
    exchange(conn, driver, conn.mail(SENDER) + conn.rcpt(ALICE) + conn.data())
    out = bytearray()
    pos = i = 0
    while pos < len(body):
        step = cuts[i % len(cuts)]
        out += conn.body(body[pos : pos + step])
        pos += step
        i += 1
    out += conn.end_body()
    (end,) = exchange(conn, driver, bytes(out))
    assert end.reply.code == 250, end.reply
    assert driver.bodies == [normalised(body)]


def test_the_core_imports_no_io() -> None:
    """DESIGN rule 1: protocol/ is pure; importing the client core pulls in no I/O module."""
    import subprocess
    import sys

    code = (
        "import sys, mailwright.protocol.client; "
        "print(sorted({'asyncio', 'socket', 'ssl', 'selectors'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- DSN (RFC 3461)


def test_dsn_parameters_go_as_xtext_only_to_a_server_offering_dsn() -> None:
    dsn = greeted(EHLO_REPLY.replace(b"250-CHUNKING", b"250-DSN"))
    assert dsn.mail(SENDER, ret="hdrs", envid="id+1 2") == (
        b"MAIL FROM:<sender@remote.test> RET=HDRS ENVID=id+2B1+202\r\n"
    )
    reply_of(dsn, b"250 2.1.0 Ok\r\n")
    assert dsn.rcpt(ALICE, notify="success,delay", orcpt="rfc822;a=b@old.test") == (
        b"RCPT TO:<alice@example.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;a+3Db@old.test\r\n"
    )
    with pytest.raises(LocalProtocolError, match="NEVER cannot be combined"):
        dsn.rcpt(BOB, notify="NEVER,DELAY")
    plain = greeted()
    with pytest.raises(LocalProtocolError, match="did not offer DSN"):
        plain.mail(SENDER, ret="FULL")


def test_dsn_parameters_received_are_passed_on_with_the_same_value() -> None:
    """RFC 3461 5.2.1 (b) and (c): a relay passes ORCPT and ENVID on with the value it was
    given.  xtext stands for octets: "+C3" is the octet 0xC3, sent on as "+C3" again, never
    re-encoded as if it were the character U+00C3 ("+C3+83")."""
    driver = make_driver()
    driver.feed(b"EHLO c.example\r\n")
    driver.feed(b"MAIL FROM:<a@x.test> ENVID=id+C3+A9+0A\r\n")
    driver.feed(b"RCPT TO:<b@y.test> ORCPT=rfc822;b+C3+A9+FF@y.test\r\n")
    [mail] = [e for e in driver.events if isinstance(e, Mail)]
    [rcpt] = [e for e in driver.events if isinstance(e, Rcpt)]
    assert rcpt.orcpt is not None
    dsn = greeted(EHLO_REPLY.replace(b"250-CHUNKING", b"250-DSN"))
    assert dsn.mail(SENDER, envid=mail.envid).endswith(b" ENVID=id+C3+A9+0A\r\n")
    reply_of(dsn, b"250 2.1.0 Ok\r\n")
    assert dsn.rcpt(ALICE, orcpt=rcpt.orcpt).endswith(b" ORCPT=rfc822;b+C3+A9+FF@y.test\r\n")


def test_a_utf8_orcpt_goes_as_8bit_only_in_an_smtputf8_transaction() -> None:
    """RFC 6533 3: the utf-8 ORCPT type's utf-8-addr-unitext (raw UTF-8) only where SMTPUTF8
    allows 8-bit in commands (RFC 6531 3.4); otherwise utf-8-addr-xtext, each non-ASCII
    character as \\x{HEX}, never 8-bit octets in a command that may not carry them."""
    driver = make_driver()
    driver.feed(b"EHLO c.example\r\nMAIL FROM:<a@x.test> SMTPUTF8\r\n")
    driver.feed("RCPT TO:<b@y.test> ORCPT=utf-8;jörg@y.test\r\n".encode())
    [rcpt] = [e for e in driver.events if isinstance(e, Rcpt)]
    assert rcpt.orcpt is not None
    dsn = greeted(EHLO_REPLY.replace(b"250-CHUNKING", b"250-DSN"))
    dsn.mail(SENDER)
    reply_of(dsn, b"250 2.1.0 Ok\r\n")
    assert dsn.rcpt(ALICE, orcpt=rcpt.orcpt).endswith(b" ORCPT=utf-8;j\\x{F6}rg@y.test\r\n")
    reply_of(dsn, b"250 2.1.5 Ok\r\n")
    dsn.mail(SENDER, smtputf8=True)
    reply_of(dsn, b"250 2.1.0 Ok\r\n")
    assert dsn.rcpt(ALICE, orcpt=rcpt.orcpt).endswith(" ORCPT=utf-8;jörg@y.test\r\n".encode())
