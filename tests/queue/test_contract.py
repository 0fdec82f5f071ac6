"""The QueueStore contract (queue/base.py), run against every store in STORE_FACTORIES.

Only the interface is used here: what server/ and delivery/ may rely on of any
store.  What one store does beyond it (SQLite's locks, WAL, quarantine, crash
recovery, schema upgrades) is tested beside that store (test_sqlite_store.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import pytest

from mailwright.errors import StorageError
from mailwright.model import JUNK_FOLDER, Address, MailOptions, Notify
from mailwright.protocol.reply import Reply
from mailwright.queue.base import RecipientResult, RecipientState, Target
from mailwright.queue.spool import SpillingSpool
from tests.helpers import run
from tests.queue.contract import (
    ALICE,
    BOB,
    LEASE_SECONDS,
    SENDER,
    STORE_FACTORIES,
    StoreFactory,
    body_of,
    opened,
    put,
)
from tests.queue.postgresql import pg_database  # noqa: F401 - a fixture of this module


@pytest.fixture(params=sorted(STORE_FACTORIES))
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    return STORE_FACTORIES[request.param](tmp_path, request)


# ---------------------------------------------------------------- enqueue, claim, record


def test_enqueue_claim_record_removes_message_once_every_recipient_is_final(
    make_store: StoreFactory,
) -> None:
    async def test() -> None:
        async with opened(make_store) as store:
            targets = [Target(ALICE, ALICE, True), Target(BOB, BOB, False)]
            queue_id = await put(store, b"Subject: hi\r\n\r\nhello\r\n", targets)

            [message] = await store.claim_due(time.time() + 1, 10)
            assert message.queue_id == queue_id
            assert [r.index for r in message.recipients] == [0, 1]
            assert all(r.state is RecipientState.QUEUED for r in message.recipients)
            assert await body_of(store, queue_id) == b"Subject: hi\r\n\r\nhello\r\n"

            await store.record_result(
                queue_id, 0, RecipientResult(RecipientState.DELIVERED, Reply.parse("250 2.0.0 ok"))
            )
            await store.record_result(
                queue_id,
                1,
                RecipientResult(RecipientState.DEFERRED, Reply.parse("451 4.3.0 later"), 5e9),
            )
            stored = await store.get(queue_id)
            assert stored is not None
            assert [r.state for r in stored.recipients] == [
                RecipientState.DELIVERED,
                RecipientState.DEFERRED,
            ]
            assert stored.recipients[1].attempts == 1
            assert str(stored.recipients[1].last_reply) == "451 4.3.0 later"

            await store.record_result(
                queue_id,
                1,
                RecipientResult(RecipientState.BOUNCED, Reply.parse("550 5.1.1 no such user")),
            )
            assert await store.get(queue_id) is None
            assert await store.list() == []

    run(test)


def test_addresses_round_trip_exactly_including_quoted_local_parts_and_null_sender(
    make_store: StoreFactory,
) -> None:
    quoted = Address('john "j" doe', "Example.TEST")
    alias = Address("team", "example.test")

    async def test() -> None:
        async with opened(make_store) as store:
            queue_id = await put(store, b"x", [Target(quoted, alias, False)], sender=None)
            message = await store.get(queue_id)
        assert message is not None
        assert message.sender is None
        assert message.size == 1
        assert message.recipients[0].target == Target(quoted, alias, False)

    run(test)


def test_dsn_parameters_and_mail_options_survive_claim_list_and_restart(
    make_store: StoreFactory,
) -> None:
    """RFC 3461: what the sender asked (RET, ENVID, NOTIFY, ORCPT) is kept with the
    message and each recipient, however late the report falls due."""
    options = MailOptions(ret="HDRS", envid="id+2B1 ü", body="8BITMIME", smtputf8=True)
    asked = Target(
        ALICE,
        ALICE,
        True,
        notify=Notify(frozenset({"SUCCESS", "DELAY"}), given=True),
        orcpt="rfc822;Alice@Example.TEST",
    )
    never = Target(BOB, BOB, False, notify=Notify(frozenset(), given=True))
    plain = Target(Address("carol", "example.test"), Address("carol", "example.test"), False)

    async def test() -> None:
        async with opened(make_store) as store:
            spool = store.new_spool()
            spool.write(b"x")
            queue_id = await store.enqueue(SENDER, [asked, never, plain], spool, options)
        async with opened(make_store) as store:
            (listed,) = await store.list()
            (claimed,) = await store.claim_due(time.time() + 1, 10)
        for message in (listed, claimed):
            assert message.queue_id == queue_id and message.options == options
            assert [r.target for r in message.recipients] == [asked, never, plain]
        assert str(claimed.recipients[0].target.notify) == "SUCCESS,DELAY"
        assert str(claimed.recipients[1].target.notify) == "NEVER"
        assert claimed.recipients[2].target.notify == Notify()  # none given: the default
        assert not claimed.recipients[2].target.notify.given

    run(test)


def test_a_delay_report_mark_is_kept_per_recipient_through_claims_and_restart(
    make_store: StoreFactory,
) -> None:
    """At most one "delayed" report per recipient (RFC 3464 2.3.3): the mark outlives the
    claim, the deferral that follows and a restart, and is only on the recipients named."""
    carol = Address("carol", "example.test")
    targets = [Target(ALICE, ALICE, True), Target(BOB, BOB, False), Target(carol, carol, False)]

    async def test() -> None:
        async with opened(make_store) as store:
            queue_id = await put(store, b"x", targets)
            (fresh,) = await store.claim_due(time.time() + 1, 10)
            assert [r.delay_reported for r in fresh.recipients] == [False, False, False]
            later = Reply.parse("451 4.4.1 later")
            for index in (0, 1, 2):
                await store.record_result(
                    queue_id, index, RecipientResult(RecipientState.DEFERRED, later, 1.0)
                )
            await store.mark_delay_reported(queue_id, [1, 2])
            await store.mark_delay_reported("no-such-message", [0])  # ignored
        async with opened(make_store) as store:
            (claimed,) = await store.claim_due(time.time() + 1, 10)
            assert [r.delay_reported for r in claimed.recipients] == [False, True, True]
            await store.record_result(
                queue_id, 1, RecipientResult(RecipientState.DEFERRED, later, 1.0)
            )
            stored = await store.get(queue_id)
        assert stored is not None
        assert [r.delay_reported for r in stored.recipients] == [False, True, True]

    run(test)


def test_a_local_copy_keeps_its_folder_through_claim_and_restart(
    make_store: StoreFactory,
) -> None:
    """A quarantined copy must reach .Junk however late it is delivered: the folder is
    part of the stored target, not of the session that decided it."""
    junk = Target(ALICE, ALICE, True, folder=JUNK_FOLDER)
    inbox = Target(Address("bob", "example.test"), Address("bob", "example.test"), True)

    async def test() -> None:
        async with opened(make_store) as store:
            queue_id = await put(store, b"x", [junk, inbox])
        async with opened(make_store) as store:
            (message,) = await store.claim_due(time.time() + 1, 10)
        assert message.queue_id == queue_id
        assert [r.target for r in message.recipients] == [junk, inbox]

    run(test)


def test_deferred_recipient_is_not_due_before_its_next_attempt(make_store: StoreFactory) -> None:
    async def test() -> None:
        async with opened(make_store) as store:
            queue_id = await put(store, b"body")
            now = time.time() + 1
            await store.claim_due(now, 10)
            retry_at = now + 300
            await store.record_result(
                queue_id,
                0,
                RecipientResult(RecipientState.DEFERRED, Reply.parse("421 busy"), retry_at),
            )
            assert await store.claim_due(retry_at - 1, 10) == []
            [message] = await store.claim_due(retry_at, 10)
            [recipient] = message.recipients
            assert recipient.state is RecipientState.DEFERRED
            assert recipient.attempts == 1
            assert recipient.next_attempt == retry_at
            assert str(recipient.last_reply) == "421 busy"

    run(test)


def test_claim_returns_only_due_recipients_earliest_first_up_to_the_limit(
    make_store: StoreFactory,
) -> None:
    async def test() -> None:
        async with opened(make_store) as store:
            first = await put(store, b"1", [Target(ALICE, ALICE, True), Target(BOB, BOB, False)])
            second = await put(store, b"2")
            third = await put(store, b"3")
            now = time.time() + 1
            [claimed] = await store.claim_due(now, 1)
            assert claimed.queue_id == first
            await store.record_result(
                first, 0, RecipientResult(RecipientState.DELIVERED, Reply.parse("250"))
            )
            retry_at = now + LEASE_SECONDS / 2  # before the others' leases lapse
            await store.record_result(
                first, 1, RecipientResult(RecipientState.DEFERRED, Reply.parse("451"), retry_at)
            )
            claimed_ids = [m.queue_id for m in await store.claim_due(now, 10)]
            assert claimed_ids == [second, third]
            [again] = await store.claim_due(retry_at, 10)
            assert again.queue_id == first
            assert [r.index for r in again.recipients] == [1]  # not the delivered one

    run(test)


def test_claimed_recipients_are_not_reclaimed_until_the_lease_lapses(
    make_store: StoreFactory,
) -> None:
    async def test() -> None:
        async with opened(make_store) as store:
            queue_id = await put(store, b"body")
            now = time.time() + 1
            assert len(await store.claim_due(now, 10)) == 1
            assert await store.claim_due(now, 10) == []
            assert await store.claim_due(now + LEASE_SECONDS - 1, 10) == []
            [reclaimed] = await store.claim_due(now + LEASE_SECONDS, 10)
            assert reclaimed.queue_id == queue_id

    run(test)


def test_retry_now_makes_deferred_recipients_due(make_store: StoreFactory) -> None:
    async def test() -> None:
        async with opened(make_store) as store:
            queue_id = await put(store, b"body")
            other = await put(store, b"other")
            now = time.time() + 1
            await store.claim_due(now, 10)
            for qid in (queue_id, other):
                await store.record_result(
                    qid, 0, RecipientResult(RecipientState.DEFERRED, Reply.parse("451"), now + 3600)
                )
            assert await store.claim_due(now, 10) == []
            assert await store.retry_now(queue_id) == 1
            assert [m.queue_id for m in await store.claim_due(now, 10)] == [queue_id]
            assert await store.retry_now() == 2  # both pending; the claim is left alone
            assert [m.queue_id for m in await store.claim_due(now, 10)] == [other]

    run(test)


def test_a_bouncing_recipient_keeps_the_body_until_its_bounce_is_recorded(
    make_store: StoreFactory,
) -> None:
    """BOUNCING: failed for good, its bounce still to be made.  The message and its body
    stay for the bounce to quote, the recipient is claimed again only for the bounce, and
    retrying the bounce is not a delivery attempt."""

    async def test() -> None:
        async with opened(make_store) as store:
            targets = [Target(ALICE, ALICE, True), Target(BOB, BOB, False)]
            queue_id = await put(store, b"Subject: hi\r\n\r\nhello\r\n", targets)
            now = time.time() + 1
            await store.claim_due(now, 10)
            await store.record_result(
                queue_id, 0, RecipientResult(RecipientState.DELIVERED, Reply.parse("250"))
            )
            bouncing = RecipientResult(
                RecipientState.BOUNCING, Reply.parse("550 5.1.1 no such user"), now + 60
            )
            await store.record_result(queue_id, 1, bouncing)
            assert await body_of(store, queue_id) == b"Subject: hi\r\n\r\nhello\r\n"
            assert await store.claim_due(now, 10) == []  # not before its next attempt
            [message] = await store.claim_due(now + 60, 10)
            [rcpt] = message.recipients
            assert (rcpt.index, rcpt.state, rcpt.attempts) == (1, RecipientState.BOUNCING, 1)
            assert str(rcpt.last_reply) == "550 5.1.1 no such user"
            await store.record_result(queue_id, 1, bouncing)  # the bounce failed again
            assert await store.retry_now(queue_id) == 1  # and is retried now
            [message] = await store.claim_due(now, 10)
            assert message.recipients[0].attempts == 1  # bounce retries are not attempts
            final = RecipientResult(RecipientState.BOUNCED, Reply.parse("550 5.1.1 no such user"))
            await store.record_result(queue_id, 1, final)
            assert await store.get(queue_id) is None

    run(test)


# ---------------------------------------------------------------- administration


def test_list_and_get_show_every_message_with_all_its_recipients(
    make_store: StoreFactory,
) -> None:
    async def test() -> None:
        async with opened(make_store) as store:
            targets = [Target(ALICE, ALICE, True), Target(BOB, BOB, False)]
            first = await put(store, b"first", targets)
            second = await put(store, b"second!", sender=None)
            await store.claim_due(time.time() + 1, 10)
            await store.record_result(
                first, 0, RecipientResult(RecipientState.DELIVERED, Reply.parse("250"))
            )
            listed = await store.list()
            assert [m.queue_id for m in listed] == [first, second]  # oldest first
            assert listed == [await store.get(first), await store.get(second)]
            assert [(r.index, r.state) for r in listed[0].recipients] == [
                (0, RecipientState.DELIVERED),  # a final recipient is still shown
                (1, RecipientState.QUEUED),
            ]
            assert (listed[0].sender, listed[0].size) == (SENDER, len(b"first"))
            assert (listed[1].sender, listed[1].size) == (None, len(b"second!"))
            assert await store.get("no-such-message") is None

    run(test)


def test_remove_deletes_the_message_and_its_body_and_later_results_are_ignored(
    make_store: StoreFactory,
) -> None:
    async def test() -> None:
        async with opened(make_store) as store:
            queue_id = await put(store, b"to be removed")
            kept = await put(store, b"kept")
            await store.claim_due(time.time() + 1, 10)
            assert await store.remove(queue_id) is True
            assert await store.remove(queue_id) is False
            await store.record_result(
                queue_id, 0, RecipientResult(RecipientState.DELIVERED, Reply.parse("250"))
            )
            assert [m.queue_id for m in await store.list()] == [kept]
            with pytest.raises(StorageError):
                async with store.read_body(queue_id):
                    pass
            assert await body_of(store, kept) == b"kept"

    run(test)


# ---------------------------------------------------------------- bodies


@pytest.mark.parametrize("size", [0, 1, 65_536, 65_537, 3 * 1024 * 1024 + 17])
def test_a_body_round_trips_byte_exact_through_the_async_reader(
    make_store: StoreFactory, size: int
) -> None:
    body = hashlib.sha256(str(size).encode()).digest() * (size // 32 + 1)
    body = body[:size]

    async def test() -> None:
        async with opened(make_store) as store:
            queue_id = await put(store, body)
            assert await body_of(store, queue_id) == body  # iterated
            async with store.read_body(queue_id) as reader:  # read in uneven pieces
                first = await reader.read(1000)
                rest = []
                while piece := await reader.read(70_000):
                    rest.append(piece)
                assert await reader.read(10) == b""
            assert first + b"".join(rest) == body
            assert all(len(piece) == 70_000 for piece in rest[:-1])  # fewer only at the end
            message = await store.get(queue_id)
            assert message is not None and message.size == size

    run(test)


class MemorySpool:
    """A BodySpool of the test's own making: the body stays in memory whatever its size."""

    def __init__(self) -> None:
        self._body = bytearray()
        self._owned = False

    def write(self, data: bytes) -> None:
        self._body += data

    @property
    def size(self) -> int:
        return len(self._body)

    def discard(self) -> None:
        if not self._owned:
            self._body = bytearray()

    def take_ownership(self) -> None:
        if self._owned:
            raise ValueError("enqueued already")
        self._owned = True

    @property
    def on_disk(self) -> bool:
        return False

    def take_bytes(self) -> bytes:
        body, self._body = bytes(self._body), bytearray()
        return body

    def seal(self, final_path: Path) -> None:
        raise ValueError("the body is in memory, there is no file to seal")

    def remove(self) -> None:
        self._body = bytearray()


