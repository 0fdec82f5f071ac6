"""The one resolver (mailauth/dns.py) against a real DNS server on loopback (tests/dns_server.py)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from mailwright.mailauth.dns import (
    MAX_RECORDS,
    MAX_TXT_OCTETS,
    NoData,
    NoSuchName,
    PermanentDnsError,
    Resolver,
    SharedLookups,
    TemporaryDnsError,
)
from tests.dns_server import LoopbackDns

MANY = MAX_RECORDS + 20

ZONE = (
    """
mail.test.      60 IN MX 10 mx1.mail.test.
mail.test.      60 IN MX 20 mx2.mail.test.
mx1.mail.test.  60 IN A 127.0.0.2
mx1.mail.test.  60 IN AAAA ::1
mx2.mail.test.  60 IN AAAA ::1
txt.test.       60 IN TXT "v=spf1 " "ip4:127.0.0.1 " "-all"
txt.test.       60 IN TXT "second record"
broken.test.    60 IN A 127.0.0.9
"""
    + "".join(f"many.test. 60 IN A 127.0.{i // 250}.{i % 250 + 1}\n" for i in range(MANY))
    + "long.test. 60 IN TXT "
    + " ".join(['"' + "k" * 250 + '"'] * (MAX_TXT_OCTETS // 250 + 1))
    + '\nlong.test. 60 IN TXT "short"\n'
)


@pytest.fixture(scope="module")
def dns() -> Iterator[LoopbackDns]:
    server = LoopbackDns(ZONE, servfail={"broken.test."})
    yield server
    server.stop()


@pytest.fixture
def resolver(dns: LoopbackDns) -> Resolver:
    return Resolver([dns.address], timeout=5.0)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_an_answer(resolver: Resolver) -> None:
    assert sorted(run(resolver.mx("mail.test"))) == [(10, "mx1.mail.test"), (20, "mx2.mail.test")]
    assert run(resolver.addresses("mx1.mail.test")) == ["127.0.0.2", "::1"]
    assert run(resolver.addresses("mx2.mail.test")) == ["::1"]  # AAAA only is an answer


def test_nxdomain_is_permanent_no_such_name(resolver: Resolver) -> None:
    with pytest.raises(NoSuchName) as info:
        run(resolver.mx("missing.test"))
    assert isinstance(info.value, PermanentDnsError)
    with pytest.raises(NoSuchName):
        run(resolver.addresses("missing.test"))
    with pytest.raises(NoSuchName):
        run(resolver.txt("missing.test"))


def test_no_records_of_the_type_is_permanent_no_data(resolver: Resolver) -> None:
    with pytest.raises(NoData):
        run(resolver.mx("mx1.mail.test"))
    with pytest.raises(NoData):
        run(resolver.txt("mail.test"))
    with pytest.raises(NoData):
        run(resolver.addresses("txt.test"))


def test_servfail_is_temporary(resolver: Resolver) -> None:
    with pytest.raises(TemporaryDnsError) as info:
        run(resolver.txt("broken.test"))
    assert not isinstance(info.value, PermanentDnsError)
    with pytest.raises(TemporaryDnsError):
        run(resolver.addresses("broken.test"))


def test_a_server_that_never_answers_is_temporary_within_the_timeout() -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))  # receives the queries, answers none
    silent.settimeout(5)
    try:
        port = silent.getsockname()[1]
        resolver = Resolver([f"127.0.0.1:{port}"], timeout=0.5)
        with pytest.raises(TemporaryDnsError) as info:
            run(resolver.mx("mail.test"))
        assert "no answer within 0.5 s" in str(info.value)
        assert silent.recv(512)  # the query did reach it
    finally:
        silent.close()


def test_txt_character_strings_of_one_record_are_joined(resolver: Resolver) -> None:
    assert sorted(run(resolver.txt("txt.test"))) == ["second record", "v=spf1 ip4:127.0.0.1 -all"]


def test_an_oversized_answer_is_capped(resolver: Resolver) -> None:
    addresses = run(resolver.addresses("many.test"))
    assert len(addresses) == MAX_RECORDS
    # A TXT record longer than MAX_TXT_OCTETS is dropped whole, never cut.
    assert run(resolver.txt("long.test")) == ["short"]


def test_the_timeout_and_servers_come_from_config(dns: LoopbackDns) -> None:
    from mailwright.config import parse_config

    config = parse_config(
        f'[dns]\nservers = ["{dns.address}"]\ntimeout = 1.5\n', source="t", base_dir="."
    )
    resolver = Resolver.from_config(config)
    assert resolver.timeout == 1.5
    assert run(resolver.txt("txt.test"))
    old = parse_config(f'[delivery]\ndns_servers = ["{dns.address}"]\n', source="t", base_dir=".")
    assert run(Resolver.from_config(old).txt("txt.test"))


def test_shared_lookups_ask_each_question_once_and_give_everyone_the_same_outcome(
    resolver: Resolver, dns: LoopbackDns
) -> None:
    """One message's checks: concurrent and later askers share one lookup, an answer
    or an error alike; a new message (a new SharedLookups) asks again."""

    async def test() -> None:
        shared = SharedLookups(resolver)
        first, second = await asyncio.gather(shared.txt("txt.test"), shared.txt("TXT.test."))
        assert first == second == ["v=spf1 ip4:127.0.0.1 -all", "second record"]
        assert await shared.txt("txt.test") == first
        for _ in range(2):
            with pytest.raises(TemporaryDnsError):
                await shared.records("broken.test", "A")
        assert shared.asked == 2
        await SharedLookups(resolver).txt("txt.test")

    before = dns.asked("txt.test", "TXT")
    run(test())
    assert dns.asked("txt.test", "TXT") - before == 2  # one per SharedLookups
