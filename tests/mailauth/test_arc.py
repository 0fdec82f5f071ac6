"""ARC chain validation (RFC 8617 5.2) on bytes: chains sealed by dkimpy "upstream", their
keys served by a loopback DNS server and read through our Resolver."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import dkim
import pytest

from mailwright.config.schema import MAX_ARC_KEYS, MAX_ARC_SETS
from mailwright.mailauth import results
from mailwright.mailauth.arc import ArcVerdict, check_arc
from mailwright.mailauth.dkim import (
    generate_private_key,
    public_key_value,
    record_line,
    record_text,
)
from mailwright.mailauth.dns import Resolver
from tests.dns_server import LoopbackDns, silent_dns
from tests.mailauth.keys import huge_exponent_rsa_key

UP = generate_private_key("rsa")  # the first intermediary, d=up.test
HOP = generate_private_key("rsa")  # a second one, d=hop.test
UP_RECORD = record_text(*public_key_value(UP))
COSTLY = huge_exponent_rsa_key()  # a good key that takes long to verify with
SELECTORS = [f"k{n}" for n in range(MAX_ARC_KEYS + 1)]  # one key, many names

ZONE = "\n".join(
    [
        record_line("up.test", "s1", UP_RECORD),
        record_line("hop.test", "s2", record_text(*public_key_value(HOP))),
        record_line("junk.test", "s1", "v=DKIM1; k=rsa; p=!!not*base64!!"),
        record_line("costly.test", "s1", record_text(*public_key_value(COSTLY))),
        *(record_line("many.test", selector, UP_RECORD) for selector in SELECTORS),
    ]
)

BODY = (
    b"From: Sam <sam@sender.test>\r\n"
    b"To: list@up.test\r\n"
    b"Subject: through a list\r\n"
    b"\r\n"
    b"Hello list.\r\n"
)


def sealed_by(
    message: bytes,
    domain: str = "up.test",
    selector: str = "s1",
    key: bytes = UP,
    arc: str | None = None,
) -> bytes:
    """``message`` with the next ARC set of the ADMD ``<selector>.<domain>``, as dkimpy seals
    it: its Authentication-Results header (``arc=`` the status it found, if any) on top."""
    verdicts = "spf=pass smtp.mailfrom=sender.test" + (f"; arc={arc}" if arc else "")
    srv_id = f"{selector}.{domain}"
    with_results = f"Authentication-Results: {srv_id}; {verdicts}\r\n".encode() + message
    fields = dkim.arc_sign(with_results, selector.encode(), domain.encode(), key, srv_id.encode())
    assert fields, "dkimpy made no ARC set"
    return b"".join(fields) + with_results


ONE_SET = sealed_by(BODY)
TWO_SETS = sealed_by(ONE_SET, "hop.test", "s2", HOP, arc="pass")


@pytest.fixture(scope="module")
def resolver() -> Iterator[Resolver]:
    """Our Resolver, asking a loopback server that publishes ZONE (and fails broken.test)."""
    dns = LoopbackDns(ZONE, servfail={"s1._domainkey.broken.test."})
    yield Resolver([dns.address], timeout=5.0)
    dns.stop()


@pytest.fixture
def silent_resolver() -> Iterator[Resolver]:
    with silent_dns() as address:
        yield Resolver([address], timeout=0.5)


def arc(resolver: Resolver, message: bytes) -> ArcVerdict:
    return asyncio.run(check_arc(resolver, message, "192.0.2.7"))


def test_no_arc_fields_is_none(resolver: Resolver) -> None:
    verdict = arc(resolver, BODY)
    assert (verdict.result, verdict.instances, verdict.may_seal) == ("none", 0, True)


def test_one_set_and_two_sets_pass(resolver: Resolver) -> None:
    one, two = arc(resolver, ONE_SET), arc(resolver, TWO_SETS)
    assert (one.result, one.instances) == ("pass", 1)
    assert (two.result, two.instances) == ("pass", 2)
    assert one.may_seal and two.may_seal


def test_altered_body_fails(resolver: Resolver) -> None:
    verdict = arc(resolver, TWO_SETS.replace(b"Hello list.", b"Hello all."))
    assert (verdict.result, verdict.temporary) == ("fail", False)
    assert "ARC-Message-Signature" in verdict.reason


def test_a_broken_seal_fails(resolver: Resolver) -> None:
    """The newest seal's signature altered: its AMS still holds, the chain does not."""
    seal_b = re.search(rb"ARC-Seal: i=2;.*?b=([A-Za-z0-9+/]{8})", TWO_SETS, re.DOTALL)
    assert seal_b is not None
    broken = TWO_SETS.replace(seal_b.group(1), b"AAAAAAAA", 1)
    assert arc(resolver, broken).result == "fail"


