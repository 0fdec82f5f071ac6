"""Crash-test child: link local copies into their Maildirs, then wait to be killed.

Run as ``python link_then_wait.py DATA_DIR COUNT``.  Enqueues COUNT messages for
one local recipient, claims them, delivers them (write once: each a hard link of
its queue file into new/, new/ synced) and prints ``linked`` without recording
a single result: the test kills this process with SIGKILL there, the crash
point between a delivery and its record in the queue.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from mailwright.delivery.local import DELIVERED, LocalDelivery
from mailwright.model import Address
from mailwright.queue.base import Target
from mailwright.queue.sqlite import SqliteQueueStore

SENDER = Address("sender", "example.test")
ALICE = Address("alice", "example.test")


async def main(data_dir: Path, count: int) -> None:
    store = SqliteQueueStore(data_dir)
    await store.open()
    for number in range(count):
        spool = store.new_spool()
        spool.write(b"Subject: %d\r\n\r\nbody %d\r\n" % (number, number))
        await store.enqueue(SENDER, [Target(ALICE, ALICE, True)], spool)
    messages = await store.claim_due(time.time() + 1, count)
    local = LocalDelivery(data_dir=data_dir, hostname="mx.test", store=store, threads=2)
    outcomes = await asyncio.gather(*(local.deliver(m, m.recipients[0]) for m in messages))
    assert outcomes == [DELIVERED] * count, outcomes
    print("linked", flush=True)
    await asyncio.Event().wait()  # until SIGKILL


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
