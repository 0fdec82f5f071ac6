"""``[verify] spf/dkim = "record"``: a real server on loopback, its DNS a loopback server;
the verdicts are read from the message stored in the Maildir."""

from __future__ import annotations

import smtplib
from collections.abc import Callable, Iterator

import dkim
import pytest

from mailwright.mailauth.dkim import (
    generate_private_key,
    public_key_value,
    record_line,
    record_text,
)
from tests.dns_server import LoopbackDns
from tests.helpers import RawClient, RunningServer, maildir_messages, wait_for

PEM = generate_private_key("rsa")

ZONE = f"""
pass.test.      60 IN TXT "v=spf1 ip4:127.0.0.1 -all"
fail.test.      60 IN TXT "v=spf1 ip4:192.0.2.1 -all"
helo.test.      60 IN TXT "v=spf1 a -all"
helo.test.      60 IN A 127.0.0.1
{record_line("pass.test", "s1", record_text(*public_key_value(PEM)))}
_dmarc.pass.test. 60 IN TXT "v=DMARC1; p=reject; rua=mailto:dmarc@pass.test"
"""

FORGED = "Authentication-Results: MX.EXAMPLE.TEST; spf=pass smtp.mailfrom=pass.test\r\n"
OTHERS = "Authentication-Results: relay.other.test; spf=fail smtp.mailfrom=pass.test\r\n"
BODY = (
    "From: Sam <sam@pass.test>\r\n"
    "To: alice@example.test\r\n"
    "Subject: verdicts\r\n"
    "\r\n"
    "Hello Alice.\r\n"
)


@pytest.fixture(scope="module")
def dns() -> Iterator[LoopbackDns]:
    server = LoopbackDns(ZONE, servfail={"broken.test."})
    yield server
    server.stop()


def verifying(
    server_factory: Callable[..., RunningServer], dns: LoopbackDns, extra: str = ""
) -> RunningServer:
    return server_factory(
        f'[dns]\nservers = ["{dns.address}"]\ntimeout = 2\n'
        f'[verify]\nspf = "record"\ndkim = "record"\n' + extra
    )


def deliver(server: RunningServer, sender: str, message: bytes, helo: str = "client.test") -> bytes:
    with smtplib.SMTP(server.host, server.port, local_hostname=helo, timeout=30) as client:
        assert client.sendmail(sender, ["alice@example.test"], message) == {}
    [stored] = wait_for(lambda: maildir_messages(server.data_dir, "alice@example.test"))
    return stored  # type: ignore[no-any-return]


def headers(stored: bytes) -> list[bytes]:
    """The stored header fields, unfolded, in order."""
    head = stored.split(b"\r\n\r\n", 1)[0]
    return head.replace(b"\r\n\t", b" ").split(b"\r\n")


def test_pass_verdicts_recorded_under_our_received_and_forgery_removed(
    server_factory: Callable[..., RunningServer], dns: LoopbackDns
) -> None:
    server = verifying(server_factory, dns)
    message = dkim.sign((FORGED + OTHERS + BODY).encode(), b"s1", b"pass.test", PEM)
    message += (FORGED + OTHERS + BODY).encode()
    stored = deliver(server, "sam@pass.test", message)
    fields = headers(stored)
    names = [f.split(b":", 1)[0].lower() for f in fields]
    at = names.index(b"received")
    assert fields[at + 1] == (
        b"Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=pass.test; "
        b"dkim=pass header.d=pass.test header.s=s1"
    )
    assert names.count(b"authentication-results") == 2  # ours, and relay.other.test's
    assert OTHERS.rstrip().encode() in fields
    assert FORGED.rstrip().encode() not in fields
    assert stored.endswith(BODY.encode())


def test_fail_and_unsigned_recorded_and_accepted(
    server_factory: Callable[..., RunningServer], dns: LoopbackDns
) -> None:
    server = verifying(server_factory, dns)
    stored = deliver(server, "sam@fail.test", BODY.encode())
    assert (
        b"Authentication-Results: mx.example.test; spf=fail smtp.mailfrom=fail.test; dkim=none"
        in headers(stored)
    )


def test_null_sender_checks_the_helo_name(
    server_factory: Callable[..., RunningServer], dns: LoopbackDns
) -> None:
    server = verifying(server_factory, dns, '[relay]\nnetworks = ["192.0.2.0/24"]\n')
    stored = deliver(server, "", BODY.encode(), helo="helo.test")
    expected = b"Authentication-Results: mx.example.test; spf=pass smtp.helo=helo.test; dkim=none"
    assert expected in headers(stored)


def test_dns_failure_is_temperror_and_accepted(
    server_factory: Callable[..., RunningServer], dns: LoopbackDns
) -> None:
    server = verifying(server_factory, dns)
    stored = deliver(server, "sam@broken.test", BODY.encode())
    expected = (
        b"Authentication-Results: mx.example.test; spf=temperror smtp.mailfrom=broken.test; "
        b"dkim=none"
    )
    assert expected in headers(stored)


