"""SRS on a real server: forwarded mail leaves with an SRS sender, bounces to it come back.

A sink peer on loopback plays every other server; srslib, with the same secret,
plays the receiver checking our SRS addresses and the sender of bounces to them.
"""

from __future__ import annotations

import smtplib
import time
from collections.abc import Callable

import pytest
import srslib

from mailwright.protocol.reply import Reply
from tests.helpers import RunningServer, wait_for
from tests.sink import Behaviour, ReceivedMessage, SinkServer

SECRET = "forwarding-secret-0123456789"
SRS_DOMAIN = "srs.example.test"

BASE = """
hostname = "mx.example.test"
data_dir = "data"
[smtp]
listen = ["127.0.0.1:0"]
[domains]
local = ["example.test"]
[mailboxes]
"alice@example.test" = {}
[aliases]
"team@example.test" = ["alice@example.test", "dave@elsewhere.test"]
[forward]
"bob@example.test" = "bob@elsewhere.test"
[relay]
networks = ["127.0.0.1/32"]
"""


def config(sink: SinkServer, srs: bool = True, retry: int = 1) -> str:
    table = f'[srs]\nsecret = "{SECRET}"\ndomain = "{SRS_DOMAIN}"\n' if srs else ""
    return f"""
[routes]
"elsewhere.test" = "127.0.0.1:{sink.port}"
"remote.test" = "127.0.0.1:{sink.port}"
[queue]
retry = [{retry}]
max_age = {retry * 60}
{table}"""


@pytest.fixture
def start(server_factory, sink: SinkServer) -> Callable[..., RunningServer]:
    def started(srs: bool = True, retry: int = 1) -> RunningServer:
        return server_factory(config(sink, srs, retry), base=BASE)  # type: ignore[no-any-return]

    return started


def lib(now: float | None = None) -> srslib.SRS:
    srs = srslib.SRS(SECRET)
    if now is not None:
        srs._time_fn = lambda: now  # srslib's clock hook
    return srs


def send(
    server: RunningServer, sender: str, rcpts: list[str], body: str = "Subject: s\r\n\r\nb\r\n"
):
    with smtplib.SMTP(server.host, server.port, timeout=10) as s:
        assert s.sendmail(sender, rcpts, body) == {}


def drained(server: RunningServer) -> None:
    wait_for(lambda: server.call(lambda: server.app.store.list()) == [], timeout=30)


def envelopes(messages: list[ReceivedMessage]) -> set[tuple[str, tuple[str, ...]]]:
    return {(str(m.sender or ""), tuple(str(r) for r in m.recipients)) for m in messages}


def test_forwarded_mail_leaves_with_an_srs_sender_srslib_reverses(start, sink) -> None:
    server = start()
    send(server, "Someone@Remote.test", ["bob@example.test"])
    [msg] = sink.wait_for_messages(1)
    assert [str(r) for r in msg.recipients] == ["bob@elsewhere.test"]
    assert msg.sender is not None and msg.sender.domain == SRS_DOMAIN
    assert msg.sender.local_part.startswith("SRS0=")
    assert lib().reverse(str(msg.sender)) == "Someone@Remote.test"
    drained(server)


def test_an_alias_to_a_remote_address_is_forwarded_too(start, sink) -> None:
    server = start()
    send(server, "someone@remote.test", ["team@example.test"])
    [msg] = sink.wait_for_messages(1)
    assert [str(r) for r in msg.recipients] == ["dave@elsewhere.test"]
    assert lib().reverse(str(msg.sender)) == "someone@remote.test"


def test_relayed_recipients_keep_the_sender_beside_forwarded_ones(start, sink) -> None:
    """One message, one domain, two senders: two transactions to the same host."""
    server = start()
    send(server, "someone@remote.test", ["carl@elsewhere.test", "bob@example.test"])
    first, second = sink.wait_for_messages(2)
    by_rcpt = {str(m.recipients[0]): m for m in (first, second)}
    assert str(by_rcpt["carl@elsewhere.test"].sender) == "someone@remote.test"
    forwarded = by_rcpt["bob@elsewhere.test"]
    assert lib().reverse(str(forwarded.sender)) == "someone@remote.test"
    drained(server)


