"""Next hops that break SMTP, and what a bounce may carry and where it may go.

Each runs a real mailwright server against a real peer on loopback: a raw
scripted peer (tests/peers.py) for replies the SMTP grammar does not allow,
the sink (tests/sink.py) for well-formed but hostile ones.
"""

from __future__ import annotations

import email
import logging
import smtplib
import socket
import threading
from collections.abc import Callable

import pytest

from mailwright.protocol.reply import Reply
from mailwright.queue.base import QueuedRecipient
from tests.helpers import RunningServer, maildir_messages, wait_for
from tests.peers import ScriptedPeer, read_line
from tests.sink import Behaviour, SinkServer

Peer = Callable[..., ScriptedPeer]

#: Reply text a hostile next hop might send: ESC (a terminal escape), NUL, NEL,
#: U+2028 (a line break to Python's splitlines), a right-to-left override, DEL.
NASTY_TEXT = "no such\x1b[2J user\x00 here\x85forged\u2028line\u202eevil\x7f end"
NON_PRINTABLE = ("\x1b", "\x00", "\x85", "\u2028", "\u202e", "\x7f")


def routed_to(port: int, *, retry: int = 3600, max_age: int = 86400, extra: str = "") -> str:
    return f"""
[routes]
"elsewhere.test" = "127.0.0.1:{port}"
[queue]
retry = [{retry}]
max_age = {max_age}
{extra}
"""


def send(server: RunningServer, sender: str, rcpts: list[str], body: str) -> None:
    with smtplib.SMTP(server.host, server.port, timeout=10) as s:
        assert s.sendmail(sender, rcpts, body) == {}


def recipients(server: RunningServer) -> dict[str, QueuedRecipient]:
    """Every queued recipient by address (one message in the queue at a time here)."""
    messages = server.call(lambda: server.app.store.list())
    return {str(r.target.address): r for m in messages for r in m.recipients}  # type: ignore[attr-defined]


def queue_is_empty(server: RunningServer) -> bool:
    return server.call(lambda: server.app.store.list()) == []


class HostilePeer:
    """Scripts for a scripted peer; ``closed`` is set once our side has closed the socket."""

    def __init__(self) -> None:
        self.closed = threading.Event()

    def _until_closed(self, sock: socket.socket) -> None:
        try:
            while sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
        self.closed.set()

    def greets_with(self, data: bytes) -> Callable[[socket.socket], None]:
        def script(sock: socket.socket) -> None:
            sock.sendall(data)
            self._until_closed(sock)

        return script

    def garbage_after_mail(self, sock: socket.socket) -> None:
        buffer = bytearray()
        sock.sendall(b"220 peer.test ESMTP\r\n")
        assert read_line(sock, buffer).upper().startswith(b"EHLO")
        sock.sendall(b"250 peer.test\r\n")  # no PIPELINING: MAIL comes alone
        assert read_line(sock, buffer).upper().startswith(b"MAIL FROM:")
        sock.sendall(b"\x1b[2Jgarbage after MAIL\r\n")
        self._until_closed(sock)


