"""The JSON shapes of queued mail, shared by the admin API and ``mailwright queue --json``.

One module so that a script that reads ``queue list --json`` can read
``GET /api/v1/queue`` too: the same keys, the same types, the same times.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from mailwright.protocol.reply import Reply
from mailwright.queue.base import Attempt, QueuedMessage, QueuedRecipient, QueueStore

#: Headers shown by ``GET /api/v1/queue/{id}`` and ``queue show --json``: the head of the
#: body up to its blank line, read up to this many octets.
HEADER_READ_LIMIT = 64 * 1024


def rfc3339(timestamp: float) -> str:
    """A unix time as RFC 3339 in UTC, to the second: ``2026-12-04T17:20:42Z``."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def reply_shape(reply: Reply | None) -> dict[str, Any] | None:
    if reply is None:
        return None
    return {"code": reply.code, "enhanced": reply.enhanced, "text": reply.text}


def recipient_shape(rcpt: QueuedRecipient) -> dict[str, Any]:
    return {
        "address": str(rcpt.target.address),
        "state": rcpt.state.value,
        "attempts": rcpt.attempts,
        "next_attempt": rfc3339(rcpt.next_attempt),
        "last_reply": reply_shape(rcpt.last_reply),
        "relay": "local" if rcpt.target.local else "remote",
    }


def message_shape(message: QueuedMessage, now: float | None = None) -> dict[str, Any]:
    """One message as ``GET /api/v1/queue`` lists it."""
    now = time.time() if now is None else now
    return {
        "id": message.queue_id,
        "sender": str(message.sender) if message.sender is not None else "",
        "size": message.size,
        "arrived": rfc3339(message.received_at),
        "age": max(0, int(now - message.received_at)),
        "recipients": [recipient_shape(r) for r in message.recipients],
    }


def attempt_shape(message: QueuedMessage, attempt: Attempt) -> dict[str, Any]:
    by_index = {r.index: str(r.target.address) for r in message.recipients}
    return {
        "time": rfc3339(attempt.at),
        "recipient": by_index.get(attempt.index, ""),
        "relay": attempt.relay,
        "reply": reply_shape(attempt.reply),
    }


def header_block(head: bytes) -> str:
    """The header section at the start of ``head`` (RFC 5322 2.1), as text."""
    end = head.find(b"\r\n\r\n")
    return head[: end + 2 if end != -1 else len(head)].decode("utf-8", "replace")


def detail_shape(
    message: QueuedMessage,
    history: list[Attempt],
    head: bytes,
    body: bytes | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """One message as ``GET /api/v1/queue/{id}`` shows it: headers, history, body if asked."""
    shape = message_shape(message, now)
    shape["headers"] = header_block(head)
    shape["history"] = [attempt_shape(message, attempt) for attempt in history]
    if body is not None:
        shape["body"] = body.decode("utf-8", "replace")
    return shape


async def read_detail(store: QueueStore, queue_id: str, *, body: bool) -> dict[str, Any] | None:
    """``detail_shape`` of a message read from ``store``; None when it is not there."""
    message = await store.get(queue_id)
    if message is None:
        return None
    history = await store.history(queue_id)
    async with store.read_body(queue_id) as reader:
        head = await reader.read(HEADER_READ_LIMIT)
        whole = head + b"".join([piece async for piece in reader]) if body else None
    return detail_shape(message, history, head, whole)


def page_shape(messages: list[QueuedMessage], next_cursor: str | None) -> dict[str, Any]:
    """A page of the queue, as ``GET /api/v1/queue`` and ``queue list --json`` give it."""
    now = time.time()
    return {
        "messages": [message_shape(message, now) for message in messages],
        "next_cursor": next_cursor,
    }
