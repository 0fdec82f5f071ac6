"""SPF and DKIM verdicts (mailauth/verify.py) and the A-R header (mailauth/results.py),
every lookup answered by a DNS server on loopback (tests/dns_server.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import dkim
import pytest

from mailwright.mailauth.dkim import (
    generate_private_key,
    public_key_value,
    record_line,
    record_text,
)
from mailwright.mailauth.dns import Resolver
from mailwright.mailauth.results import authserv_id, header, remove_ours
from mailwright.mailauth.verify import DkimVerdict, SpfVerdict, check_dkim, check_spf
from tests.dns_server import LoopbackDns, silent_dns
from tests.mailauth.keys import huge_exponent_rsa_key

PEM = generate_private_key("rsa")
KEY_LINE = record_line("signed.test", "s1", record_text(*public_key_value(PEM)))
COSTLY = huge_exponent_rsa_key()
COSTLY_LINE = record_line("costly.test", "s1", record_text(*public_key_value(COSTLY)))

ZONE = f"""
pass.test.      60 IN TXT "v=spf1 ip4:127.0.0.1 -all"
fail.test.      60 IN TXT "v=spf1 ip4:192.0.2.1 -all"
soft.test.      60 IN TXT "v=spf1 ip4:192.0.2.1 ~all"
neutral.test.   60 IN TXT "v=spf1 ?all"
malformed.test. 60 IN TXT "v=spf1 ip4:300.1.2.3 bogus:x -all"
two.test.       60 IN TXT "v=spf1 -all"
two.test.       60 IN TXT "v=spf1 +all"
mx.test.        60 IN MX 10 mail.mx.test.
mx.test.        60 IN TXT "v=spf1 mx -all"
mail.mx.test.   60 IN A 127.0.0.1
inc.test.       60 IN TXT "v=spf1 include:pass.test -all"
helo.test.      60 IN TXT "v=spf1 a -all"
helo.test.      60 IN A 127.0.0.1
{KEY_LINE}
{COSTLY_LINE}
s1._domainkey.badkey.test. 60 IN TXT "v=DKIM1; k=rsa; p=!!!not*base64!!!"
"""

MESSAGE = (
    b"From: Sam <sam@signed.test>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: checked on the way in\r\n"
    b"\r\n"
    b"Hello Alice.\r\n"
)


def sign(message: bytes, domain: str, selector: str = "s1", key: bytes = PEM) -> bytes:
    signature = dkim.sign(message, selector.encode(), domain.encode(), key)
    return signature + message


@pytest.fixture(scope="module")
def dns() -> Iterator[LoopbackDns]:
    server = LoopbackDns(ZONE, servfail={"servfail.test.", "s1._domainkey.servfail.test."})
    yield server
    server.stop()


@pytest.fixture
def resolver(dns: LoopbackDns) -> Resolver:
    return Resolver([dns.address], timeout=5.0)


@pytest.fixture
def silent_resolver() -> Iterator[Resolver]:
    with silent_dns() as address:
        yield Resolver([address], timeout=0.5)


def spf(resolver: Resolver, sender: str | None, helo: str = "client.test") -> SpfVerdict:
    return asyncio.run(check_spf(resolver, "127.0.0.1", sender, helo))


@pytest.mark.parametrize(
    ("domain", "result"),
    [
        ("pass.test", "pass"),
        ("inc.test", "pass"),
        ("mx.test", "pass"),
        ("fail.test", "fail"),
        ("soft.test", "softfail"),
        ("neutral.test", "neutral"),
        ("nothing.test", "none"),
        ("malformed.test", "permerror"),
        ("two.test", "permerror"),  # RFC 7208 4.5: more than one record
        ("servfail.test", "temperror"),
    ],
)
def test_spf_results(resolver: Resolver, domain: str, result: str) -> None:
    verdict = spf(resolver, f"someone@{domain}")
    assert (verdict.result, verdict.identity, verdict.domain) == (result, "mailfrom", domain)


def test_spf_null_sender_checks_the_helo_name(resolver: Resolver) -> None:
    verdict = spf(resolver, None, helo="helo.test")
    assert (verdict.result, verdict.identity, verdict.domain) == ("pass", "helo", "helo.test")


def test_spf_dns_that_never_answers_is_temperror(silent_resolver: Resolver) -> None:
    assert spf(silent_resolver, "someone@pass.test").result == "temperror"


def dkim_verdicts(resolver: Resolver, message: bytes) -> list[DkimVerdict]:
    return list(asyncio.run(check_dkim(resolver, message)))


def test_dkim_pass_and_altered_body_fail(resolver: Resolver) -> None:
    signed = sign(MESSAGE, "signed.test")
    [good] = dkim_verdicts(resolver, signed)
    assert (good.result, good.domain, good.selector) == ("pass", "signed.test", "s1")
    [bad] = dkim_verdicts(resolver, signed.replace(b"Hello Alice.", b"Hello Mallory."))
    assert (bad.result, bad.domain, bad.selector) == ("fail", "signed.test", "s1")


def test_dkim_every_signature_reported(resolver: Resolver) -> None:
    twice = sign(sign(MESSAGE, "signed.test"), "badkey.test")
    verdicts = dkim_verdicts(resolver, twice)
    assert [(v.result, v.domain) for v in verdicts] == [
        ("permerror", "badkey.test"),  # bad base64 in the key record
        ("pass", "signed.test"),
    ]


def test_dkim_missing_key_permerror_and_dns_failure_temperror(resolver: Resolver) -> None:
    [missing] = dkim_verdicts(resolver, sign(MESSAGE, "nokey.test"))
    assert missing.result == "permerror"
    [failed] = dkim_verdicts(resolver, sign(MESSAGE, "servfail.test"))
    assert failed.result == "temperror"


def test_dkim_key_with_a_huge_public_exponent_is_not_used(resolver: Resolver) -> None:
    """A key record from the DNS whose exponent would make dkimpy's pure-Python pow() (which
    holds the GIL, so the event loop too) run for seconds is refused before it is used,
    even though the signature is good."""
    [verdict] = dkim_verdicts(resolver, sign(MESSAGE, "costly.test", key=COSTLY))
    assert (verdict.result, verdict.domain) == ("permerror", "costly.test")
    assert "exponent" in verdict.reason


def test_dkim_unsigned_and_malformed_signature(resolver: Resolver) -> None:
    assert dkim_verdicts(resolver, MESSAGE) == []
    junk = b"DKIM-Signature: v=1; a=rsa-sha256; d=signed.test; b=???\r\n" + MESSAGE
    [verdict] = dkim_verdicts(resolver, junk)
    assert verdict.result == "permerror"


def test_dkim_signatures_checked_are_bounded(resolver: Resolver) -> None:
    message = MESSAGE
    for _ in range(8):
        message = sign(message, "signed.test")
    verdicts = asyncio.run(check_dkim(resolver, message, limit=3))
    assert len(verdicts) == 3


def test_header_names_each_result() -> None:
    text = header(
        "mx.example.test",
        SpfVerdict("pass", "mailfrom", "pass.test"),
        [DkimVerdict("fail", "signed.test", "s1"), DkimVerdict("permerror", "a b;c", None)],
    )
    assert text == (
        b"Authentication-Results: mx.example.test;\r\n"
        b"\tspf=pass smtp.mailfrom=pass.test;\r\n"
        b"\tdkim=fail header.d=signed.test header.s=s1;\r\n"
        b"\tdkim=permerror\r\n"
    )
    assert header("mx.example.test", None, []) == (
        b"Authentication-Results: mx.example.test;\r\n\tdkim=none\r\n"
    )


@pytest.mark.parametrize(
    "value",
    [
        b" mx.example.test; spf=pass",
        b" MX.Example.TEST (forged); dkim=pass",
        b' (comment) "mx.example.test"; none',
        b"\r\n\tmx.example.test;\r\n\tspf=pass",
        b" mx.example.test 1; none",
    ],
)
def test_authserv_id_read_leniently(value: bytes) -> None:
    assert authserv_id(value) == b"mx.example.test"


def test_remove_ours_keeps_others_and_the_body() -> None:
    message = (
        b"Authentication-Results: mx.example.test;\r\n\tspf=pass smtp.mailfrom=x.test\r\n"
        b"Subject: s\r\n"
        b"authentication-results: other.test; spf=fail\r\n"
        b"AUTHENTICATION-RESULTS : MX.EXAMPLE.TEST; dkim=pass\r\n"
        b"\r\n"
        b"Authentication-Results: mx.example.test; in the body stays\r\n"
    )
    kept, removed = remove_ours(message, "mx.example.test")
    assert removed == 2
    assert kept == (
        b"Subject: s\r\n"
        b"authentication-results: other.test; spf=fail\r\n"
        b"\r\n"
        b"Authentication-Results: mx.example.test; in the body stays\r\n"
    )
