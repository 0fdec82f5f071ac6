"""The QueueStore contract of the operator's side, run against every store in STORE_FACTORIES:
'held' is never claimed (so never delivered nor expired) until released, and is released to
where it was; the message stays while a recipient is held; the attempts' history; the figures."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mailwright.protocol.reply import Reply
from mailwright.queue.base import RecipientResult, RecipientState, Target
from tests.helpers import run
from tests.queue.contract import ALICE, BOB, STORE_FACTORIES, StoreFactory, opened, put
from tests.queue.postgresql import pg_database  # noqa: F401 - a fixture of this module

FAR_FUTURE = time.time() + 100 * 365 * 86400  # beyond any [queue] max_age
DEFERRED = Reply(451, "4.4.1", "No answer")


@pytest.fixture(params=sorted(STORE_FACTORIES))
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    return STORE_FACTORIES[request.param](tmp_path, request)


def test_a_held_recipient_is_never_claimed_until_released(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        async with opened(make_store) as store:
            queue_id = await put(store, b"Subject: x\r\n\r\nx\r\n", [Target(BOB, BOB, False)])
            assert await store.hold(queue_id) == 1
            assert await store.claim_due(FAR_FUTURE, 10) == []
            assert await store.retry_now(queue_id) == 0
            assert await store.retry_domain("elsewhere.test") == 0
            assert (await store.stats()).messages == {"queued": 0, "deferred": 0, "held": 1}
            assert await store.release(queue_id) == 1
            [claimed] = await store.claim_due(time.time() + 1, 10)
            assert claimed.recipients[0].state is RecipientState.QUEUED

    run(scenario)


def test_release_puts_a_deferred_recipient_back_as_deferred(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        async with opened(make_store) as store:
            queue_id = await put(store, b"x\r\n", [Target(BOB, BOB, False)])
            await store.claim_due(time.time() + 1, 10)
            retry_at = time.time() + 3600
            result = RecipientResult(RecipientState.DEFERRED, DEFERRED, retry_at, relay="mx.test")
            await store.record_result(queue_id, 0, result)
            assert await store.hold(queue_id) == 1
            assert await store.release(queue_id) == 1
            message = await store.get(queue_id)
            assert message is not None
            [rcpt] = message.recipients
            assert rcpt.state is RecipientState.DEFERRED and rcpt.next_attempt == retry_at
            [attempt] = await store.history(queue_id)
            assert (attempt.index, attempt.relay, attempt.reply) == (0, "mx.test", DEFERRED)

    run(scenario)


def test_a_claimed_recipient_is_not_held_and_its_result_counts(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        async with opened(make_store) as store:
            queue_id = await put(store, b"x\r\n", [Target(BOB, BOB, False)])
            await store.claim_due(time.time() + 1, 10)  # being delivered now
            assert await store.hold(queue_id) == 0
            await store.record_result(
                queue_id, 0, RecipientResult(RecipientState.DELIVERED, Reply(250, None, "ok"))
            )
            assert await store.get(queue_id) is None

    run(scenario)


def test_a_message_stays_while_one_recipient_is_held(make_store: StoreFactory) -> None:
    async def scenario() -> None:
        async with opened(make_store) as store:
            targets = [Target(ALICE, ALICE, True), Target(BOB, BOB, False)]
            queue_id = await put(store, b"x\r\n", targets)
            await store.claim_due(time.time() + 1, 10)
            await store.record_result(
                queue_id, 0, RecipientResult(RecipientState.DELIVERED, Reply(250, None, "ok"))
            )
            # Alice delivered, Bob deferred and then held: the message must stay.
            await store.record_result(
                queue_id, 1, RecipientResult(RecipientState.DEFERRED, DEFERRED, time.time())
            )
            assert await store.hold(queue_id) == 1
            message = await store.get(queue_id)
            assert message is not None
            assert [r.state for r in message.recipients] == [
                RecipientState.DELIVERED,
                RecipientState.HELD,
            ]
            assert await store.hold("0000000000000000") is None
            assert await store.release("0000000000000000") is None

    run(scenario)
