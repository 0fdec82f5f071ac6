"""Durable storage of accepted messages behind a small interface (queue/base.py).

``SqliteQueueStore`` (queue/sqlite/) is the embedded default; app.py chooses the
store (and ``mailwright queue`` opens it in the admin role); everything else speaks to
the ``QueueStore`` interface.
"""

from mailwright.queue.base import (
    BodyReader,
    BodySpool,
    QueuedMessage,
    QueuedRecipient,
    QueueStore,
    RecipientResult,
    RecipientState,
    Target,
)
from mailwright.queue.sqlite import SqliteQueueStore, StoreRole

__all__ = [
    "BodyReader",
    "BodySpool",
    "QueueStore",
    "QueuedMessage",
    "QueuedRecipient",
    "RecipientResult",
    "RecipientState",
    "SqliteQueueStore",
    "StoreRole",
    "Target",
]
