"""The shared queue: PostgreSQL, for several nodes (see store.py for its parts)."""

from mailwright.queue.postgresql.connect import DEFAULT_CONNECT_WAIT, DatabaseAddress
from mailwright.queue.postgresql.node import NodeNameTaken
from mailwright.queue.postgresql.store import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_POOL_SIZE,
    PostgresQueueStore,
)

__all__ = [
    "DEFAULT_CONNECT_WAIT",
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_POOL_SIZE",
    "DatabaseAddress",
    "NodeNameTaken",
    "PostgresQueueStore",
]
