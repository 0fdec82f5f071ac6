"""policy/auth.py: lockouts per client, delays per account, one check per client at a time.

The decisions take an injected clock, so lockout periods pass without sleeping;
the Authenticator tests run it on a real event loop with the real scrypt check
(cheap parameters) or a check that records when it runs.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from mailwright import passwords
from mailwright.config import Config, parse_config
from mailwright.policy.auth import (
    Authenticator,
    AuthGuard,
    AuthOutcome,
    FailureTable,
    account_key,
)
from mailwright.protocol import replies

ALICE = "alice@example.test"
ALICE_PASSWORD = "correct horse battery"
ALICE_HASH = passwords.hash_password(ALICE_PASSWORD, log2_n=10)
MALLORY = "mallory@example.test"
MALLORY_PASSWORD = "mallory's own"
MALLORY_HASH = passwords.hash_password(MALLORY_PASSWORD, log2_n=10)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def config(smtp: str = "", *, delay: float = 0) -> Config:
    return parse_config(
        f"""
[smtp]
auth_failure_delay = {delay}
{smtp}
[domains]
local = ["example.test"]
[mailboxes]
"{ALICE}" = {{ password = "{ALICE_HASH}" }}
"{MALLORY}" = {{ password = "{MALLORY_HASH}" }}
""",
        source="test",
        base_dir=Path("/srv"),
    )


# ---------------------------------------------------------------- the table


def test_failures_are_forgotten_ttl_seconds_after_the_last_one() -> None:
    table = FailureTable(ttl=60, max_entries=10)
    assert table.add("a", now=0) == 1
    assert table.add("a", now=50) == 2
    assert table.count("a", now=109) == 2  # 59 s after the last failure
    assert table.count("a", now=110) == 0
    assert len(table) == 0


def test_the_table_keeps_at_most_max_entries_dropping_the_oldest() -> None:
    table = FailureTable(ttl=60, max_entries=3)
    for index in range(1000):
        table.add(f"name{index}", now=index / 1000)
        assert len(table) <= 3
    table.add("name998", now=2)  # a new failure makes an entry young again
    table.add("new", now=2)
    assert [table.count(k, now=2) for k in ("name997", "name998", "name999", "new")] == [0, 2, 1, 1]


def test_forgive_never_goes_below_none() -> None:
    table = FailureTable(ttl=60, max_entries=10)
    table.add("a", now=0)
    table.add("a", now=0)
    table.forgive("a", 1, now=0)
    assert table.count("a", now=0) == 1
    table.forgive("a", 5, now=0)
    assert table.count("a", now=0) == 0
    table.forgive("never-seen", 1, now=0)
    assert len(table) == 0


def test_account_key_is_the_address_key_or_the_folded_name() -> None:
    assert account_key("Alice@Example.TEST") == "alice@example.test"
    assert account_key("Not An Address") == "not an address"
    assert len(account_key("x" * 10_000)) == 256


# ---------------------------------------------------------------- the decisions


def test_a_client_is_locked_out_at_max_failures_until_lockout_seconds_after_the_last() -> None:
    clock = FakeClock()
    guard = AuthGuard(config("auth_max_failures = 3\nauth_lockout = 300"), clock=clock)
    for expected in (1, 2):
        assert guard.failed("192.0.2.1", ALICE) == expected
        assert not guard.locked_out("192.0.2.1")
        clock.now += 100  # spread out: each failure keeps the earlier ones remembered
    assert guard.failed("192.0.2.1", MALLORY) == 3  # any account counts for the client
    assert guard.locked_out("192.0.2.1")
    assert not guard.locked_out("192.0.2.2")
    clock.now += 299
    assert guard.locked_out("192.0.2.1")
    clock.now += 1
    assert not guard.locked_out("192.0.2.1")


def test_failures_on_an_account_from_many_clients_only_delay_it() -> None:
    clock = FakeClock()
    guard = AuthGuard(config("auth_max_failures = 2", delay=1.5), clock=clock)
    assert guard.delay(ALICE) == 0
    for client in range(1, 101):
        guard.failed(f"192.0.2.{client}", ALICE)
    assert not guard.locked_out("198.51.100.1")  # a new client may still try the account
    assert guard.delay(ALICE) == 1.5 * 5  # grows with failures, up to 5 steps
    assert guard.delay(MALLORY) == 0
    guard.failed("192.0.2.1", MALLORY)
    assert guard.delay(MALLORY) == 1.5


def test_a_success_forgives_only_that_clients_failures_on_that_account() -> None:
    clock = FakeClock()
    guard = AuthGuard(config("auth_max_failures = 5", delay=1), clock=clock)
    for _ in range(3):
        guard.failed("192.0.2.1", MALLORY)  # the guesser's own account: typos
    for _ in range(4):
        guard.failed("192.0.2.1", ALICE)  # someone else's: guesses
    guard.failed("198.51.100.1", ALICE)
    guard.succeeded("192.0.2.1", MALLORY)
    assert guard.by_client.count("192.0.2.1", clock.now) == 4  # the guesses stay
    assert guard.delay(MALLORY) == 0
    assert guard.delay(ALICE) == 5
    guard.failed("192.0.2.1", ALICE)
    assert guard.locked_out("192.0.2.1")  # logging in to one's own account reset nothing


# ---------------------------------------------------------------- the authenticator


def test_a_locked_out_client_gets_454_even_with_the_right_password_and_no_check_runs() -> None:
    clock = FakeClock()
    checked: list[str] = []

    def verify(password: str, stored: str | None) -> bool:
        checked.append(password)
        return passwords.verify_password(password, stored)

    async def scenario() -> None:
        auth = Authenticator(
            config("auth_max_failures = 3\nauth_lockout = 60"), clock=clock, verify=verify
        )
        for attempt in range(3):
            result = await auth.authenticate("192.0.2.1", ALICE, f"guess {attempt}")
            assert (result.outcome, result.reply, result.failures) == (
                AuthOutcome.FAILED,
                replies.AUTH_FAILED,
                attempt + 1,
            )
        result = await auth.authenticate("192.0.2.1", ALICE, ALICE_PASSWORD)
        assert (result.outcome, result.reply) == (AuthOutcome.LOCKED_OUT, replies.AUTH_LOCKED_OUT)
        assert result.reply.code == 454 and result.reply.enhanced == "4.7.0"
        assert len(checked) == 3  # the right password was not even checked
        other = await auth.authenticate("192.0.2.2", ALICE, ALICE_PASSWORD)
        assert (other.outcome, other.user) == (AuthOutcome.OK, ALICE)  # the account is not locked
        clock.now += 60
        late = await auth.authenticate("192.0.2.1", ALICE, ALICE_PASSWORD)
        assert late.outcome is AuthOutcome.OK

    asyncio.run(scenario())


def test_an_ipv6_client_is_locked_out_by_its_64() -> None:
    async def scenario() -> None:
        auth = Authenticator(config("auth_max_failures = 2"), clock=FakeClock())
        await auth.authenticate("2001:db8:0:7::1", ALICE, "guess")
        await auth.authenticate("2001:db8:0:7::2", ALICE, "guess")
        same = await auth.authenticate("2001:db8:0:7:ffff::9", ALICE, ALICE_PASSWORD)
        assert (same.outcome, same.client) == (AuthOutcome.LOCKED_OUT, "2001:db8:0:7::/64")
        next_64 = await auth.authenticate("2001:db8:0:8::1", ALICE, ALICE_PASSWORD)
        assert next_64.outcome is AuthOutcome.OK

    asyncio.run(scenario())


def test_one_client_holds_at_most_one_check_slot_so_others_get_theirs() -> None:
    """Two password-check slots; a client with two AUTHs at once takes only one of them.

    Each check blocks until released and says when it started (its password
    names it).  While client A's first check runs and its second waits, client
    B, arriving after both, gets the other slot: so A's second did not take it.
    """
    started = {name: threading.Event() for name in ("A1", "A2", "B")}
    release = threading.Event()

    def verify(password: str, stored: str | None) -> bool:
        started[password].set()
        release.wait(30)
        return False

    async def has_started(name: str) -> bool:
        return await asyncio.to_thread(started[name].wait, 10)

    async def scenario() -> None:
        auth = Authenticator(config(), clock=FakeClock(), verify=verify, max_checks=2)
        try:
            first = asyncio.create_task(auth.authenticate("192.0.2.1", ALICE, "A1"))
            assert await has_started("A1")
            second = asyncio.create_task(auth.authenticate("192.0.2.1", MALLORY, "A2"))
            other = asyncio.create_task(auth.authenticate("198.51.100.1", ALICE, "B"))
            assert await has_started("B"), "client B waited behind client A's second check"
            assert not started["A2"].is_set()
        finally:
            release.set()
        results = await asyncio.gather(first, second, other)
        assert started["A2"].is_set()  # it ran once the first was done
        assert [r.outcome for r in results] == [AuthOutcome.FAILED] * 3
        assert results[1].failures == 2  # it saw the first one's failure

    asyncio.run(scenario())


@pytest.mark.parametrize("outcome", [AuthOutcome.OK, AuthOutcome.FAILED])
def test_the_delay_of_an_account_under_attack_comes_before_the_check_whatever_its_outcome(
    outcome: AuthOutcome,
) -> None:
    """Hanging up on a slow answer saves a guesser nothing, and timing does not tell success."""
    steps: list[str] = []

    def verify(password: str, stored: str | None) -> bool:
        steps.append("check")
        return passwords.verify_password(password, stored)

    async def sleep(seconds: float) -> None:
        steps.append(f"wait {seconds:g}")

    async def scenario() -> None:
        auth = Authenticator(config(delay=1.5), clock=FakeClock(), verify=verify, sleep=sleep)
        first = await auth.authenticate("198.51.100.1", ALICE, "guess")
        assert first.outcome is AuthOutcome.FAILED
        password = ALICE_PASSWORD if outcome is AuthOutcome.OK else "guess again"
        result = await auth.authenticate("192.0.2.1", ALICE, password)
        assert result.outcome is outcome
        assert steps == ["check", "wait 1.5", "check"]

    asyncio.run(scenario())
