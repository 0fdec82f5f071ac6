"""The operator's side of the store: list, get, retry, remove, and the quarantine."""

from __future__ import annotations

import sqlite3
from typing import Any

from mailwright.queue.base import QueuedMessage
from mailwright.queue.sqlite.files import QueueLayout
from mailwright.queue.sqlite.rows import (
    MESSAGE_COLUMNS,
    RECIPIENT_COLUMNS,
    delete,
    load,
    message_of,
)
from mailwright.queue.sqlite.schema import PENDING_SQL
from mailwright.queue.sqlite.writer import Effects, JobRunner


class Admin:
    """Reads (on the writer's connection, without the write lock) and edits of the queue."""

    def __init__(self, layout: QueueLayout, jobs: JobRunner) -> None:
        self._layout = layout
        self._jobs = jobs

    async def get(self, queue_id: str) -> QueuedMessage | None:
        """See ``SqliteQueueStore.get``."""
        return await self._jobs.call(
            lambda connection, effects: load(connection, queue_id),
            f"cannot read {queue_id}",
            writes=False,
        )

    async def remove(self, queue_id: str) -> bool:
        """See ``SqliteQueueStore.remove``."""
        spool_dir = self._layout.spool_dir
        return await self._jobs.call(
            lambda connection, effects: delete(connection, effects, spool_dir, queue_id),
            f"cannot remove {queue_id}",
        )

    async def retry_now(self, queue_id: str | None = None) -> int:
        """See ``SqliteQueueStore.retry_now``."""

        def retry(connection: sqlite3.Connection, effects: Effects) -> int:
            params: tuple[str, ...] = ()
            if queue_id is None:
                sql = f"UPDATE recipients SET next_attempt = 0 WHERE {PENDING_SQL}"
            else:
                sql = f"UPDATE recipients SET next_attempt = 0 WHERE queue_id = ? AND {PENDING_SQL}"
                params = (queue_id,)
            return int(connection.execute(sql, params).rowcount)

        return await self._jobs.call(retry, "cannot reschedule")

    async def quarantined(self) -> list[tuple[str, float, str]]:
        """See ``SqliteQueueStore.quarantined``."""

        def read(connection: sqlite3.Connection, effects: Effects) -> list[tuple[str, float, str]]:
            return [
                (str(queue_id), float(when), str(reason))
                for queue_id, when, reason in connection.execute(
                    "SELECT queue_id, quarantined_at, reason FROM quarantine"
                    " ORDER BY quarantined_at"
                )
            ]

        return await self._jobs.call(read, "cannot read the quarantine", writes=False)

    # Last, so that the name ``list`` in annotations above means the builtin.
    async def list(self) -> list[QueuedMessage]:
        """See ``SqliteQueueStore.list``."""

        def load_all(connection: sqlite3.Connection, effects: Effects) -> list[QueuedMessage]:
            messages = connection.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages ORDER BY queue_id"
            ).fetchall()
            by_message: dict[str, list[tuple[Any, ...]]] = {}
            for row in connection.execute(
                f"SELECT {RECIPIENT_COLUMNS} FROM recipients ORDER BY queue_id, idx"
            ):
                by_message.setdefault(row[0], []).append(row)
            return [message_of(row, by_message.get(row[0], [])) for row in messages]

        return await self._jobs.call(load_all, "cannot list the queue", writes=False)
