"""The operator's side of the PostgreSQL store: list, get, retry, remove."""

from __future__ import annotations

from mailwright.queue.base import QueuedMessage
from mailwright.queue.postgresql.connect import PoolOf, pooled
from mailwright.queue.postgresql.rows import load, load_all
from mailwright.queue.postgresql.schema import PENDING_SQL
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

    async def list_all(self) -> list[QueuedMessage]:
        async with pooled(self._pool, "cannot list the queue") as connection:
            return await load_all(connection)
