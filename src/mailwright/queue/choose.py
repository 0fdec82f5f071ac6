"""The store ``[queue] backend`` names, built for app.py and ``mailwright queue``.

Nothing else knows which backend it talks to: the server, delivery and the
CLI see a ``QueueStore`` (queue/base.py).  psycopg is imported only when the
PostgreSQL queue is chosen.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from mailwright.config import Config
from mailwright.queue.base import QueueStore
from mailwright.queue.sqlite import SqliteQueueStore, StoreRole


def build_queue_store(config: Config, role: StoreRole) -> QueueStore:
    """The configured queue store, not yet opened."""
    queue = config.queue
    if queue.backend != "postgresql":
        return SqliteQueueStore(config.data_dir, role=role, write_once_from=queue.write_once_from)
    from mailwright.queue.postgresql import DatabaseAddress, PostgresQueueStore

    assert queue.url is not None  # config/checks.py: postgresql needs its url
    node = node_name(config)
    return PostgresQueueStore(
        DatabaseAddress.from_settings(queue.url, queue.password_file, f"mailwright {node}"),
        node=node,
        data_dir=config.data_dir,
        role=role,
        lease_seconds=queue.lease,
    )


def node_name(config: Config) -> str:
    """``[queue] node``, or the host's name."""
    return config.queue.node or socket.gethostname()


@runtime_checkable
class NewMailSignal(Protocol):
    """A store that several nodes share tells of mail any of them queued."""

    def on_new_mail(self, callback: Callable[[], None]) -> None: ...


def wake_on_new_mail(store: QueueStore, wake: Callable[[], None]) -> None:
    """Have a store shared by several nodes call ``wake`` when any of them queues mail.

    The SQLite store has no other node: its own sessions wake the worker.
    """
    if isinstance(store, NewMailSignal):
        store.on_new_mail(wake)
