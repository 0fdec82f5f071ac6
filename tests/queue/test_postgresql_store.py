"""What the PostgreSQL store does beyond the contract (test_contract.py runs that on it):
the schema's version, node names, claims by several nodes at once, leases renewed while
a node lives, LISTEN/NOTIFY, bodies read in chunks, and a database that is not there."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from mailwright.errors import QueueUnavailable, StorageError
from mailwright.protocol.reply import Reply
from mailwright.queue.base import RecipientResult, RecipientState, Target
from mailwright.queue.postgresql import DatabaseAddress, NodeNameTaken, PostgresQueueStore
from mailwright.queue.postgresql.schema import CHUNK_SIZE, SCHEMA_VERSION
from tests.helpers import run
from tests.peers import free_port
from tests.queue.contract import ALICE, BOB, body_of, put
from tests.queue.postgresql import empty_queue, pg_database, pg_store  # noqa: F401 - a fixture


@contextlib.asynccontextmanager
async def two_nodes(
    url: str, tmp_path: Path, lease_seconds: float = 60.0
) -> AsyncIterator[tuple[PostgresQueueStore, PostgresQueueStore]]:
    """Nodes mx1 and mx2 on one database, open; closed (mx2 first) after the block."""
    one = pg_store(url, tmp_path / "a", node="mx1", lease_seconds=lease_seconds)
    two = pg_store(url, tmp_path / "b", node="mx2", lease_seconds=lease_seconds)
    await one.open()
    try:
        await two.open()
        try:
            yield one, two
        finally:
            await two.close()
    finally:
        await one.close()  # a clean stop ends its claims: due again at once


@pytest.fixture
def url(pg_database: str) -> str:  # noqa: F811 - the module's database, emptied for each test
    empty_queue(pg_database)
    return pg_database


def test_a_schema_newer_than_the_code_is_refused_with_one_line(url: str, tmp_path: Path) -> None:
    async def test() -> None:
        store = pg_store(url, tmp_path)
        await store.open()
        await store.close()
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("UPDATE mailwright_schema SET version = %s", (SCHEMA_VERSION + 1,))
        try:
            with pytest.raises(StorageError) as refused:
                await pg_store(url, tmp_path).open()
        finally:
            with psycopg.connect(url, autocommit=True) as connection:
                connection.execute("UPDATE mailwright_schema SET version = %s", (SCHEMA_VERSION,))
        message = str(refused.value)
        assert "\n" not in message
        assert f"schema {SCHEMA_VERSION + 1}, newer than this mailwright understands" in message

    run(test)


def test_a_second_live_node_of_the_same_name_is_refused_until_the_first_stops(
    url: str, tmp_path: Path
) -> None:
    async def test() -> None:
        first = pg_store(url, tmp_path / "a", node="mx1")
        await first.open()
        try:
            with pytest.raises(NodeNameTaken, match="another live mailwright node named 'mx1'"):
                await pg_store(url, tmp_path / "b", node="mx1").open()
            other = pg_store(url, tmp_path / "c", node="mx2")  # another name is fine
            await other.open()
            await other.close()
        finally:
            await first.close()
        again = pg_store(url, tmp_path / "b", node="mx1")
        await again.open()
        await again.close()

    run(test)


def test_two_nodes_claiming_at_once_never_claim_the_same_recipient(
    url: str, tmp_path: Path
) -> None:
    count = 120

    async def test() -> None:
        async with two_nodes(url, tmp_path) as (one, two):
            targets = [Target(ALICE, ALICE, True), Target(BOB, BOB, False)]
            queued = set(await asyncio.gather(*(put(one, b"x", targets) for _ in range(count))))
            now = time.time() + 1
            claimed: dict[str, list[tuple[str, int]]] = {"mx1": [], "mx2": []}

            async def drain(store: PostgresQueueStore) -> None:
                while batch := await store.claim_due(now, 7):
                    for message in batch:
                        claimed[store.node] += [
                            (message.queue_id, r.index) for r in message.recipients
                        ]

            await asyncio.gather(drain(one), drain(two), drain(one), drain(two))
        everything = claimed["mx1"] + claimed["mx2"]
        assert len(everything) == len(set(everything)) == 2 * count  # each exactly once
        assert {queue_id for queue_id, _ in everything} == queued
        assert claimed["mx1"] and claimed["mx2"]  # both took part

    run(test)


def test_an_expired_lease_of_one_node_is_taken_by_another(url: str, tmp_path: Path) -> None:
    async def test() -> None:
        async with two_nodes(url, tmp_path, lease_seconds=60) as (one, two):
            queue_id = await put(one, b"body")
            now = time.time() + 1
            assert len(await one.claim_due(now, 10)) == 1
            assert await two.claim_due(now + 59, 10) == []
            [taken] = await two.claim_due(now + 60, 10)
            assert taken.queue_id == queue_id
            # The first node's late result still counts (at-least-once), then the second's
            # result for a final recipient is ignored.
            delivered = RecipientResult(RecipientState.DELIVERED, Reply.parse("250 ok"))
            await one.record_result(queue_id, 0, delivered)
            await two.record_result(queue_id, 0, delivered)
            assert await two.get(queue_id) is None

    run(test)


def leases(url: str) -> list[tuple[float, str | None]]:
    with psycopg.connect(url, autocommit=True) as connection:
        return [
            (float(until), node)
            for until, node in connection.execute(
                "SELECT lease_until, lease_node FROM recipients ORDER BY queue_id, idx"
            )
        ]


def test_a_live_node_renews_its_leases_so_no_other_node_takes_a_long_delivery(
    url: str, tmp_path: Path
) -> None:
    async def test() -> None:
        async with two_nodes(url, tmp_path, lease_seconds=0.6) as (one, two):
            await put(one, b"body")
            claimed_at = time.time()
            assert len(await one.claim_due(claimed_at, 10)) == 1
            [(first_until, node)] = leases(url)
            assert node == "mx1"
            # Wait until the lease was renewed past the first expiry, twice over.
            while leases(url)[0][0] < first_until + 0.6:
                await asyncio.sleep(0.05)
            assert await two.claim_due(first_until + 0.1, 10) == []  # the first lease is over
        assert leases(url) == [(0.0, None)]

    run(test)


def test_new_mail_on_one_node_wakes_the_other_by_notify(url: str, tmp_path: Path) -> None:
    async def test() -> None:
        woken = asyncio.Event()
        listener = pg_store(url, tmp_path / "a", node="mx1")
        listener.on_new_mail(woken.set)
        sender = pg_store(url, tmp_path / "b", node="mx2")
        await listener.open()
        await sender.open()
        try:
            await asyncio.sleep(0)  # nothing came yet
            assert not woken.is_set()
            await put(sender, b"hello")
            await asyncio.wait_for(woken.wait(), 10)
            woken.clear()
            assert await sender.retry_now() == 1  # ``mailwright queue retry`` wakes too
            await asyncio.wait_for(woken.wait(), 10)
        finally:
            await sender.close()
            await listener.close()

    run(test)


def test_the_node_listens_again_after_its_connection_was_terminated(
    url: str, tmp_path: Path
) -> None:
    async def test() -> None:
        woken = asyncio.Event()
        store = pg_store(url, tmp_path / "a", node="mx1")
        store.on_new_mail(woken.set)
        await store.open()
        try:
            with psycopg.connect(url, autocommit=True) as connection:
                killed = connection.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchone()
            assert killed and killed[0] >= 1
            await asyncio.wait_for(woken.wait(), 20)  # reconnected: woken for what it missed
            woken.clear()
            await put(store, b"after")  # the pool replaced its connections too
            await asyncio.wait_for(woken.wait(), 20)
            with pytest.raises(NodeNameTaken):  # and it holds its name again
                await pg_store(url, tmp_path / "b", node="mx1").open()
        finally:
            await store.close()

    run(test)


def test_a_25_mb_body_is_stored_once_and_read_a_chunk_at_a_time(url: str, tmp_path: Path) -> None:
    size = 25 * 1024 * 1024 + 123
    digest = hashlib.sha256()

    async def test() -> None:
        store = pg_store(url, tmp_path)
        await store.open()
        try:
            spool = store.new_spool()
            block = hashlib.sha256(b"seed").digest() * 2048  # 64 KiB
            written = 0
            while written < size:
                piece = block[: size - written]
                spool.write(piece)
                digest.update(piece)
                written += len(piece)
            assert spool.on_disk
            queue_id = await store.enqueue(None, [Target(ALICE, ALICE, True)], spool)
            with psycopg.connect(url, autocommit=True) as connection:
                rows = connection.execute(
                    "SELECT count(*), sum(length(data)) FROM body_chunks WHERE queue_id = %s",
                    (queue_id,),
                ).fetchone()
            assert rows == (-(-size // CHUNK_SIZE), size)  # stored once, in chunks

            tracemalloc.start()
            try:
                read = hashlib.sha256()
                async with store.read_body(queue_id) as body:
                    async for piece in body:
                        read.update(piece)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert read.hexdigest() == digest.hexdigest()
            assert peak < 4 * CHUNK_SIZE, peak  # a chunk or two, never the message

            def in_a_thread() -> str:  # the Maildir writers' blocking path
                with store.open_body(queue_id) as file:
                    copy = hashlib.sha256()
                    while piece := file.read(100_000):
                        copy.update(piece)
                    return copy.hexdigest()

            assert await asyncio.to_thread(in_a_thread) == digest.hexdigest()
            with pytest.raises(RuntimeError):
                store.open_body(queue_id)  # never on the event loop
        finally:
            await store.close()

    run(test)


def test_bodies_of_several_chunks_held_in_memory_round_trip_through_group_commit(
    url: str, tmp_path: Path
) -> None:
    async def test() -> None:
        store = pg_store(url, tmp_path)
        await store.open()
        try:
            bodies = [bytes([n]) * (CHUNK_SIZE * 2 + n) for n in range(5)]
            ids = await asyncio.gather(*(put(store, body) for body in bodies))
            for queue_id, body in zip(ids, bodies, strict=True):
                assert await body_of(store, queue_id) == body
            assert store.commit_stats.jobs == len(bodies)
            assert store.commit_stats.commits < len(bodies)  # some shared a commit
        finally:
            await store.close()

    run(test)


def test_results_recorded_at_once_share_a_commit_and_are_there_after_a_restart(
    url: str, tmp_path: Path
) -> None:
    """Each of four messages has two recipients: one delivered, one deferred. The eight
    results are recorded at once; they share commits, and a store opened afterwards sees
    every one (the deferred with its reply and retry time, the delivered final)."""

    async def test() -> None:
        later = time.time() + 3600
        deferred = RecipientResult(RecipientState.DEFERRED, Reply.parse("451 later"), later)
        delivered = RecipientResult(RecipientState.DELIVERED, Reply.parse("250 ok"))
        store = pg_store(url, tmp_path)
        await store.open()
        try:
            targets = [Target(ALICE, ALICE, True), Target(BOB, BOB, False)]
            ids = [await put(store, b"body %d" % n, targets) for n in range(4)]
            assert len(await store.claim_due(time.time(), 10)) == len(ids)
            await asyncio.gather(
                *(store.record_result(queue_id, 0, delivered) for queue_id in ids),
                *(store.record_result(queue_id, 1, deferred) for queue_id in ids),
            )
            assert store.result_commit_stats.jobs == 2 * len(ids)
            assert store.result_commit_stats.commits < 2 * len(ids)  # some shared a commit
        finally:
            await store.close()
        again = pg_store(url, tmp_path)
        await again.open()
        try:
            for queue_id in ids:
                message = await again.get(queue_id)
                assert message is not None
                first, second = message.recipients
                assert first.state is RecipientState.DELIVERED
                assert second.state is RecipientState.DEFERRED
                assert second.next_attempt == later
                assert second.last_reply == Reply.parse("451 later")
                assert len(await again.history(queue_id)) == 2
            # The last result of each message removes it, batched too.
            await asyncio.gather(*(again.record_result(queue_id, 1, delivered) for queue_id in ids))
            assert [await again.get(queue_id) for queue_id in ids] == [None] * len(ids)
        finally:
            await again.close()

    run(test)


def test_no_database_listening_is_a_temporary_failure_naming_it_without_password(
    tmp_path: Path,
) -> None:
    port = free_port()
    address = DatabaseAddress(f"postgresql://mail@127.0.0.1:{port}/queue", password="s3cret")

    async def test() -> None:
        store = PostgresQueueStore(address, node="mx1", data_dir=tmp_path, connect_wait=1)
        with pytest.raises(QueueUnavailable) as unavailable:
            await store.open()
        text = str(unavailable.value)
        assert f"mail@127.0.0.1:{port}/queue" in text
        assert "s3cret" not in text and "s3cret" not in repr(address)
        with pytest.raises(StorageError):
            await store.list()

    run(test)


def test_enqueue_while_the_database_refuses_connections_fails_as_unavailable_then_recovers(
    url: str, tmp_path: Path
) -> None:
    """Nothing is half stored: the enqueue that failed left no row; the next one works."""
    database = url.rsplit("/", 1)[1]

    def allow(yes: bool) -> None:
        from tests.queue.postgresql import server_url

        with psycopg.connect(server_url(), autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(yes).lower()}')
            if not yes:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (database,),
                )

    async def test() -> None:
        store = PostgresQueueStore(
            DatabaseAddress(url), node="mx1", data_dir=tmp_path, connect_wait=1
        )
        await store.open()
        try:
            allow(False)
            try:
                with pytest.raises(QueueUnavailable):
                    await put(store, b"refused")
                with pytest.raises(QueueUnavailable):
                    await store.claim_due(time.time(), 10)
            finally:
                allow(True)
            kept = await stored_once_back(store)
            assert [m.queue_id for m in await store.list()] == [kept]
        finally:
            await store.close()

    run(test)


async def stored_once_back(store: PostgresQueueStore, timeout: float = 30) -> str:
    """Enqueue as soon as the pool has a connection again (it reconnects with back-off):
    until then every attempt fails as unavailable, never otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await put(store, b"kept")
        except QueueUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def test_ids_made_by_nodes_at_once_differ(tmp_path: Path) -> None:
    from mailwright.queue.postgresql.ids import ClusterQueueIds

    made: list[str] = []
    generators = [ClusterQueueIds() for _ in range(4)]

    def make(generator: ClusterQueueIds) -> None:
        made.extend(generator() for _ in range(5000))

    threads = [threading.Thread(target=make, args=(g,)) for g in generators]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(made)) == len(made) == 20000
    assert all(len(queue_id) == 16 for queue_id in made)


