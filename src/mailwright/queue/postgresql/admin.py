"""The operator's side of the PostgreSQL store: list, page, get, history, retry, hold,
release, remove, the figures of the metrics."""

from __future__ import annotations

import time
from typing import Any

from mailwright.errors import StorageError
from mailwright.queue.base import Attempt, QueuedMessage, QueueStats
from mailwright.queue.postgresql.connect import PoolOf, pooled
from mailwright.queue.postgresql.rows import (
    MESSAGE_COLUMNS,
    RECIPIENT_COLUMNS,
    load,
    load_all,
    message_of,
    stored_reply,
)
from mailwright.queue.postgresql.schema import PENDING_SQL, UNFINISHED_SQL
from mailwright.queue.postgresql.writer import NEW_MAIL_CHANNEL


class Admin:
    """Reads and edits of the queue, each on a pooled connection."""

    def __init__(self, pool: PoolOf, node: str) -> None:
        self._pool = pool
        self._node = node

    async def get(self, queue_id: str) -> QueuedMessage | None:
        async with pooled(self._pool, f"cannot read {queue_id}") as connection:
            return await load(connection, queue_id)

    async def remove(self, queue_id: str) -> bool:
        """Its recipients and body go with it (ON DELETE CASCADE)."""
        async with pooled(self._pool, f"cannot remove {queue_id}") as connection:
            cursor = await connection.execute(
                "DELETE FROM messages WHERE queue_id = %s", (queue_id,)
            )
            return cursor.rowcount > 0

    async def retry_now(self, queue_id: str | None = None) -> int:
        """Due now, and every node told (NOTIFY): ``mailwright queue retry`` runs elsewhere."""
        sql = f"UPDATE recipients SET next_attempt = 0 WHERE {PENDING_SQL}"
        params: tuple[str, ...] = ()
        if queue_id is not None:
            sql += " AND queue_id = %s"
            params = (queue_id,)
        async with pooled(self._pool, "cannot reschedule", synchronous_commit=True) as connection:
            updated = await connection.execute(sql, params)
            await connection.execute("SELECT pg_notify(%s, %s)", (NEW_MAIL_CHANNEL, self._node))
        return updated.rowcount  # known once the pipeline has synced, at the commit

    async def retry_domain(self, domain: str) -> int:
        """Remote recipients at ``domain`` due now, and every node told."""
        async with pooled(
            self._pool, f"cannot reschedule mail to {domain}", synchronous_commit=True
        ) as connection:
            updated = await connection.execute(
                "UPDATE recipients SET next_attempt = 0"
                f" WHERE lower(address_domain) = %s AND NOT local AND {PENDING_SQL}",
                (domain.lower(),),
            )
            await connection.execute("SELECT pg_notify(%s, %s)", (NEW_MAIL_CHANNEL, self._node))
        return updated.rowcount

    async def hold(self, queue_id: str) -> int | None:
        """A claimed recipient (its lease not over) is being delivered: left alone."""
        return await self._change_state(
            queue_id,
            "UPDATE recipients SET state = 'held' WHERE queue_id = %s"
            " AND state IN ('queued', 'deferred') AND lease_until <= %s",
            (queue_id, time.time()),
        )

    async def release(self, queue_id: str) -> int | None:
        """Back to QUEUED (no attempt yet) or DEFERRED, on the schedule they had."""
        return await self._change_state(
            queue_id,
            "UPDATE recipients SET state = CASE WHEN attempts = 0 THEN 'queued'"
            " ELSE 'deferred' END WHERE queue_id = %s AND state = 'held'",
            (queue_id,),
        )

    async def _change_state(
        self, queue_id: str, sql: str, params: tuple[object, ...]
    ) -> int | None:
        async with pooled(
            self._pool, f"cannot change {queue_id}", synchronous_commit=True
        ) as connection:
            found = await (
                await connection.execute(
                    "SELECT 1 FROM messages WHERE queue_id = %s FOR UPDATE", (queue_id,)
                )
            ).fetchone()
            if found is None:
                return None
            changed = await connection.execute(sql, params)
            await connection.execute("SELECT pg_notify(%s, %s)", (NEW_MAIL_CHANNEL, self._node))
        return changed.rowcount

    async def page(
        self, *, state: str | None, domain: str | None, limit: int, after: str | None
    ) -> list[QueuedMessage]:
        """Messages with a recipient in ``state`` at ``domain``, after ``after``, by queue id."""
        conditions = ["r.queue_id = m.queue_id"]
        params: list[Any] = []
        if state is not None:
            conditions.append("r.state = %s")
            params.append(state)
        if domain is not None:
            conditions.append("lower(r.address_domain) = %s")
            params.append(domain.lower())
        where = f"EXISTS (SELECT 1 FROM recipients r WHERE {' AND '.join(conditions)})"
        if after is not None:
            where += " AND m.queue_id > %s"
            params.append(after)
        columns = ", ".join(f"m.{name.strip()}" for name in MESSAGE_COLUMNS.split(","))
        async with pooled(self._pool, "cannot list the queue") as connection:
            rows = await (
                await connection.execute(
                    f"SELECT {columns} FROM messages m WHERE {where} ORDER BY m.queue_id LIMIT %s",
                    (*params, limit),
                )
            ).fetchall()
            recipients = await (
                await connection.execute(
                    f"SELECT {RECIPIENT_COLUMNS} FROM recipients WHERE queue_id = ANY(%s)"
                    " ORDER BY queue_id, idx",
                    ([row[0] for row in rows],),
                )
            ).fetchall()
        by_message: dict[str, list[Any]] = {}
        for row in recipients:
            by_message.setdefault(row[0], []).append(row)
        return [message_of(row, by_message.get(row[0], [])) for row in rows]

    async def history(self, queue_id: str) -> list[Attempt]:
        async with pooled(self._pool, f"cannot read the history of {queue_id}") as connection:
            rows = await (
                await connection.execute(
                    "SELECT idx, at, relay, reply FROM attempts WHERE queue_id = %s"
                    " ORDER BY at, idx",
                    (queue_id,),
                )
            ).fetchall()
        return [
            Attempt(index=idx, at=at, relay=relay, reply=reply)
            for idx, at, relay, text in rows
            if (reply := stored_reply(text)) is not None
        ]

    async def stats(self) -> QueueStats:
        """One state per message: held, else deferred (or bouncing), else queued."""
        rank = (
            "max(CASE state WHEN 'held' THEN 3 WHEN 'queued' THEN 1"
            " WHEN 'deferred' THEN 2 WHEN 'bouncing' THEN 2 ELSE 0 END)"
        )
        counts = {"queued": 0, "deferred": 0, "held": 0}
        names = {1: "queued", 2: "deferred", 3: "held"}
        async with pooled(self._pool, "cannot count the queue") as connection:
            for value, count in await (
                await connection.execute(
                    f"SELECT rank, count(*) FROM (SELECT {rank} AS rank FROM recipients"
                    f" WHERE {UNFINISHED_SQL} GROUP BY queue_id) AS ranked GROUP BY rank"
                )
            ).fetchall():
                if value in names:
                    counts[names[value]] = int(count)
            oldest = await (
                await connection.execute("SELECT min(received_at) FROM messages")
            ).fetchone()
        return QueueStats(messages=counts, oldest_received_at=oldest[0] if oldest else None)

    async def check_writable(self) -> None:
        """The database takes writes: reachable, and not a standby in recovery."""
        async with pooled(self._pool, "the queue is not writable") as connection:
            row = await (
                await connection.execute(
                    "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only')::bool"
                )
            ).fetchone()
        if row is None or row[0]:
            raise StorageError("the queue is not writable: the database is read-only")

    async def list_all(self) -> list[QueuedMessage]:
        async with pooled(self._pool, "cannot list the queue") as connection:
            return await load_all(connection)