def test_a_set_added_after_the_first_seal_and_altered_aar_fail(resolver: Resolver) -> None:
    """The first seal covers its own AAR: rewriting what the first hop found breaks it."""
    altered = TWO_SETS.replace(
        b"ARC-Authentication-Results: i=1; s1.up.test;\r\n spf=pass",
        b"ARC-Authentication-Results: i=1; s1.up.test;\r\n spf=fail",
    )
    assert altered != TWO_SETS
    assert arc(resolver, altered).result == "fail"


def test_a_key_lookup_that_fails_for_now_never_passes(
    resolver: Resolver, silent_resolver: Resolver
) -> None:
    """SERVFAIL for the key, or no answer at all: fail, marked temporary, never sealed on."""
    broken = sealed_by(BODY, "broken.test", "s1")
    for verdict in (arc(resolver, broken), arc(silent_resolver, ONE_SET)):
        assert (verdict.result, verdict.temporary, verdict.may_seal) == ("fail", True, False)


def test_missing_key_bad_base64_key_and_bad_base64_seal_fail(resolver: Resolver) -> None:
    for message in (
        sealed_by(BODY, "nokey.test", "s1"),
        sealed_by(BODY, "junk.test", "s1"),
        ONE_SET.replace(b"b=", b"b=*", 1),
    ):
        verdict = arc(resolver, message)
        assert (verdict.result, verdict.temporary) == ("fail", False), message[:60]


def test_a_key_with_a_huge_public_exponent_is_not_used(resolver: Resolver) -> None:
    """Each seal of a chain is verified with dkimpy's pure-Python pow(), which holds the GIL:
    a hostile key's huge exponent, once per seal of 50, would stop the event loop for
    minutes.  Such a key is refused before it is used, though the chain is good."""
    verdict = arc(resolver, sealed_by(BODY, "costly.test", "s1", COSTLY))
    assert (verdict.result, verdict.temporary) == ("fail", False)
    assert "exponent" in verdict.reason


def test_newest_seal_saying_cv_fail_ends_the_chain(silent_resolver: Resolver) -> None:
    """RFC 8617 5.2 step 2, decided before any lookup (the silent DNS would make it temporary),
    and 5.1 step 1: nobody seals after it."""
    failed = sealed_by(ONE_SET, "hop.test", "s2", HOP, arc="fail")
    verdict = arc(silent_resolver, failed)
    assert (verdict.result, verdict.terminated, verdict.temporary) == ("fail", True, False)
    assert not verdict.may_seal


def renumbered(message: bytes, old: int, new: int) -> bytes:
    """The three fields of set ``old`` claiming instance ``new`` (the seals no longer verify,
    but the structure is what is judged first)."""
    return re.sub(
        rb"^(ARC-[A-Za-z-]+: i=)" + str(old).encode() + rb";",
        rb"\g<1>" + str(new).encode() + b";",
        message,
        flags=re.MULTILINE,
    )


