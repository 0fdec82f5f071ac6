"""LocalDelivery: Maildir writes in batches, against a real queue and real directories."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from pathlib import Path

import pytest

from mailwright.delivery.local import MAX_BATCH, LocalDelivery
from mailwright.delivery.outcome import Outcome
from mailwright.durable import DirectorySyncer
from mailwright.model import Address
from mailwright.queue.base import QueuedMessage, QueuedRecipient, Target
from mailwright.queue.sqlite import SqliteQueueStore

SENDER = Address("sender", "example.test")
ALICE = Address("alice", "example.test")
BOB = Address("bob", "example.test")


class CountingDelivery(LocalDelivery):
    """Remembers the size of every batch a thread was given."""

    def __init__(self, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.batches: list[int] = []

    def _deliver_batch(
        self, jobs: Sequence[tuple[QueuedMessage, QueuedRecipient]]
    ) -> list[Outcome]:
        self.batches.append(len(jobs))
        return super()._deliver_batch(jobs)


class FailingSyncer(DirectorySyncer):
    """A directory fsync that fails, as on a disk that reports an I/O error."""

    def _fsync(self, path: Path | str) -> None:
        raise OSError(5, "Input/output error")


async def queued(
    store: SqliteQueueStore, bodies: Sequence[bytes], to: Address
) -> list[QueuedMessage]:
    for body in bodies:
        spool = store.new_spool()
        spool.write(body)
        await store.enqueue(SENDER, [Target(to, to, True)], spool)
    return await store.claim_due(time.time(), len(bodies) + 1)


@contextlib.asynccontextmanager
async def delivering(
    data_dir: Path, threads: int, kind: type[LocalDelivery] = LocalDelivery
) -> AsyncIterator[tuple[SqliteQueueStore, LocalDelivery]]:
    """A real queue in ``data_dir`` and a LocalDelivery on it, both closed at the end."""
    store = SqliteQueueStore(data_dir)
    await store.open()
    local = kind(data_dir=data_dir, hostname="mx.test", store=store, threads=threads)
    try:
        yield store, local
    finally:
        local.shutdown()
        await store.close()


def deliver_all(
    local: LocalDelivery, messages: Sequence[QueuedMessage]
) -> Awaitable[list[Outcome]]:
    return asyncio.gather(*(local.deliver(m, m.recipients[0]) for m in messages))


def new_files(data_dir: Path, local: str) -> list[bytes]:
    new = data_dir / "mailboxes" / "example.test" / local / "new"
    return sorted(path.read_bytes() for path in new.iterdir()) if new.is_dir() else []


def body_of(message: bytes) -> bytes:
    return message.split(b"\r\n", 2)[2]


def test_deliveries_asked_for_together_share_batches_and_all_arrive(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with delivering(tmp_path, 2, CountingDelivery) as (store, local):
            bodies = [b"Subject: %d\r\n\r\nhi\r\n" % n for n in range(100)]
            messages = await queued(store, bodies, ALICE)
            outcomes = await deliver_all(local, messages)
        assert all(outcome.success for outcome in outcomes)
        assert sorted(body_of(m) for m in new_files(tmp_path, "alice")) == sorted(bodies)
        assert isinstance(local, CountingDelivery)
        assert sum(local.batches) == 100
        assert len(local.batches) < 100  # batched: fewer thread hand-offs than messages
        assert max(local.batches) <= MAX_BATCH

    asyncio.run(scenario())


def test_a_lone_delivery_is_not_held_back(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with delivering(tmp_path, 4, CountingDelivery) as (store, local):
            (message,) = await queued(store, [b"Subject: one\r\n\r\nx\r\n"], ALICE)
            outcome = await local.deliver(message, message.recipients[0])
        assert outcome.success and str(outcome.reply).startswith("250")
        assert isinstance(local, CountingDelivery)
        assert local.batches == [1]
        (delivered,) = new_files(tmp_path, "alice")
        assert delivered.startswith(b"Return-Path: <sender@example.test>\r\n")
        assert b"Delivered-To: alice@example.test\r\n" in delivered

    asyncio.run(scenario())


def test_one_bad_mailbox_in_a_batch_fails_alone(tmp_path: Path) -> None:
    """A hostile local part gets a permanent 550; the batch's other messages arrive."""

    async def scenario() -> None:
        async with delivering(tmp_path, 1) as (store, local):
            good = await queued(store, [b"good %d\r\n" % n for n in range(3)], ALICE)
            bad = await queued(store, [b"bad\r\n"], Address("../escape", "example.test"))
            jobs = [good[0], *bad, good[1], good[2]]
            outcomes = await deliver_all(local, jobs)
        assert [o.success for o in outcomes] == [True, False, True, True]
        assert outcomes[1].permanent and str(outcomes[1].reply).startswith("550 5.1.3")
        assert len(new_files(tmp_path, "alice")) == 3
        assert not (tmp_path / "mailboxes" / "escape").exists()

    asyncio.run(scenario())


