"""The queue store alone: how many messages a second ``enqueue`` takes (1 KiB unless --size),
median wait for each (the time a session waits before its 250), from N concurrent tasks.

    PYTHONPATH=src python benchmarks/enqueue_rate.py --concurrency 20 --count 50
    PYTHONPATH=src python benchmarks/enqueue_rate.py --store write-once-fdatasync

No network and no delivery: this isolates what storing a message costs, so
that a change of the store can be compared on a busy machine where the whole
server's figures move too much (docs/performance.md, issue 19).  Run it by
hand; it prints and asserts nothing.  The store is made in a temporary
directory under ``--dir`` (the disk under test) and removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from mailwright.model import Address
from mailwright.queue.base import Target
from mailwright.queue.sqlite import SqliteQueueStore

SENDER = Address("sender", "example.test")
RCPT = Address("alice", "example.test")


async def measure(
    directory: str | None, concurrency: int, count: int, size: int, options: Any
) -> None:
    with tempfile.TemporaryDirectory(dir=directory) as data_dir:
        store = SqliteQueueStore(Path(data_dir), **options)
        await store.open()
        waits: list[float] = []

        async def session() -> None:
            for _ in range(count):
                spool = store.new_spool()
                spool.write(b"x" * size)
                started = time.perf_counter()
                await store.enqueue(SENDER, [Target(RCPT, RCPT, True)], spool)
                waits.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(session() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        await store.close()
    rate = concurrency * count / elapsed
    median = statistics.median(waits) * 1e3
    print(f"concurrency {concurrency}: {rate:,.0f} messages/s, median wait {median:.2f} ms")


#: --store: the SqliteQueueStore options of each way of storing.
STORES: dict[str, dict[str, Any]] = {
    "default": {},
    "write-once-syncfs": {"use_syncfs": True},
    "write-once-fdatasync": {"use_syncfs": False},
    "in-sqlite": {"write_once_from": None},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dir", default=None, help="where the store goes (default: /tmp)")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--count", type=int, default=50, help="messages per task")
    parser.add_argument("--size", type=int, default=1024, help="octets per message")
    parser.add_argument(
        "--store",
        choices=tuple(STORES),
        default="default",
        help="how the store keeps a message for one local recipient (write once, synced with"
        " syncfs or file by file; or in SQLite, as before issue 19)",
    )
    args = parser.parse_args()
    options = STORES[args.store]
    asyncio.run(measure(args.dir, args.concurrency, args.count, args.size, options))


if __name__ == "__main__":
    main()
