"""Durable storage of accepted messages behind a small interface (queue/base.py).

``SqliteQueueStore`` is the embedded default; app.py chooses the store, nothing
else in mailwright names an implementation.
"""

from mailwright.queue.base import (
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