@pytest.mark.parametrize("removed", ["", "new", "tmp"])
def test_a_maildir_removed_after_a_delivery_is_made_again(tmp_path: Path, removed: str) -> None:
    """The Maildirs known to exist are a cache: the whole Maildir, or its new/ or tmp/,
    deleted behind its back is made again at once, and the next delivery arrives."""

    async def scenario() -> None:
        mailbox = tmp_path / "mailboxes" / "example.test" / "bob"
        async with delivering(tmp_path, 1) as (store, local):
            (first,) = await queued(store, [b"first\r\n"], BOB)
            assert (await local.deliver(first, first.recipients[0])).success
            shutil.rmtree(mailbox / removed if removed else mailbox)
            (second,) = await queued(store, [b"second\r\n"], BOB)
            outcome = await local.deliver(second, second.recipients[0])
        assert outcome.success
        delivered = [body_of(m) for m in new_files(tmp_path, "bob")]
        assert delivered == ([b"first\r\n"] if removed == "tmp" else []) + [b"second\r\n"]
        for sub in ("tmp", "new", "cur"):
            assert (mailbox / sub).is_dir()
        assert os.listdir(mailbox / "tmp") == []

    asyncio.run(scenario())


def test_a_failed_directory_sync_defers_the_whole_batch_and_takes_the_files_back(
    tmp_path: Path,
) -> None:
    """Without the new/ fsync a rename may not survive a crash: nothing is called delivered."""

    async def scenario() -> None:
        async with delivering(tmp_path, 1) as (store, local):
            local._syncer = FailingSyncer()
            messages = await queued(store, [b"m%d\r\n" % n for n in range(5)], ALICE)
            outcomes = await deliver_all(local, messages)
        assert all(not o.success and not o.permanent for o in outcomes)
        assert all(str(o.reply).startswith("451 4.3.0") for o in outcomes)
        mailbox = tmp_path / "mailboxes" / "example.test" / "alice"
        assert os.listdir(mailbox / "new") == []
        assert os.listdir(mailbox / "tmp") == []

    asyncio.run(scenario())


def test_a_copy_not_begun_by_its_deadline_is_not_written(tmp_path: Path) -> None:
    """An attempt must end before its claim on the queue lapses: a copy still waiting for
    a Maildir writer at its deadline is deferred unwritten; one in time is written."""

    async def scenario() -> None:
        async with delivering(tmp_path, 1) as (store, local):
            late, in_time = await queued(store, [b"late\r\n", b"in time\r\n"], ALICE)
            now = asyncio.get_running_loop().time()
            outcomes = await asyncio.gather(
                local.deliver(late, late.recipients[0], start_by=now),
                local.deliver(in_time, in_time.recipients[0], start_by=now + 60),
            )
        assert not outcomes[0].success and not outcomes[0].permanent
        assert str(outcomes[0].reply).startswith("451 4.3.0")
        assert outcomes[1].success
        assert [body_of(m) for m in new_files(tmp_path, "alice")] == [b"in time\r\n"]

    asyncio.run(scenario())
