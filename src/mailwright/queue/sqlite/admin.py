"""The operator's side of the store: list, get, retry, remove, and the quarantine."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from mailwright.queue.base import Attempt, QueuedMessage, QueueStats
from mailwright.queue.sqlite.files import QueueLayout
from mailwright.queue.sqlite.rows import (
    MESSAGE_COLUMNS,
    RECIPIENT_COLUMNS,
    delete,
    load,
    message_of,
    stored_reply,
)
from mailwright.queue.sqlite.schema import PENDING_SQL, UNFINISHED_SQL
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

    async def retry_domain(self, domain: str) -> int:
        """See ``SqliteQueueStore.retry_domain``."""

        def retry(connection: sqlite3.Connection, effects: Effects) -> int:
            return int(
                connection.execute(
                    "UPDATE recipients SET next_attempt = 0"
                    f" WHERE lower(address_domain) = ? AND local = 0 AND {PENDING_SQL}",
                    (domain.lower(),),
                ).rowcount
            )

        return await self._jobs.call(retry, f"cannot reschedule mail to {domain}")

    async def hold(self, queue_id: str) -> int | None:
        """See ``SqliteQueueStore.hold``."""
        # A claimed recipient (lease_until in the future) is being delivered: left alone.
        return await self._change_state(
            queue_id,
            "UPDATE recipients SET state = 'held' WHERE queue_id = ?"
            " AND state IN ('queued', 'deferred') AND lease_until <= ?",
            (queue_id, time.time()),
        )

    async def release(self, queue_id: str) -> int | None:
        """See ``SqliteQueueStore.release``."""
        return await self._change_state(
            queue_id,
            "UPDATE recipients SET state = CASE WHEN attempts = 0 THEN 'queued'"
            " ELSE 'deferred' END WHERE queue_id = ? AND state = 'held'",
            (queue_id,),
        )

    async def _change_state(
        self, queue_id: str, sql: str, params: tuple[object, ...]
    ) -> int | None:
        def change(connection: sqlite3.Connection, effects: Effects) -> int | None:
            if (
                connection.execute(
                    "SELECT 1 FROM messages WHERE queue_id = ?", (queue_id,)
                ).fetchone()
                is None
            ):
                return None
            return int(connection.execute(sql, params).rowcount)

        return await self._jobs.call(change, f"cannot change {queue_id}")

    async def page(
        self, *, state: str | None, domain: str | None, limit: int, after: str | None
    ) -> list[QueuedMessage]:
        """See ``SqliteQueueStore.page``."""
        conditions = ["r.queue_id = m.queue_id"]
        params: list[object] = []
        if state is not None:
            conditions.append("r.state = ?")
            params.append(state)
        if domain is not None:
            conditions.append("lower(r.address_domain) = ?")
            params.append(domain.lower())
        where = f"EXISTS (SELECT 1 FROM recipients r WHERE {' AND '.join(conditions)})"
        if after is not None:
            where += " AND m.queue_id > ?"
            params.append(after)
        columns = ", ".join(f"m.{name.strip()}" for name in MESSAGE_COLUMNS.split(","))

        def read(connection: sqlite3.Connection, effects: Effects) -> list[QueuedMessage]:
            rows = connection.execute(
                f"SELECT {columns} FROM messages m WHERE {where} ORDER BY m.queue_id LIMIT ?",
                (*params, limit),
            ).fetchall()
            return [
                message_of(
                    row,
                    connection.execute(
                        f"SELECT {RECIPIENT_COLUMNS} FROM recipients WHERE queue_id = ?"
                        " ORDER BY idx",
                        (row[0],),
                    ),
                )
                for row in rows
            ]

        return await self._jobs.call(read, "cannot list the queue", writes=False)

    async def history(self, queue_id: str) -> list[Attempt]:
        """See ``SqliteQueueStore.history``."""

        def read(connection: sqlite3.Connection, effects: Effects) -> list[Attempt]:
            return [
                Attempt(index=idx, at=at, relay=relay, reply=reply)
                for idx, at, relay, text in connection.execute(
                    "SELECT idx, at, relay, reply FROM attempts WHERE queue_id = ?"
                    " ORDER BY at, idx",
                    (queue_id,),
                )
                if (reply := stored_reply(text)) is not None
            ]

        return await self._jobs.call(read, f"cannot read the history of {queue_id}", writes=False)

    async def stats(self) -> QueueStats:
        """See ``SqliteQueueStore.stats``."""

        def read(connection: sqlite3.Connection, effects: Effects) -> QueueStats:
            # One state per message: held, else deferred (or bouncing), else queued.
            rank = (
                "MAX(CASE state WHEN 'held' THEN 3 WHEN 'queued' THEN 1"
                " WHEN 'deferred' THEN 2 WHEN 'bouncing' THEN 2 ELSE 0 END)"
            )
            counts = {"queued": 0, "deferred": 0, "held": 0}
            names = {1: "queued", 2: "deferred", 3: "held"}
            for value, count in connection.execute(
                f"SELECT rank, COUNT(*) FROM (SELECT {rank} AS rank FROM recipients"
                f" WHERE {UNFINISHED_SQL} GROUP BY queue_id) GROUP BY rank"
            ):
                if value in names:
                    counts[names[value]] = int(count)
            oldest = connection.execute("SELECT MIN(received_at) FROM messages").fetchone()[0]
            return QueueStats(messages=counts, oldest_received_at=oldest)

        return await self._jobs.call(read, "cannot count the queue", writes=False)

    async def check_writable(self) -> None:
        """See ``SqliteQueueStore.check_writable``."""
        await self._jobs.call(
            lambda connection, effects: None, "the queue is not writable", durable=False
        )

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
