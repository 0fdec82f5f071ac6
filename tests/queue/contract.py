"""What the contract tests need of a store, and the helpers they share with the store tests.

A store joins the contract suite (test_contract.py) with one entry in
STORE_FACTORIES: a function of a fresh, empty temporary directory and the
test's request (for fixtures such as a database) that returns a
``StoreFactory``.  The suite uses only the ``QueueStore`` interface
(queue/base.py); the PostgreSQL stores of a test share the module's fresh
database, emptied before each test.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Protocol

import pytest

from mailwright.model import Address
from mailwright.queue.base import QueueStore, Target
from mailwright.queue.sqlite import SqliteQueueStore
from tests.queue.postgresql import empty_queue, pg_store

#: The lease every store of the suite is made with (the lease test waits it out in
#: the stores' own time: ``claim_due(now)`` with ``now`` chosen by the test).
LEASE_SECONDS = 60.0

SENDER = Address("sender", "example.test")
ALICE = Address("alice", "example.test")
BOB = Address("bob", "elsewhere.test")


class StoreFactory(Protocol):
    """Makes unopened stores that all use one place: a store opened after another was
    closed sees everything that one stored.  Leases last LEASE_SECONDS."""

    def __call__(self) -> QueueStore: ...


def sqlite_stores(place: Path, request: pytest.FixtureRequest) -> StoreFactory:
    return lambda: SqliteQueueStore(place / "data", lease_seconds=LEASE_SECONDS)


def postgresql_stores(place: Path, request: pytest.FixtureRequest) -> StoreFactory:
    """Stores of one node on the module's database (the ``pg_database`` fixture)."""
    url = request.getfixturevalue("pg_database")
    empty_queue(url)
    return lambda: pg_store(url, place / "data", lease_seconds=LEASE_SECONDS)


#: Every store the contract suite runs against, by name.
STORE_FACTORIES: dict[str, Callable[[Path, pytest.FixtureRequest], StoreFactory]] = {
    "sqlite": sqlite_stores,
    "postgresql": postgresql_stores,
}


@contextlib.asynccontextmanager
async def opened(make_store: StoreFactory) -> AsyncIterator[QueueStore]:
    store = make_store()
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def put(
    store: QueueStore,
    body: bytes,
    targets: list[Target] | None = None,
    sender: Address | None = SENDER,
) -> str:
    """Enqueue ``body`` through the store's own spool, written in 64 KiB pieces."""
    spool = store.new_spool()
    for start in range(0, len(body), 64 * 1024):
        spool.write(body[start : start + 64 * 1024])
    return await store.enqueue(sender, targets or [Target(ALICE, ALICE, True)], spool)


async def body_of(store: QueueStore, queue_id: str) -> bytes:
    """The stored body, read on the event loop through the async reader."""
    pieces = []
    async with store.read_body(queue_id) as body:
        async for piece in body:
            pieces.append(piece)
    return b"".join(pieces)