@pytest.mark.parametrize(
    ("name", "hostile"),
    [
        ("gap", renumbered(TWO_SETS, 2, 3)),
        ("duplicate instance", renumbered(TWO_SETS, 2, 1)),
        ("no first set", renumbered(ONE_SET, 1, 2)),
        ("instance 0", renumbered(ONE_SET, 1, 0)),
        ("missing seal", re.sub(rb"ARC-Seal: i=2;.*?(?=ARC-Message)", b"", TWO_SETS, flags=re.S)),
        ("junk tags", b"ARC-Seal: i=1; ;;==;; cv\r\n" + ONE_SET.split(b"\r\n", 1)[1]),
        ("no instance", b"ARC-Seal: cv=none; d=up.test; s=s1; b=AAAA\r\n" + BODY),
        ("cv junk", TWO_SETS.replace(b"cv=pass", b"cv=maybe", 1)),
        ("cv pass on 1", ONE_SET.replace(b"cv=none", b"cv=pass", 1)),
        ("no s=", ONE_SET.replace(b"; s=s1;", b";", 1)),
        ("non-ascii d=", ONE_SET.replace(b"d=up.test;", b"d=\xc3\xbcp.test;", 1)),
        ("garbage header line", b"ARC-Seal: i=1\r\n\x01\x02 not a header\r\n" + BODY),
    ],
)
def test_hostile_chains_fail_without_a_lookup_or_a_crash(
    silent_resolver: Resolver, name: str, hostile: bytes
) -> None:
    """Structure is checked before any key is asked for: a lookup here would never answer
    and make the verdict temporary."""
    verdict = arc(silent_resolver, hostile)
    assert (verdict.result, verdict.temporary) == ("fail", False), (name, verdict)


def test_more_than_fifty_sets_fail_at_once(silent_resolver: Resolver) -> None:
    """RFC 8617 5.2 step 1: more sets than 50 is a fail, without a lookup."""
    fields = b"".join(
        b"ARC-Seal: i=%d; cv=pass; a=rsa-sha256; d=up.test; s=s1; b=AA\r\n"
        b"ARC-Message-Signature: i=%d; a=rsa-sha256; d=up.test; s=s1; h=from; bh=AA; b=AA\r\n"
        b"ARC-Authentication-Results: i=%d; x.test; arc=pass\r\n" % (n, n, n)
        for n in range(MAX_ARC_SETS + 1, 0, -1)
    )
    verdict = arc(silent_resolver, fields + BODY)
    assert (verdict.result, verdict.temporary, verdict.may_seal) == ("fail", False, False)


def test_a_chain_needing_more_keys_than_the_limit_fails(silent_resolver: Resolver) -> None:
    message = BODY
    for n, selector in enumerate(SELECTORS):
        message = sealed_by(message, "many.test", selector, arc="pass" if n else None)
    verdict = arc(silent_resolver, message)
    assert (verdict.result, verdict.temporary) == ("fail", False)
    assert f"more than {MAX_ARC_KEYS}" in verdict.reason


def test_a_chain_just_within_the_key_limit_passes(resolver: Resolver) -> None:
    message = BODY
    for n, selector in enumerate(SELECTORS[:MAX_ARC_KEYS]):
        message = sealed_by(message, "many.test", selector, arc="pass" if n else None)
    verdict = arc(resolver, message)
    assert (verdict.result, verdict.instances) == ("pass", MAX_ARC_KEYS)


def test_the_header_reports_arc_with_the_client_address() -> None:
    def header(verdict: ArcVerdict) -> bytes:
        return results.header("mx.example.test", None, None, None, verdict)

    assert header(ArcVerdict("pass", 1, remote_ip="192.0.2.7")) == (
        b"Authentication-Results: mx.example.test;\r\n\tarc=pass smtp.remote-ip=192.0.2.7\r\n"
    )
    assert header(ArcVerdict("none", remote_ip="2001:db8::1")) == (
        b'Authentication-Results: mx.example.test;\r\n\tarc=none smtp.remote-ip="2001:db8::1"\r\n'
    )
    temporary = header(ArcVerdict("fail", 1, temporary=True, remote_ip="192.0.2.7"))
    assert b"arc=fail (key lookup failed for now) smtp.remote-ip=192.0.2.7" in temporary