def test_trusted_clients_get_no_verdict(
    server_factory: Callable[..., RunningServer], dns: LoopbackDns
) -> None:
    server = verifying(server_factory, dns, '[relay]\nnetworks = ["127.0.0.0/8"]\n')
    stored = deliver(server, "sam@fail.test", (FORGED + BODY).encode())
    fields = headers(stored)
    assert not any(f.startswith(b"Authentication-Results: mx.example.test;") for f in fields)
    assert FORGED.rstrip().encode() in fields  # not ours to judge: left as it came


def test_only_spf_when_dkim_is_off(
    server_factory: Callable[..., RunningServer], dns: LoopbackDns
) -> None:
    server = server_factory(
        f'[dns]\nservers = ["{dns.address}"]\ntimeout = 2\n[verify]\nspf = "record"\n'
    )
    stored = deliver(server, "sam@pass.test", BODY.encode())
    assert b"Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=pass.test" in (
        headers(stored)
    )


def test_dmarc_alone_records_spf_dkim_and_dmarc(
    server_factory: Callable[..., RunningServer], dns: LoopbackDns
) -> None:
    """dmarc = "record" with spf and dkim off: DMARC needs both, so both are checked
    and reported; the signature aligned with From: passes DMARC where SPF failed."""
    server = server_factory(
        f'[dns]\nservers = ["{dns.address}"]\ntimeout = 2\n[verify]\ndmarc = "record"\n'
    )
    signed = dkim.sign(BODY.encode(), b"s1", b"pass.test", PEM) + BODY.encode()
    stored = deliver(server, "sam@fail.test", signed)
    assert (
        b"Authentication-Results: mx.example.test; spf=fail smtp.mailfrom=fail.test; "
        b"dkim=pass header.d=pass.test header.s=s1; "
        b"dmarc=pass (p=reject) header.from=pass.test policy.dmarc=reject"
    ) in headers(stored)


def test_dmarc_fail_recorded_with_the_policy_and_accepted(
    server_factory: Callable[..., RunningServer], dns: LoopbackDns
) -> None:
    server = verifying(server_factory, dns, 'dmarc = "record"\n')
    stored = deliver(server, "sam@helo.test", BODY.encode())  # SPF passes, for helo.test only
    assert (
        b"Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=helo.test; dkim=none; "
        b"dmarc=fail (p=reject) header.from=pass.test policy.dmarc=reject"
    ) in headers(stored)


def enforcing(server_factory: Callable[..., RunningServer], dns: LoopbackDns) -> RunningServer:
    return server_factory(
        f'[dns]\nservers = ["{dns.address}"]\ntimeout = 2\n[verify]\nspf = "enforce"\n'
    )


def test_spf_enforce_refuses_a_fail_at_mail_and_the_session_goes_on(
    server_factory: Callable[..., RunningServer], dns: LoopbackDns
) -> None:
    """RFC 7372 3.2: 550 5.7.23 names the domain and the client; nothing is stored."""
    server = enforcing(server_factory, dns)
    with smtplib.SMTP(server.host, server.port, local_hostname="client.test", timeout=30) as c:
        c.ehlo()
        code, text = c.mail("sam@fail.test")
        assert (code, text) == (
            550,
            b"5.7.23 SPF check failed: fail.test does not designate 127.0.0.1 as a sender",
        )
        assert c.rcpt("alice@example.test")[0] == 503  # no transaction was started
        assert c.mail("sam@pass.test")[0] == 250  # a sender whose SPF passes
        assert c.rcpt("alice@example.test")[0] == 250
        assert c.data(BODY.encode())[0] == 250
    [stored] = wait_for(lambda: maildir_messages(server.data_dir, "alice@example.test"))
    assert b"spf=pass smtp.mailfrom=pass.test" in stored


def test_spf_enforce_answers_a_dns_failure_with_451_never_550(
    server_factory: Callable[..., RunningServer], dns: LoopbackDns
) -> None:
    server = enforcing(server_factory, dns)
    with smtplib.SMTP(server.host, server.port, local_hostname="client.test", timeout=30) as c:
        c.ehlo()
        code, text = c.mail("sam@broken.test")
        assert code == 451 and text.startswith(b"4.7.24 SPF check of broken.test failed temp")


def test_spf_enforce_pipelined_rcpt_and_data_after_a_refused_mail_are_not_accepted(
    server_factory: Callable[..., RunningServer], dns: LoopbackDns
) -> None:
    """The client sends MAIL, RCPT and DATA in one write (RFC 2920): the 550 comes first,
    and what follows it is answered as out of sequence, never as a message."""
    server = enforcing(server_factory, dns)
    client = RawClient(server.host, server.port)
    client.read_reply()
    client.send(b"EHLO client.test\r\n")
    client.read_reply()
    client.send(b"MAIL FROM:<sam@fail.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    mail, rcpt, data = client.replies(3)
    assert mail.startswith("550 5.7.23") and rcpt.startswith("503") and data.startswith("503")
    client.close()
