"""DMARC verdicts (mailauth/dmarc.py, RFC 7489) from real SPF and DKIM verdicts, every
lookup answered by a DNS server on loopback (tests/dns_server.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import dkim
import pytest

from mailwright.config.schema import DMARC_MAX_FROM_OCTETS
from mailwright.mailauth.dkim import (
    generate_private_key,
    public_key_value,
    record_line,
    record_text,
)
from mailwright.mailauth.dmarc import (
    DmarcRecord,
    DmarcVerdict,
    check_dmarc,
    from_domain,
    organizational_domain,
    parse_record,
)
from mailwright.mailauth.dns import Resolver
from mailwright.mailauth.results import header
from mailwright.mailauth.verify import check_dkim, check_spf
from tests.dns_server import LoopbackDns

PEM = generate_private_key("rsa")
KEY = record_text(*public_key_value(PEM))

ZONE = f"""
{record_line("signed.test", "s1", KEY)}
{record_line("mail.signed.test", "s1", KEY)}
_dmarc.signed.test.   60 IN TXT "v=DMARC1; p=reject"
mail.spf.test.        60 IN TXT "v=spf1 ip4:127.0.0.1 -all"
_dmarc.spf.test.      60 IN TXT "v=DMARC1; p=quarantine; zz=unknown; rua=mailto:d@spf.test"
mail.strict.test.     60 IN TXT "v=spf1 ip4:127.0.0.1 -all"
{record_line("mail.strict.test", "s1", KEY)}
_dmarc.strict.test.   60 IN TXT "v=DMARC1; p=reject; aspf=s; adkim=s"
_dmarc.org.test.      60 IN TXT "v=DMARC1; p=none; sp=quarantine"
_dmarc.junk.test.     60 IN TXT "v=DMARC1; p=bogus; this is junk"
_dmarc.late.test.     60 IN TXT "p=reject; v=DMARC1"
_dmarc.two.test.      60 IN TXT "v=DMARC1; p=reject"
_dmarc.two.test.      60 IN TXT "v=DMARC1; p=none"
_dmarc.keyless.test.  60 IN TXT "v=DMARC1; p=reject"
other.test.           60 IN TXT "v=spf1 ip4:127.0.0.1 -all"
"""


@pytest.fixture(scope="module")
def dns() -> Iterator[LoopbackDns]:
    server = LoopbackDns(ZONE, servfail={"_dmarc.broken.test.", "s1._domainkey.keyless.test."})
    yield server
    server.stop()


@pytest.fixture
def resolver(dns: LoopbackDns) -> Resolver:
    return Resolver([dns.address], timeout=5.0)


def message(author: str, signer: str | None = None) -> bytes:
    body = (
        f"From: Sam <{author}>\r\nTo: alice@example.test\r\nSubject: dmarc\r\n\r\nHello.\r\n"
    ).encode()
    if signer is None:
        return body
    return dkim.sign(body, b"s1", signer.encode(), PEM) + body


def verdict(resolver: Resolver, msg: bytes, sender: str = "bounce@other.test") -> DmarcVerdict:
    """SPF for ``sender`` from 127.0.0.1, DKIM of ``msg``, then DMARC: as the server does."""

    async def run() -> DmarcVerdict:
        spf = await check_spf(resolver, "127.0.0.1", sender, "client.test")
        signatures = await check_dkim(resolver, msg)
        return await check_dmarc(resolver, msg, spf, signatures)

    return asyncio.run(run())


def test_pass_via_aligned_dkim(resolver: Resolver) -> None:
    # SPF passes for other.test (not aligned); the signature of signed.test is.
    result = verdict(resolver, message("sam@signed.test", signer="signed.test"))
    assert (result.result, result.from_domain, result.policy) == ("pass", "signed.test", "reject")


def test_pass_via_relaxed_dkim_of_a_subdomain(resolver: Resolver) -> None:
    result = verdict(resolver, message("sam@signed.test", signer="mail.signed.test"))
    assert result.result == "pass"


def test_pass_via_aligned_spf_relaxed_subdomain_mail_from(resolver: Resolver) -> None:
    result = verdict(resolver, message("sam@spf.test"), sender="bounce@mail.spf.test")
    assert (result.result, result.policy) == ("pass", "quarantine")  # unknown tags ignored


def test_fail_with_reject_policy_recorded(resolver: Resolver) -> None:
    result = verdict(resolver, message("sam@signed.test"))  # SPF passes for other.test only
    assert (result.result, result.policy) == ("fail", "reject")
    line = header("mx.example.test", None, None, result)
    assert line == (
        b"Authentication-Results: mx.example.test;\r\n"
        b"\tdmarc=fail (p=reject) header.from=signed.test policy.dmarc=reject\r\n"
    )


def test_signature_of_another_domain_is_not_aligned(resolver: Resolver) -> None:
    result = verdict(resolver, message("sam@signed.test", signer="mail.strict.test"))
    assert result.result == "fail"


def test_strict_alignment_fails_where_relaxed_passes(resolver: Resolver) -> None:
    # The same subdomain SPF pass and subdomain signature that pass under relaxed alignment.
    msg = message("sam@strict.test", signer="mail.strict.test")
    result = verdict(resolver, msg, sender="bounce@mail.strict.test")
    assert (result.result, result.policy) == ("fail", "reject")
    relaxed = verdict(resolver, message("sam@spf.test"), sender="bounce@mail.spf.test")
    assert relaxed.result == "pass"


def test_no_record_is_none(resolver: Resolver) -> None:
    result = verdict(resolver, message("sam@nothing.test"))
    assert (result.result, result.from_domain, result.policy) == ("none", "nothing.test", None)
    assert header("mx", None, None, result).endswith(b"dmarc=none header.from=nothing.test\r\n")


def test_subdomain_from_falls_back_to_organizational_record_and_its_sp(
    resolver: Resolver,
) -> None:
    result = verdict(resolver, message("sam@news.org.test"))
    assert (result.result, result.from_domain, result.policy) == (
        "fail",
        "news.org.test",
        "quarantine",  # sp= of org.test's record, not its p=none
    )
    assert "_dmarc.org.test" in result.reason


@pytest.mark.parametrize(
    "domain",
    [
        "junk.test",  # p= not a policy: no policy, the record is ignored
        "late.test",  # v=DMARC1 not first (RFC 7489 6.6.3 step 2)
        "two.test",  # several records (6.6.3 step 5)
    ],
)
def test_unusable_records_give_none(resolver: Resolver, domain: str) -> None:
    assert verdict(resolver, message(f"sam@{domain}")).result == "none"


def test_dns_servfail_is_temperror(resolver: Resolver) -> None:
    result = verdict(resolver, message("sam@broken.test", signer="signed.test"))
    assert (result.result, result.from_domain) == ("temperror", "broken.test")


def test_aligned_check_that_failed_for_now_is_temperror_not_fail(resolver: Resolver) -> None:
    # The aligned signature's key lookup gets SERVFAIL: dkim=temperror, so no DMARC fail.
    result = verdict(resolver, message("sam@keyless.test", signer="keyless.test"))
    assert (result.result, result.policy) == ("temperror", "reject")


@pytest.mark.parametrize(
    "head",
    [
        b"To: alice@example.test\r\n",
        b"From: a@signed.test\r\nFrom: b@signed.test\r\n",
        b"From: a@signed.test, b@spf.test\r\n",
        b"From: undisclosed\r\n",
        b"From: <a@signed.test> (" + b"x" * DMARC_MAX_FROM_OCTETS + b")\r\n",  # too long
    ],
    ids=["no-from", "two-fields", "two-domains", "no-address", "too-long"],
)
def test_no_single_from_domain_is_permerror(resolver: Resolver, head: bytes) -> None:
    msg = head + b"Subject: x\r\n\r\nbody\r\n"
    assert verdict(resolver, msg).result == "permerror"


def test_from_domain_reads_a_folded_field_and_shared_domain() -> None:
    msg = b"Subject: x\r\nFROM :\r\n Sam <sam@Signed.Test>,\r\n\tkim@signed.test\r\n\r\nFrom: x@y.test\r\n"
    assert from_domain(msg) == ("signed.test", "")


def test_parse_record_tolerant() -> None:
    assert parse_record("v=DMARC1; p=Reject; sp=none; adkim=s; aspf=x; pct=5") == DmarcRecord(
        "reject", "none", strict_dkim=True, strict_spf=False
    )
    assert parse_record("v=DMARC1;p=none;") == DmarcRecord("none")
    assert parse_record("v=DMARC1; sp=reject") is None  # no p=
    assert parse_record("v=DMARC2; p=reject") is None
    assert parse_record("") is None


def test_organizational_domain_from_the_shipped_list() -> None:
    assert organizational_domain("a.b.example.co.uk") == "example.co.uk"
    assert organizational_domain("mail.sender.test") == "sender.test"
    assert organizational_domain("co.uk") == "co.uk"
