"""Rows to values: the same columns as the SQLite queue, so the same conversions serve."""

from __future__ import annotations

from typing import Any

import psycopg

from mailwright.queue.base import QueuedMessage
from mailwright.queue.sqlite.rows import (
    MESSAGE_COLUMNS,
    RECIPIENT_COLUMNS,
    message_of,
    split,
    stored_reply,
)

__all__ = [
    "MESSAGE_COLUMNS",
    "RECIPIENT_COLUMNS",
    "load",
    "load_all",
    "message_of",
    "split",
    "stored_reply",
]


async def load(connection: psycopg.AsyncConnection[Any], queue_id: str) -> QueuedMessage | None:
    """One message with all its recipients, or None."""
    row = await (
        await connection.execute(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE queue_id = %s", (queue_id,)
        )
    ).fetchone()
    if row is None:
        return None
    recipients = await (
        await connection.execute(
            f"SELECT {RECIPIENT_COLUMNS} FROM recipients WHERE queue_id = %s ORDER BY idx",
            (queue_id,),
        )
    ).fetchall()
    return message_of(row, recipients)


async def load_all(connection: psycopg.AsyncConnection[Any]) -> list[QueuedMessage]:
    """Every message, oldest first, with all its recipients (one snapshot)."""
    async with connection.transaction():
        await connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        messages = await (
            await connection.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages ORDER BY received_at, queue_id"
            )
        ).fetchall()
        by_message: dict[str, list[Any]] = {}
        for row in await (
            await connection.execute(
                f"SELECT {RECIPIENT_COLUMNS} FROM recipients ORDER BY queue_id, idx"
            )
        ).fetchall():
            by_message.setdefault(row[0], []).append(row)
    return [message_of(row, by_message.get(row[0], [])) for row in messages]