def test_enqueue_takes_any_body_spool_not_only_its_own(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    """The interface's BodySpool is all a store may ask of a spool: one of another kind,
    or one made elsewhere that spilled to a file of its own, is stored like its own."""
    (tmp_path / "elsewhere").mkdir()

    async def test() -> None:
        async with opened(make_store) as store:
            in_memory = MemorySpool()
            in_memory.write(b"kept in memory")
            in_file = SpillingSpool(tmp_path / "elsewhere", memory_limit=0)
            in_file.write(b"spilled to a file")
            assert in_file.on_disk
            first = await store.enqueue(SENDER, [Target(ALICE, ALICE, True)], in_memory)
            second = await store.enqueue(SENDER, [Target(ALICE, ALICE, True)], in_file)
            assert await body_of(store, first) == b"kept in memory"
            assert await body_of(store, second) == b"spilled to a file"
        assert list((tmp_path / "elsewhere").iterdir()) == []  # the store took the file

    run(test)


def test_a_spool_is_enqueued_once_and_never_after_it_was_discarded(
    make_store: StoreFactory,
) -> None:
    async def test() -> None:
        async with opened(make_store) as store:
            discarded = store.new_spool()
            discarded.write(b"abandoned transaction")
            discarded.discard()
            with pytest.raises(ValueError):
                await store.enqueue(SENDER, [Target(ALICE, ALICE, True)], discarded)
            spool = store.new_spool()
            spool.write(b"stored once")
            await store.enqueue(SENDER, [Target(ALICE, ALICE, True)], spool)
            spool.discard()  # a no-op: the store owns it now
            with pytest.raises(ValueError):
                await store.enqueue(SENDER, [Target(ALICE, ALICE, True)], spool)
            [message] = await store.list()
            assert await body_of(store, message.queue_id) == b"stored once"

    run(test)


# ---------------------------------------------------------------- restarts and durability


def test_a_restart_keeps_every_message_its_states_and_its_body(make_store: StoreFactory) -> None:
    bodies = [b"", b"small", b"x" * (2 * 1024 * 1024)]

    async def test() -> None:
        now = time.time() + 1
        async with opened(make_store) as store:
            ids = [await put(store, body, [Target(ALICE, ALICE, True)]) for body in bodies]
            await store.claim_due(now, 10)
            deferred = RecipientResult(
                RecipientState.DEFERRED, Reply.parse("451 4.3.0 later"), now + 600
            )
            await store.record_result(ids[1], 0, deferred)
            bouncing = RecipientResult(
                RecipientState.BOUNCING, Reply.parse("550 5.1.1 no"), now + 900
            )
            await store.record_result(ids[2], 0, bouncing)
            before = await store.list()
        async with opened(make_store) as store:
            assert await store.list() == before
            for queue_id, body in zip(ids, bodies, strict=True):
                assert await body_of(store, queue_id) == body

    run(test)


def test_restart_offers_in_flight_recipients_again(make_store: StoreFactory) -> None:
    async def test() -> None:
        now = time.time() + 1
        async with opened(make_store) as store:
            queue_id = await put(store, b"body")
            assert len(await store.claim_due(now, 10)) == 1  # "crash" mid-delivery
        async with opened(make_store) as store:
            [message] = await store.claim_due(now, 10)
            assert message.queue_id == queue_id
            assert await body_of(store, queue_id) == b"body"

    run(test)


def test_many_concurrent_enqueues_are_each_stored_and_survive_a_restart(
    make_store: StoreFactory,
) -> None:
    """Group commit may batch them; each enqueue still returns only once its message is stored."""
    count = 200

    async def test() -> None:
        bodies = {}
        async with opened(make_store) as store:

            async def one(number: int) -> None:
                body = f"message {number}\r\n".encode() * (1 + number % 7)
                bodies[await put(store, body)] = body

            await asyncio.gather(*(one(n) for n in range(count)))
        assert len(bodies) == count
        async with opened(make_store) as store:
            assert {m.queue_id for m in await store.list()} == set(bodies)
            for queue_id, body in bodies.items():
                assert await body_of(store, queue_id) == body

    run(test)


def test_empty_body_round_trips(make_store: StoreFactory) -> None:
    async def test() -> None:
        async with opened(make_store) as store:
            queue_id = await put(store, b"")
            assert await body_of(store, queue_id) == b""
        async with opened(make_store) as store:  # and is not taken for damaged at start-up
            assert await store.get(queue_id) is not None

    run(test)


def test_operations_on_a_closed_store_raise_storage_error(make_store: StoreFactory) -> None:
    async def test() -> None:
        store = make_store()
        with pytest.raises(StorageError):
            await store.list()
        await store.open()
        queue_id = await put(store, b"body")
        await store.close()
        with pytest.raises(StorageError):
            await store.claim_due(time.time(), 1)
        with pytest.raises(StorageError):
            async with store.read_body(queue_id):
                pass

    run(test)
