"""Crash-test child: enqueue messages from concurrent tasks until killed.

Run as ``python enqueue_until_killed.py DATA_DIR``.  Prints ``ready`` once the
store is open, then ``<queue id> <sha256 of body>`` for every message, each
line written only after ``enqueue`` returned (the moment the server would send
250).  The test kills this process with SIGKILL and checks every printed id.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import sys
from pathlib import Path

from mailwright.model import Address
from mailwright.queue.base import Target
from mailwright.queue.sqlite import SqliteQueueStore

CONCURRENT_SENDERS = 16
MEMORY_SPOOL_LIMIT = 8 * 1024  # so that about half the bodies go to spool files


def body_for(number: int) -> bytes:
    seed = hashlib.sha256(str(number).encode()).digest()
    size = 100 + (number * 7919) % 20_000
    return (seed * (size // len(seed) + 1))[:size]


async def main(data_dir: Path) -> None:
    store = SqliteQueueStore(data_dir, memory_spool_limit=MEMORY_SPOOL_LIMIT)
    await store.open()
    print("ready", flush=True)
    numbers = itertools.count()
    rcpt = Address("rcpt", "example.test")

    async def sender() -> None:
        while True:
            body = body_for(next(numbers))
            spool = store.new_spool()
            for start in range(0, len(body), 4096):
                spool.write(body[start : start + 4096])
            queue_id = await store.enqueue(
                Address("sender", "example.test"), [Target(rcpt, rcpt, True)], spool
            )
            sys.stdout.write(f"{queue_id} {hashlib.sha256(body).hexdigest()}\n")
            sys.stdout.flush()

    await asyncio.gather(*(sender() for _ in range(CONCURRENT_SENDERS)))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