MALFORMED = {
    "greeting without a code": (
        lambda hostile: hostile.greets_with(b"this is not an smtp reply\r\n"),
        "'this is not an smtp reply'",
    ),
    "reply line over 4096 octets": (
        lambda hostile: hostile.greets_with(b"220 " + b"x" * 5000 + b"\r\n"),
        "longer than 4096 octets",
    ),
    "reply of over 100 lines": (
        lambda hostile: hostile.greets_with(b"220-still greeting\r\n" * 101 + b"220 done\r\n"),
        "more than 100 lines",
    ),
    "garbage after MAIL": (
        lambda hostile: hostile.garbage_after_mail,
        "'\\x1b[2Jgarbage after MAIL'",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_reply_defers_the_remote_recipient_and_records_the_local_one(
    server_factory, scripted_peer: Peer, case: str
) -> None:
    script_of, received = MALFORMED[case]
    hostile = HostilePeer()
    peer = scripted_peer(script_of(hostile))
    server = server_factory(routed_to(peer.port))
    # bob@example.test forwards to bob@elsewhere.test, the hostile peer's domain.
    send(
        server,
        "sender@remote.test",
        ["alice@example.test", "bob@example.test"],
        "Subject: x\r\n\r\nb\r\n",
    )

    def deferred() -> QueuedRecipient | None:
        bob = recipients(server).get("bob@elsewhere.test")
        return bob if bob is not None and bob.state.value == "deferred" else None

    bob = wait_for(deferred)
    assert isinstance(bob, QueuedRecipient)
    assert bob.last_reply is not None
    stored = str(bob.last_reply)
    assert stored.startswith("451 4.5.0 Protocol error: reply from 127.0.0.1:")
    assert received in stored  # what the peer sent, escaped
    assert stored.isprintable()
    assert recipients(server)["alice@example.test"].state.value == "delivered"
    assert len(maildir_messages(server.data_dir, "alice@example.test")) == 1
    assert hostile.closed.wait(10), "the connection to the peer was left open"


def test_a_next_hop_that_never_speaks_smtp_expires_at_max_age_and_bounces(
    server_factory, scripted_peer: Peer
) -> None:
    hostile = HostilePeer()
    peer = scripted_peer(hostile.greets_with(b"this is not an smtp reply\r\n"), connections=50)
    server = server_factory(routed_to(peer.port, retry=1, max_age=2))
    send(server, "alice@example.test", ["bob@example.test"], "Subject: never\r\n\r\nb\r\n")
    [raw] = wait_for(lambda: maildir_messages(server.data_dir, "alice@example.test"), timeout=30)
    assert b"Final-Recipient: rfc822; bob@elsewhere.test" in raw
    assert b"Status: 4.4.7" in raw
    assert b"Diagnostic-Code: smtp; 451 4.5.0 Protocol error: reply from 127.0.0.1:" in raw
    assert b"'this is not an smtp reply'" in raw
    wait_for(lambda: queue_is_empty(server))


# ------------------------------------------------------- reply text kept and passed on


def test_control_characters_of_a_reply_never_reach_the_queue(
    server_factory, sink: SinkServer
) -> None:
    sink.default = Behaviour(rcpt=Reply(451, "4.3.0", NASTY_TEXT))
    server = server_factory(routed_to(sink.port))
    send(server, "sender@remote.test", ["bob@example.test"], "Subject: x\r\n\r\nb\r\n")

    def stored() -> str | None:
        bob = recipients(server).get("bob@elsewhere.test")
        deferred = bob is not None and bob.state.value == "deferred" and bob.last_reply
        return str(bob.last_reply) if deferred else None

    reply = wait_for(stored)
    assert reply == "451 4.3.0 no such[2J user here forged lineevil end"
    assert isinstance(reply, str) and reply.isprintable()


def test_control_characters_of_a_reply_never_reach_a_bounce(
    server_factory, sink: SinkServer
) -> None:
    sink.default = Behaviour(rcpt=Reply(550, "5.1.1", NASTY_TEXT))
    server = server_factory(routed_to(sink.port))
    send(server, "alice@example.test", ["bob@example.test"], "Subject: x\r\n\r\nb\r\n")
    [raw] = wait_for(lambda: maildir_messages(server.data_dir, "alice@example.test"), timeout=30)
    text = raw.decode("utf-8")
    assert "Diagnostic-Code: smtp; 550 5.1.1 no such[2J user here forged lineevil end\r\n" in text
    assert not [c for c in NON_PRINTABLE if c in text]


# ------------------------------------------------------------ where a bounce may go


def literal_world(sink: SinkServer, extra_route: str = "") -> str:
    """The next hop refuses bob; every other SMTP connection (an address literal's
    too, through [delivery] port) also reaches the sink, so a bounce would arrive there."""
    sink.default = Behaviour(rcpt={"bob@elsewhere.test": Reply(550, "5.1.1", "No such user")})
    return f"""
[routes]
"elsewhere.test" = "127.0.0.1:{sink.port}"
{extra_route}
[delivery]
port = {sink.port}
[queue]
retry = [3600]
"""


def test_a_bounce_to_an_address_literal_is_dropped(
    server_factory, sink: SinkServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailwright.delivery")
    server = server_factory(literal_world(sink))
    send(server, "x@[127.0.0.1]", ["bob@example.test"], "Subject: forged\r\n\r\nb\r\n")

    def dropped() -> list[str]:
        return [r.getMessage() for r in caplog.records if "event=bounce-dropped" in r.getMessage()]

    [line] = wait_for(dropped)
    assert "reason=" in line and "address literal" in line
    wait_for(lambda: queue_is_empty(server))  # bob's result is recorded; no bounce was queued
    assert [m for m in sink.messages if m.sender is None] == []
    assert not any("event=bounce " in r.getMessage() for r in caplog.records)


def test_a_route_for_the_address_literal_lets_its_bounce_through(
    server_factory, sink: SinkServer
) -> None:
    server = server_factory(literal_world(sink, f'"[127.0.0.1]" = "127.0.0.1:{sink.port}"'))
    send(server, "x@[127.0.0.1]", ["bob@example.test"], "Subject: expected\r\n\r\nb\r\n")
    [bounce] = sink.wait_for_messages(1, timeout=30)
    assert bounce.sender is None
    assert [str(r) for r in bounce.recipients] == ["x@[127.0.0.1]"]
    assert b"Final-Recipient: rfc822; bob@elsewhere.test" in bounce.body
    wait_for(lambda: queue_is_empty(server))


# ------------------------------------------------------------ what a bounce carries

BODY_MARKER = "BODY-MARKER-5e1f"


def padded_header(n: int) -> str:
    """About 1 KiB in one field of four folded lines, ending with its own end mark."""
    fold = "\r\n\t".join("p" * 250 for _ in range(3))
    return f"X-Pad-{n:02d}: {fold}\r\n\tend-{n:02d}\r\n"


def test_a_bounce_returns_at_most_16_kib_of_whole_headers_and_no_body(
    server_factory, sink: SinkServer
) -> None:
    sink.default = Behaviour(rcpt=Reply(550, "5.1.1", "No such user"))
    server = server_factory(routed_to(sink.port))
    headers = "Subject: big headers\r\n" + "".join(padded_header(n) for n in range(40))
    send(
        server,
        "alice@example.test",
        ["bob@example.test"],
        headers + f"\r\n{BODY_MARKER}\r\n" + "body line\r\n" * 2000,
    )
    [raw] = wait_for(lambda: maildir_messages(server.data_dir, "alice@example.test"), timeout=30)
    assert BODY_MARKER.encode() not in raw
    report = email.message_from_bytes(raw)
    boundary = report.get_boundary()
    assert boundary is not None
    start = raw.index(b"Content-Type: text/rfc822-headers\r\n\r\n") + 37
    # The part ends with the CRLF of its last field; the delimiter's own CRLF follows.
    returned = raw[start : raw.index(f"\r\n--{boundary}--".encode(), start)]
    assert 8 * 1024 < len(returned) <= 16 * 1024
    assert b"Subject: big headers\r\n" in returned
    present = [n for n in range(40) if f"X-Pad-{n:02d}: ".encode() in returned]
    assert present == list(range(len(present))) and 0 < len(present) < 40
    for n in present:  # each field whole, folded lines and all
        assert padded_header(n).encode() in returned
    assert returned.endswith(padded_header(present[-1]).encode())