def test_a_claim_the_node_never_received_lapses_while_its_deliveries_are_renewed(
    url: str, tmp_path: Path
) -> None:
    """A claim committed while its answer was lost (the connection cut at that moment)
    carries the node's name but no delivery runs it: it must lapse after one lease and go
    to another node, not be renewed for as long as the node lives."""

    async def test() -> None:
        # The same node name in the admin role makes such a claim: no delivery of mx1's
        # runs it, though the lease says mx1.
        lost = PostgresQueueStore(
            DatabaseAddress(url),
            node="mx1",
            data_dir=tmp_path / "c",
            role="admin",
            lease_seconds=0.6,
        )
        async with two_nodes(url, tmp_path, lease_seconds=0.6) as (one, two):
            await lost.open()
            try:
                orphan = await put(one, b"its claim's answer was lost")
                running = await put(one, b"being delivered")
                [claimed] = await lost.claim_due(time.time(), 1)
                assert claimed.queue_id == orphan
                [delivering] = await one.claim_due(time.time(), 10)
                assert delivering.queue_id == running
                orphan_until = lease_of(url, orphan)
                while lease_of(url, running) < orphan_until + 0.6:  # renewed, twice over
                    await asyncio.sleep(0.05)
                assert lease_of(url, orphan) == orphan_until  # never renewed
                [taken] = await two.claim_due(time.time(), 10)
                assert taken.queue_id == orphan
            finally:
                await lost.close()

    run(test)


def lease_of(url: str, queue_id: str) -> float:
    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute(
            "SELECT lease_until FROM recipients WHERE queue_id = %s", (queue_id,)
        ).fetchone()
    assert row is not None
    return float(row[0])
