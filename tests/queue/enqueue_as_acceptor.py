"""Helper process: an acceptor-role store enqueueing beside the test's server-role store.

Run as ``python enqueue_as_acceptor.py DATA_DIR COUNT``.  Opens the queue with
``role="acceptor"``, prints ``ready``, waits for a line on stdin (so that both
processes start enqueueing together), then enqueues COUNT messages from
concurrent tasks and prints ``<queue id> <sha256 of body>`` for each once
``enqueue`` returned, then closes the store and exits.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
from pathlib import Path

from mailwright.model import Address
from mailwright.queue.base import Target
from mailwright.queue.sqlite import SqliteQueueStore

CONCURRENT_SENDERS = 16
MEMORY_SPOOL_LIMIT = 8 * 1024  # so that some bodies go to spool files
RCPT = Address("rcpt", "example.test")
SENDER = Address("sender", "example.test")


def body_for(origin: str, number: int) -> bytes:
    """Distinct per origin and number; 100 to 20,099 octets."""
    seed = hashlib.sha256(f"{origin} {number}".encode()).digest()
    size = 100 + (number * 7919) % 20_000
    return (seed * (size // len(seed) + 1))[:size]


async def enqueue_all(store: SqliteQueueStore, origin: str, count: int) -> dict[str, str]:
    """Enqueue ``count`` messages from concurrent tasks; queue id -> sha256 of the body."""
    numbers = iter(range(count))
    ids: dict[str, str] = {}

    async def sender() -> None:
        for number in numbers:
            body = body_for(origin, number)
            spool = store.new_spool()
            for start in range(0, len(body), 4096):
                spool.write(body[start : start + 4096])
            queue_id = await store.enqueue(SENDER, [Target(RCPT, RCPT, True)], spool)
            ids[queue_id] = hashlib.sha256(body).hexdigest()

    await asyncio.gather(*(sender() for _ in range(CONCURRENT_SENDERS)))
    return ids


async def main(data_dir: Path, count: int) -> None:
    store = SqliteQueueStore(data_dir, role="acceptor", memory_spool_limit=MEMORY_SPOOL_LIMIT)
    await store.open()
    try:
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        for queue_id, digest in (await enqueue_all(store, "acceptor", count)).items():
            print(queue_id, digest)
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
