"""Delivery's side of the store: claim due recipients (a lease), record each attempt and
each "delayed" report."""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Sequence

from mailwright.queue.base import QueuedMessage, RecipientResult, RecipientState
from mailwright.queue.sqlite.files import QueueLayout
from mailwright.queue.sqlite.rows import CLAIM_COLUMNS, RECIPIENT_COLUMNS, delete, message_of
from mailwright.queue.sqlite.schema import PENDING_SQL, UNFINISHED_SQL
from mailwright.queue.sqlite.writer import Effects, JobRunner

logger = logging.getLogger("mailwright.queue.sqlite")


class Claims:
    """``claim_due`` and ``record_result``, as jobs of the writer thread.

    Neither is fsynced on its own (``durable=False``): a claim lost in an OS
    crash only makes its recipients due again, and a lost result repeats the
    attempt (at-least-once, like a delivery in flight at the crash).  A kill -9
    loses neither: WAL with synchronous=NORMAL survives the end of a process.
    """

    def __init__(self, layout: QueueLayout, jobs: JobRunner, lease_seconds: float) -> None:
        self._layout = layout
        self._jobs = jobs
        self._lease_seconds = lease_seconds

    async def claim_due(self, now: float, limit: int) -> list[QueuedMessage]:
        """See ``SqliteQueueStore.claim_due``."""
        if limit <= 0:
            return []
        lease_until = now + self._lease_seconds

        spool_dir = os.fspath(self._layout.spool_dir)

        def claim(connection: sqlite3.Connection, effects: Effects) -> list[QueuedMessage]:
            due = f"{PENDING_SQL} AND next_attempt <= ? AND lease_until <= ?"
            queue_ids: dict[str, None] = {}
            cursor = connection.execute(
                f"SELECT queue_id FROM recipients WHERE {due} ORDER BY next_attempt", (now, now)
            )
            while len(queue_ids) < limit and (rows := cursor.fetchmany(256)):
                for (queue_id,) in rows:
                    queue_ids[queue_id] = None
                    if len(queue_ids) == limit:
                        break
            cursor.close()
            claimed = []
            for queue_id in queue_ids:
                message = connection.execute(
                    f"SELECT {CLAIM_COLUMNS} FROM messages WHERE queue_id = ?", (queue_id,)
                ).fetchone()
                if message is None:
                    continue
                recipients = connection.execute(
                    f"SELECT {RECIPIENT_COLUMNS} FROM recipients WHERE queue_id = ? AND {due}"
                    " ORDER BY idx",
                    (queue_id, now, now),
                ).fetchall()
                connection.execute(
                    f"UPDATE recipients SET lease_until = ? WHERE queue_id = ? AND {due}",
                    (lease_until, queue_id, now, now),
                )
                claimed.append(message_of(message, recipients, spool_dir))
            return claimed

        # A lost claim only makes the work due again: no fsync for it.
        return await self._jobs.call(claim, "cannot claim due messages", durable=False)

    async def record_result(self, queue_id: str, index: int, result: RecipientResult) -> None:
        """See ``SqliteQueueStore.record_result``."""
        if result.state is RecipientState.QUEUED:
            raise ValueError("a result is delivered, bounced, bouncing or deferred, never queued")
        waits = result.state in (RecipientState.DEFERRED, RecipientState.BOUNCING)
        next_attempt = result.next_attempt if waits else 0.0
        spool_dir = self._layout.spool_dir

        def record(connection: sqlite3.Connection, effects: Effects) -> None:
            # The history, for an attempt at delivery (not the retry of a bounce).
            connection.execute(
                "INSERT INTO attempts (queue_id, idx, at, relay, reply)"
                " SELECT queue_id, idx, ?, ?, ? FROM recipients"
                " WHERE queue_id = ? AND idx = ? AND state IN ('queued', 'deferred')",
                (time.time(), result.relay, str(result.reply), queue_id, index),
            )
            updated = connection.execute(
                "UPDATE recipients SET state = ?,"
                " attempts = attempts + (CASE state WHEN 'bouncing' THEN 0 ELSE 1 END),"
                " next_attempt = ?, last_reply = ?, lease_until = 0"
                f" WHERE queue_id = ? AND idx = ? AND {PENDING_SQL}",
                (result.state.value, next_attempt, str(result.reply), queue_id, index),
            ).rowcount
            if not updated:
                logger.debug(
                    "queue %s: result for recipient %d ignored (final or removed)", queue_id, index
                )
                return
            pending = connection.execute(
                f"SELECT 1 FROM recipients WHERE queue_id = ? AND {UNFINISHED_SQL} LIMIT 1",
                (queue_id,),
            ).fetchone()
            if pending is None:
                delete(connection, effects, spool_dir, queue_id)

        # Lost only in an OS crash (not kill -9), and then the attempt is repeated:
        # at-least-once, like a delivery in flight at the crash.
        await self._jobs.call(record, f"cannot record the result for {queue_id}", durable=False)

    async def mark_delay_reported(self, queue_id: str, indexes: Sequence[int]) -> None:
        """See ``SqliteQueueStore.mark_delay_reported``."""
        rows = [(queue_id, int(index)) for index in indexes]

        def mark(connection: sqlite3.Connection, effects: Effects) -> None:
            connection.executemany(
                "UPDATE recipients SET delay_reported = 1 WHERE queue_id = ? AND idx = ?", rows
            )

        # Durable, unlike a result: a mark lost in an OS crash would send a second report.
        await self._jobs.call(mark, f"cannot record the delay report of {queue_id}")