@pytest.mark.parametrize("sender", ["", "alice@example.test"])
def test_null_and_local_senders_are_not_rewritten(start, sink, sender: str) -> None:
    server = start()
    send(server, sender, ["bob@example.test"])
    [msg] = sink.wait_for_messages(1)
    assert str(msg.sender or "") == sender


def test_without_a_secret_nothing_is_rewritten(start, sink) -> None:
    server = start(srs=False)
    send(server, "someone@remote.test", ["bob@example.test"])
    [msg] = sink.wait_for_messages(1)
    assert str(msg.sender) == "someone@remote.test"


def test_rcpt_to_a_valid_srs_address_is_relayed_to_the_original(start, sink) -> None:
    """A bounce to our SRS address (from srslib, as a receiver would have it) goes home."""
    server = start()
    srs_address = lib().forward("orig.sender@remote.test", SRS_DOMAIN)
    with smtplib.SMTP(server.host, server.port, timeout=10) as s:
        s.ehlo("bouncer.example")
        s.mail("")
        code, text = s.rcpt(srs_address)
        assert code == 250, text
        assert s.data("Subject: Undelivered Mail\r\n\r\nsorry\r\n")[0] == 250
    [msg] = sink.wait_for_messages(1)
    assert envelopes([msg]) == {("", ("orig.sender@remote.test",))}
    drained(server)


@pytest.mark.parametrize(
    "make, text",
    [
        (lambda: "SRS0=abcd=AA=remote.test=victim@" + SRS_DOMAIN, "invalid SRS address"),
        (
            lambda: srslib.SRS("another-secret-entirely").forward("v@remote.test", SRS_DOMAIN),
            "invalid SRS address",
        ),
        (lambda: lib(time.time() - 30 * 86400).forward("v@remote.test", SRS_DOMAIN), "expired"),
        (lambda: "SRS0=abcd@" + SRS_DOMAIN, "malformed SRS address"),
    ],
)
def test_forged_or_expired_srs_addresses_are_refused_with_the_reason(
    start, sink, make: Callable[[], str], text: str
) -> None:
    server = start(srs=True)
    with smtplib.SMTP(server.host, server.port, timeout=10) as s:
        s.ehlo("forger.example")
        s.mail("")
        code, reply = s.rcpt(make())
        assert (code, reply.decode()[:5]) == (550, "5.1.1")
        assert text in reply.decode()
        # The session goes on: a good recipient after it is still accepted.
        assert s.rcpt("alice@example.test")[0] == 250


def test_a_bounce_of_forwarded_mail_goes_to_the_original_sender(start, sink) -> None:
    """mailwright's own DSN uses the queued sender, never the SRS address it sent as."""
    sink.default = Behaviour(rcpt={"bob@elsewhere.test": Reply(550, "5.1.1", "No such user")})
    server = start()
    send(server, "someone@remote.test", ["bob@example.test"], "Subject: doomed\r\n\r\nb\r\n")
    [dsn] = sink.wait_for_messages(1)
    assert envelopes([dsn]) == {("", ("someone@remote.test",))}
    assert b"Final-Recipient: rfc822; bob@elsewhere.test" in dsn.body
    drained(server)


def test_the_queue_keeps_the_original_sender_and_a_restart_still_rewrites(start, sink) -> None:
    """The SRS sender is made at each attempt; what is stored is the original."""
    sink.script(Behaviour(rcpt=Reply(451, "4.3.0", "Try again later")))
    server = start(retry=3600)
    send(server, "someone@remote.test", ["bob@example.test"])

    def deferred() -> list[object]:
        queued = server.call(lambda: server.app.store.list())
        return [m for m in queued if m.recipients[0].attempts >= 1]  # type: ignore[attr-defined]

    [message] = wait_for(deferred)
    assert str(message.sender) == "someone@remote.test"  # type: ignore[attr-defined]
    server.stop()
    again = start(retry=3600)  # the same data_dir
    again.call(lambda: again.app.store.retry_now())
    [msg] = sink.wait_for_messages(1)
    assert lib().reverse(str(msg.sender)) == "someone@remote.test"
    drained(again)
