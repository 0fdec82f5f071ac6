"""Delivery's side of the PostgreSQL store: claims with leases by node, and results.

A claim locks due recipient rows with ``FOR UPDATE SKIP LOCKED`` (nodes
claiming at once never wait for each other nor take the same row) and writes
a lease on them: this node's name and an expiry.  Rows under a live lease are
not due; once it expires any node may claim them.  The holder renews its
leases while it runs (``renew``), so a delivery longer than the lease is
never handed out twice while its node lives, and a dead node's work is taken
over one lease after its last renewal: at-least-once, duplicates only for
deliveries in flight at the death.

Results that finish together share one transaction (``ResultBatcher``).
Claims and results commit with ``synchronous_commit`` off: a database crash
may lose the last fraction of a second of them, and then a claim lapses or an
attempt is repeated, as for a delivery in flight; a message is never lost
(its rows committed with synchronous_commit on).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from mailwright.errors import StorageError
from mailwright.queue.base import QueuedMessage, RecipientResult, RecipientState
from mailwright.queue.postgresql.connect import PoolOf, pooled
from mailwright.queue.postgresql.rows import MESSAGE_COLUMNS, RECIPIENT_COLUMNS, message_of
from mailwright.queue.postgresql.schema import PENDING_SQL, UNFINISHED_SQL
from mailwright.queue.postgresql.writer import Batcher, CommitStats, settle

logger = logging.getLogger("mailwright.queue.postgresql")

#: Due rows looked at per message wanted: enough that messages with a few recipients each
#: fill a claim in one query.
_ROWS_PER_MESSAGE = 8
_DUE = f"{PENDING_SQL} AND next_attempt <= %(now)s AND lease_until <= %(now)s"


@dataclass(eq=False, slots=True)
class ResultRow:
    """One ``record_result``: its statements' parameters, and its caller's future."""

    params: dict[str, Any]
    future: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def outcome(self) -> None:
        return None


class ResultBatcher(Batcher[ResultRow]):
    """The results that finish together, recorded in one transaction and one commit.

    Each result alone was a transaction of its own: a round trip and a commit
    per recipient, the largest cost of delivery left (docs/performance.md,
    "The PostgreSQL queue").  Batched like enqueues (writer.py), the round
    trip and the commit are shared; each caller still returns only once the
    batch has committed, and a failed batch fails each of its callers with
    the usual StorageError or QueueUnavailable (delivery tries again later).
    """

    task_name = "mailwright-queue-results"

    async def _commit(self, batch: list[ResultRow]) -> None:
        try:
            async with pooled(
                self._pool, "cannot record delivery results", synchronous_commit=False
            ) as connection:
                updates = await record_results(connection, [row.params for row in batch])
        except StorageError as exc:  # QueueUnavailable too
            settle(batch, exc)
        except Exception as exc:  # a bug: fail the batch, keep the batcher running
            logger.exception("queue results: unexpected error")
            settle(batch, StorageError(f"cannot record delivery results: {exc}"))
        else:
            for row, updated in zip(batch, updates, strict=True):
                if updated.rowcount == 0:
                    logger.debug(
                        "queue %s: result for recipient %d ignored (final or removed)",
                        row.params["id"],
                        row.params["idx"],
                    )
            self._committed(batch)


async def record_results(
    connection: psycopg.AsyncConnection[Any], results: Sequence[dict[str, Any]]
) -> list[psycopg.AsyncCursor[Any]]:
    """Record ``results`` in the current transaction, removing each message whose
    recipients are then all final; the UPDATE cursor of each (its rowcount is known
    once the pipeline has synced)."""
    # The message rows first, locked in queue id order (two nodes' batches never wait
    # for each other in a cycle): results of one message take turns, so the last one
    # to finish sees every other recipient final and removes the message.
    await connection.execute(
        "SELECT 1 FROM messages WHERE queue_id = ANY(%s) ORDER BY queue_id FOR UPDATE",
        (sorted({params["id"] for params in results}),),
    )
    updates = []
    for params in results:
        # The history, for an attempt at delivery (not the retry of a bounce).
        await connection.execute(
            "INSERT INTO attempts (queue_id, idx, at, relay, reply)"
            " SELECT queue_id, idx, %(at)s, %(relay)s, %(reply)s FROM recipients"
            " WHERE queue_id = %(id)s AND idx = %(idx)s AND state IN ('queued', 'deferred')",
            params,
        )
        updates.append(
            await connection.execute(
                "UPDATE recipients SET state = %(state)s,"
                " attempts = attempts + (CASE state WHEN 'bouncing' THEN 0 ELSE 1 END),"
                " next_attempt = %(next)s, last_reply = %(reply)s,"
                " lease_until = 0, lease_node = NULL"
                f" WHERE queue_id = %(id)s AND idx = %(idx)s AND {PENDING_SQL}",
                params,
            )
        )
        # Nothing to do unless the UPDATE made the message's last pending recipient final.
        await connection.execute(
            "DELETE FROM messages WHERE queue_id = %(id)s AND NOT EXISTS"
            f" (SELECT 1 FROM recipients WHERE queue_id = %(id)s AND {UNFINISHED_SQL})",
            params,
        )
    return updates


class Claims:
    """``claim_due``, ``record_result`` and the lease upkeep of one node."""

    def __init__(
        self,
        pool: PoolOf,
        node: str,
        lease_seconds: float,
        *,
        max_batch: int,
        result_stats: CommitStats,
    ) -> None:
        self._pool = pool
        self._node = node
        self._lease_seconds = lease_seconds
        #: The recipients this node's deliveries hold: claimed and handed out, no result
        #: recorded yet.  Only these are renewed.  A claim whose commit went through but
        #: whose answer was lost (the connection cut at that moment) was never handed out:
        #: it must lapse and go to whichever node claims next, not be renewed for ever.
        self._held: set[tuple[str, int]] = set()
        self.results = ResultBatcher(pool, max_batch=max_batch, stats=result_stats)

    async def claim_due(self, now: float, limit: int) -> list[QueuedMessage]:
        """See ``PostgresQueueStore.claim_due``."""
        if limit <= 0:
            return []
        params = {
            "now": now,
            "until": now + self._lease_seconds,
            "node": self._node,
            "rows": limit * _ROWS_PER_MESSAGE,
        }
        async with pooled(
            self._pool, "cannot claim due messages", synchronous_commit=False
        ) as connection:
            due = await (
                await connection.execute(
                    f"SELECT queue_id FROM recipients WHERE {_DUE}"
                    " ORDER BY next_attempt, queue_id, idx LIMIT %(rows)s"
                    " FOR UPDATE SKIP LOCKED",
                    params,
                )
            ).fetchall()
            queue_ids = list(dict.fromkeys(row[0] for row in due))[:limit]
            if not queue_ids:
                return []
            params["ids"] = queue_ids
            # Every due recipient of the chosen messages, not only those seen above
            # (one message is delivered in one go); rows another node holds are skipped.
            recipients = await (
                await connection.execute(
                    "UPDATE recipients SET lease_until = %(until)s, lease_node = %(node)s"
                    " WHERE (queue_id, idx) IN (SELECT queue_id, idx FROM recipients"
                    f" WHERE queue_id = ANY(%(ids)s) AND {_DUE} FOR UPDATE SKIP LOCKED)"
                    f" RETURNING {RECIPIENT_COLUMNS}",
                    params,
                )
            ).fetchall()
            messages = await (
                await connection.execute(
                    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE queue_id = ANY(%(ids)s)",
                    params,
                )
            ).fetchall()
        by_message: dict[str, list[tuple[Any, ...]]] = {}
        for row in sorted(recipients, key=lambda r: (r[0], r[1])):
            by_message.setdefault(str(row[0]), []).append(row)
            self._held.add((row[0], row[1]))
        by_id = {str(row[0]): row for row in messages}
        return [
            message_of(by_id[queue_id], by_message[queue_id])
            for queue_id in queue_ids
            if queue_id in by_id and queue_id in by_message
        ]

    async def record_result(self, queue_id: str, index: int, result: RecipientResult) -> None:
        """See ``PostgresQueueStore.record_result``: one of the next batch of results."""
        if result.state is RecipientState.QUEUED:
            raise ValueError("a result is delivered, bounced, bouncing or deferred, never queued")
        waits = result.state in (RecipientState.DEFERRED, RecipientState.BOUNCING)
        params = {
            "id": queue_id,
            "idx": index,
            "state": result.state.value,
            "next": result.next_attempt if waits else 0.0,
            "reply": str(result.reply),
            "relay": result.relay,
            "at": time.time(),
        }
        await self.results.submit(ResultRow(params))
        self._held.discard((queue_id, index))  # recorded: the claim is over

    async def mark_delay_reported(self, queue_id: str, indexes: Sequence[int]) -> None:
        """See ``PostgresQueueStore.mark_delay_reported``."""
        async with pooled(
            self._pool,
            f"cannot record the delay report of {queue_id}",
            synchronous_commit=True,  # a mark lost in a crash would send a second report
        ) as connection:
            await connection.execute(
                "UPDATE recipients SET delay_reported = true WHERE queue_id = %s AND idx = ANY(%s)",
                (queue_id, [int(index) for index in indexes]),
            )

    async def renew(self, now: float) -> int:
        """Extend the leases of the deliveries under way to ``now + lease``; how many."""
        held = list(self._held)
        if not held:
            return 0
        async with pooled(self._pool, "cannot renew the leases") as connection:
            cursor = await connection.execute(
                "UPDATE recipients SET lease_until = %s"
                " WHERE (queue_id, idx) IN (SELECT * FROM unnest(%s::text[], %s::integer[]))"
                f" AND lease_node = %s AND lease_until > 0 AND {PENDING_SQL}",
                (
                    now + self._lease_seconds,
                    [queue_id for queue_id, _ in held],
                    [index for _, index in held],
                    self._node,
                ),
            )
            return cursor.rowcount

    async def release(self) -> int:
        """End every claim of this node (at start: of its previous run; at a clean stop)."""
        async with pooled(self._pool, "cannot release the claims") as connection:
            cursor = await connection.execute(
                "UPDATE recipients SET lease_until = 0, lease_node = NULL WHERE lease_node = %s",
                (self._node,),
            )
        self._held.clear()
        return cursor.rowcount
