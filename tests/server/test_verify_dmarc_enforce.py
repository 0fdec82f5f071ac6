"""``[verify] dmarc = "enforce"``: the From domain's policy applied (RFC 7489 6.7).

A real server on loopback, its DNS a loopback server holding SPF and DMARC
records; what was kept is read from the Maildirs and from a sink peer that
receives the forwarded copy.  SPF passes for 127.0.0.1 at ``spf.test`` only,
so mail from any other domain's From: fails DMARC unless it is signed.
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable, Iterator
from pathlib import Path

import dkim
import pytest

from mailwright.mailauth.dkim import (
    generate_private_key,
    public_key_value,
    record_line,
    record_text,
)
from tests.dns_server import LoopbackDns
from tests.helpers import RunningServer, maildir_messages, wait_for
from tests.sink import SinkServer

PEM = generate_private_key("rsa")

ZONE = f"""
spf.test.                60 IN TXT "v=spf1 ip4:127.0.0.1 -all"
_dmarc.reject.test.      60 IN TXT "v=DMARC1; p=reject"
_dmarc.quarantine.test.  60 IN TXT "v=DMARC1; p=quarantine"
_dmarc.monitor.test.     60 IN TXT "v=DMARC1; p=none"
_dmarc.parent.test.      60 IN TXT "v=DMARC1; p=none; sp=reject"
_dmarc.broken.test.      60 IN TXT "v=DMARC1; p=reject"
{record_line("reject.test", "s1", record_text(*public_key_value(PEM)))}
"""


@pytest.fixture(scope="module")
def dns() -> Iterator[LoopbackDns]:
    server = LoopbackDns(ZONE, servfail={"s9._domainkey.broken.test."})
    yield server
    server.stop()


@pytest.fixture
def server(
    server_factory: Callable[..., RunningServer], dns: LoopbackDns, sink: SinkServer
) -> RunningServer:
    return server_factory(
        f'[dns]\nservers = ["{dns.address}"]\ntimeout = 2\n'
        '[verify]\ndmarc = "enforce"\n'
        f'[routes]\n"elsewhere.test" = "127.0.0.1:{sink.port}"\n'
        "[queue]\nretry = [1]\nmax_age = 60\n"
    )


def message(author: str, subject: str = "dmarc") -> bytes:
    return (
        f"From: Sam <{author}>\r\nTo: alice@example.test\r\nSubject: {subject}\r\n"
        "\r\nHello.\r\n"
    ).encode()


def junk(data_dir: Path, address: str) -> list[bytes]:
    local, domain = address.split("@")
    folder = data_dir / "mailboxes" / domain / local / ".Junk"
    new = folder / "new"
    return [p.read_bytes() for p in sorted(new.iterdir())] if new.is_dir() else []


def send(server: RunningServer, rcpts: list[str], body: bytes) -> tuple[int, bytes]:
    """The reply to the end of DATA (a refusal is a reply here, not an exception)."""
    with smtplib.SMTP(server.host, server.port, local_hostname="client.test", timeout=30) as c:
        c.ehlo()
        assert c.mail("sam@spf.test")[0] == 250
        for rcpt in rcpts:
            assert c.rcpt(rcpt)[0] in (250, 251)  # 251: forwarded (RFC 5321 3.4)
        reply = c.data(body)
        assert c.noop()[0] == 250  # the session goes on after a refusal
        return reply


def test_p_reject_is_refused_after_data_with_5_7_26_and_nothing_is_kept(
    server: RunningServer,
) -> None:
    code, text = send(server, ["alice@example.test"], message("sam@reject.test"))
    assert (code, text) == (
        550,
        b"5.7.26 DMARC policy of reject.test rejects this message: no aligned SPF or DKIM pass",
    )
    # Proof that nothing was kept: a later message, accepted, is the only one there.
    assert send(server, ["alice@example.test"], message("sam@spf.test", "later"))[0] == 250
    [stored] = wait_for(lambda: maildir_messages(server.data_dir, "alice@example.test"))
    assert b"Subject: later" in stored
    assert junk(server.data_dir, "alice@example.test") == []


def test_an_aligned_dkim_pass_is_accepted_under_p_reject(server: RunningServer) -> None:
    body = message("sam@reject.test")
    signed = dkim.sign(body, b"s1", b"reject.test", PEM) + body
    assert send(server, ["alice@example.test"], signed)[0] == 250
    [stored] = wait_for(lambda: maildir_messages(server.data_dir, "alice@example.test"))
    assert b"dmarc=pass" in stored


def test_p_quarantine_files_local_copies_in_junk_and_forwards_the_rest_as_they_are(
    server: RunningServer, sink: SinkServer
) -> None:
    """alice gets it in .Junk, not in her inbox; bob's forwarded copy goes out with our
    verdict on top, for the next hop to judge."""
    send(server, ["alice@example.test", "bob@example.test"], message("sam@quarantine.test"))
    [filed] = wait_for(lambda: junk(server.data_dir, "alice@example.test"))
    assert b"dmarc=fail (p=quarantine) header.from=quarantine.test" in filed
    mailbox = server.data_dir / "mailboxes" / "example.test" / "alice"
    assert (mailbox / ".Junk" / "maildirfolder").is_file()  # a Maildir++ folder
    [forwarded] = sink.wait_for_messages(1)
    assert b"dmarc=fail (p=quarantine)" in forwarded.body
    # The inbox got nothing: a later message is the only one there.
    send(server, ["alice@example.test"], message("sam@spf.test", "later"))
    [inbox] = wait_for(lambda: maildir_messages(server.data_dir, "alice@example.test"))
    assert b"Subject: later" in inbox


def test_p_none_only_records(server: RunningServer) -> None:
    assert send(server, ["alice@example.test"], message("sam@monitor.test"))[0] == 250
    [stored] = wait_for(lambda: maildir_messages(server.data_dir, "alice@example.test"))
    assert b"dmarc=fail (p=none) header.from=monitor.test" in stored


def test_sp_applies_to_a_subdomain_and_p_to_the_domain_itself(server: RunningServer) -> None:
    """RFC 7489 6.3: sp= is the policy for subdomains of the organizational domain."""
    code, text = send(server, ["alice@example.test"], message("sam@sub.parent.test"))
    assert code == 550 and b"DMARC policy of sub.parent.test" in text
    assert send(server, ["alice@example.test"], message("sam@parent.test"))[0] == 250
    [stored] = wait_for(lambda: maildir_messages(server.data_dir, "alice@example.test"))
    assert b"header.from=parent.test" in stored


def test_a_dns_failure_of_the_aligned_key_is_never_a_refusal(server: RunningServer) -> None:
    """The only aligned check failed for now: temperror, accepted and recorded (a retry
    might pass; a permanent refusal for a temporary failure would lose the mail)."""
    body = message("sam@broken.test")
    signed = dkim.sign(body, b"s9", b"broken.test", PEM) + body
    assert send(server, ["alice@example.test"], signed)[0] == 250
    [stored] = wait_for(lambda: maildir_messages(server.data_dir, "alice@example.test"))
    assert b"dmarc=temperror" in stored


def test_an_aligned_signature_below_five_others_still_counts(server: RunningServer) -> None:
    """Only 5 signatures are checked (MAX_VERIFIED_SIGNATURES); the aligned ones are
    chosen first, so junk signatures on top cannot hide the one DMARC needs."""
    body = message("sam@reject.test")
    signed = dkim.sign(body, b"s1", b"reject.test", PEM) + body
    for n in range(6):
        signed = dkim.sign(signed, b"s1", f"junk{n}.test".encode(), PEM) + signed
    assert send(server, ["alice@example.test"], signed)[0] == 250
    [stored] = wait_for(lambda: maildir_messages(server.data_dir, "alice@example.test"))
    assert b"dkim=pass header.d=reject.test" in stored and b"dmarc=pass" in stored
    assert stored.count(b"header.d=junk") == 4  # 5 checked in all: the aligned one first
