"""LocalDelivery: Maildir writes in batches, against a real queue and real directories."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from pathlib import Path

import pytest

from mailwright.delivery.local import DELIVERED, MAX_BATCH, LocalDelivery
from mailwright.delivery.maildir import linked_name
from mailwright.delivery.outcome import Outcome
from mailwright.durable import DirectorySyncer
from mailwright.model import Address
from mailwright.queue.base import (
    QueuedMessage,
    QueuedRecipient,
    RecipientResult,
    RecipientState,
    Target,
)
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


# ---------------------------------------------------------------- write once


def test_a_message_for_one_local_recipient_is_linked_not_copied(tmp_path: Path) -> None:
    """The Maildir file is the queue's own file (same inode, no copy, nothing left in tmp/),
    with the trace lines once, and stays whole after the queue lets go of its name."""
    body = b"Subject: once\r\n\r\nwritten once\r\n"

    async def test() -> None:
        async with delivering(tmp_path, threads=1) as (store, local):
            (message,) = await queued(store, [body], ALICE)
            assert message.local_copy is not None
            inode = os.stat(message.local_copy).st_ino
            assert await deliver_all(local, [message]) == [DELIVERED]
            (path,) = (tmp_path / "mailboxes" / "example.test" / "alice" / "new").iterdir()
            assert path.stat().st_ino == inode and path.stat().st_nlink == 2
            assert message.queue_id in path.name
            assert list((path.parent.parent / "tmp").iterdir()) == []
            await store.record_result(
                message.queue_id, 0, RecipientResult(RecipientState.DELIVERED, DELIVERED.reply)
            )
            assert not os.path.exists(message.local_copy)
            assert path.stat().st_nlink == 1
            assert path.read_bytes() == (
                b"Return-Path: <sender@example.test>\r\nDelivered-To: alice@example.test\r\n" + body
            )

    asyncio.run(test())


def test_a_delivery_repeated_after_its_link_leaves_one_copy(tmp_path: Path) -> None:
    """An attempt that linked the copy but never recorded it (the state kill -9 leaves
    there; the test below kills a real process at that point) is made again
    after the restart: the name is taken by the same file, so that is the delivery."""

    async def test() -> None:
        async with delivering(tmp_path, threads=1) as (store, local):
            (message,) = await queued(store, [b"x\r\n"], ALICE)
            assert await deliver_all(local, [message]) == [DELIVERED]
        async with delivering(tmp_path, threads=1) as (store, local):
            (again,) = await store.claim_due(time.time() + 1, 10)
            assert again.queue_id == message.queue_id
            assert await deliver_all(local, [again]) == [DELIVERED]
        assert new_files(tmp_path, "alice") == [
            b"Return-Path: <sender@example.test>\r\nDelivered-To: alice@example.test\r\nx\r\n"
        ]

    asyncio.run(test())


def test_a_name_taken_by_another_file_gets_a_written_copy(tmp_path: Path) -> None:
    async def test() -> None:
        async with delivering(tmp_path, threads=1) as (store, local):
            (message,) = await queued(store, [b"mine\r\n"], ALICE)
            new = tmp_path / "mailboxes" / "example.test" / "alice" / "new"
            new.mkdir(parents=True)
            (new / linked_name(message.queue_id, message.received_at, "mx.test")).write_bytes(
                b"someone else's\r\n"
            )
            assert await deliver_all(local, [message]) == [DELIVERED]
        assert sorted(new_files(tmp_path, "alice")) == sorted(
            [
                b"someone else's\r\n",
                b"Return-Path: <sender@example.test>\r\nDelivered-To: alice@example.test\r\n"
                b"mine\r\n",
            ]
        )

    asyncio.run(test())


def test_kill_9_after_the_links_before_their_results_delivers_each_message_once(
    tmp_path: Path,
) -> None:
    """A real SIGKILL at the crash point between linking the copies into new/ and
    recording the deliveries: the next run claims them again, finds each name taken by
    the same file, and the Maildir ends with one copy of each, the queue with no file."""
    child = subprocess.Popen(
        [sys.executable, str(LINK_THEN_WAIT), str(tmp_path), "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()  # "linked" once all 20 are in new/, else EOF
    finally:
        child.kill()  # SIGKILL
        _, errors = child.communicate(timeout=60)
    assert line == b"linked\n", errors.decode()
    assert len(new_files(tmp_path, "alice")) == 20

    async def test() -> None:
        async with delivering(tmp_path, threads=2) as (store, local):
            again = await store.claim_due(time.time() + 1, 100)
            assert len(again) == 20
            assert await deliver_all(local, again) == [DELIVERED] * 20
            for message in again:
                await store.record_result(
                    message.queue_id,
                    0,
                    RecipientResult(RecipientState.DELIVERED, DELIVERED.reply),
                )
            assert await store.list() == []
        assert os.listdir(tmp_path / "spool") == ["tmp"]

    asyncio.run(test())
    bodies = new_files(tmp_path, "alice")
    assert sorted(body_of(b) for b in bodies) == sorted(
        b"Subject: %d\r\n\r\nbody %d\r\n" % (n, n) for n in range(20)
    )
    for path in (tmp_path / "mailboxes" / "example.test" / "alice" / "new").iterdir():
        assert path.stat().st_nlink == 1


LINK_THEN_WAIT = Path(__file__).with_name("link_then_wait.py")


def test_a_queue_name_left_after_the_delivery_was_recorded_is_removed_and_the_copy_stays(
    tmp_path: Path,
) -> None:
    """The state a kill between recording the delivery and unlinking the queue's name for
    the file leaves: no row, the name still there (a second link to the delivered copy).
    The next start removes the name; the Maildir's copy is whole and alone."""

    async def test() -> None:
        async with delivering(tmp_path, threads=1) as (store, local):
            (message,) = await queued(store, [b"kept\r\n"], ALICE)
            assert message.local_copy is not None
            assert await deliver_all(local, [message]) == [DELIVERED]
            await store.record_result(
                message.queue_id, 0, RecipientResult(RecipientState.DELIVERED, DELIVERED.reply)
            )
        (path,) = (tmp_path / "mailboxes" / "example.test" / "alice" / "new").iterdir()
        os.link(path, message.local_copy)  # the name as the kill left it
        async with delivering(tmp_path, threads=1) as (store, _):
            assert await store.list() == []
            assert not os.path.exists(message.local_copy)
        assert path.stat().st_nlink == 1
        assert body_of(path.read_bytes()) == b"kept\r\n"

    asyncio.run(test())
