"""The embedded queue store: SQLite in WAL mode under data_dir (see store.py for its parts)."""

from mailwright.queue.sqlite.ids import QueueIdGenerator
from mailwright.queue.sqlite.store import (
    DEFAULT_BUSY_TIMEOUT,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_BATCH,
    DEFAULT_MEMORY_SPOOL_LIMIT,
    DEFAULT_READ_THREADS,
    DEFAULT_SYNC_THREADS,
    SqliteQueueStore,
    StoreRole,
)
from mailwright.queue.sqlite.writer import CommitStats

__all__ = [
    "DEFAULT_BUSY_TIMEOUT",
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MEMORY_SPOOL_LIMIT",
    "DEFAULT_READ_THREADS",
    "DEFAULT_SYNC_THREADS",
    "CommitStats",
    "QueueIdGenerator",
    "SqliteQueueStore",
    "StoreRole",
]
