"""Bounces: delivery status notifications (RFC 3464) for recipients that failed for good.

One DSN per message lists every failed recipient; it comes from the null
sender ``<>`` so that it can never cause another bounce (RFC 5321 4.5.5), and a
message that itself came from ``<>`` is never bounced.  The report carries the
original headers (text/rfc822-headers, RFC 6522), not the body.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import BinaryIO

from mailwright.logfmt import kv
from mailwright.model import Address
from mailwright.policy.routing import Router
from mailwright.protocol.reply import Reply
from mailwright.queue.base import QueuedMessage, QueueStore

log = logging.getLogger("mailwright.delivery")

MAX_ORIGINAL_HEADERS = 64 * 1024  # octets of the original header section quoted in a bounce


@dataclass(frozen=True, slots=True)
class FailedRecipient:
    """One line of the report: who failed, with which reply, and where."""

    address: Address
    original: Address
    reply: str  # e.g. "550 5.1.1 Mailbox unavailable"
    remote_mta: str = ""  # the host that gave the reply, if any
    expired: bool = False  # gave up after max_age rather than on a permanent reply


def read_original_headers(body: BinaryIO) -> bytes:
    """The header section of a stored message, bounded, ending with CRLF."""
    head = body.read(MAX_ORIGINAL_HEADERS)
    end = head.find(b"\r\n\r\n")
    if end != -1:
        return head[: end + 2]
    last = head.rfind(b"\r\n")
    return head[: last + 2] if last != -1 else b""


def status_of(reply_text: str, *, expired: bool) -> str:
    """The RFC 3463 status for the report: the reply's enhanced code, else its class."""
    if expired:
        return "4.4.7"  # RFC 3463: delivery time expired
    try:
        reply = Reply.parse(reply_text)
    except ValueError:
        return "5.0.0"
    if reply.enhanced:
        return reply.enhanced
    return f"{reply.code // 100}.0.0"


def build_dsn(
    *,
    reporting_mta: str,
    sender: Address,
    queue_id: str,
    arrival: float,
    failed: Sequence[FailedRecipient],
    original_headers: bytes,
    now: datetime | None = None,
) -> bytes:
    """The whole bounce message as bytes with CRLF line endings."""
    now = now or datetime.now(UTC)
    boundary = f"=_mailwright_{secrets.token_hex(12)}"
    date = format_datetime(now)
    arrival_date = format_datetime(datetime.fromtimestamp(arrival, UTC))
    lines_human = [
        f"This is the mail system at {reporting_mta}.",
        "",
        "Your message could not be delivered to one or more recipients.",
        "It is attached below (headers only). The reasons:",
        "",
    ]
    for item in failed:
        why = (
            "gave up after retrying for too long" if item.expired else "the receiving side refused"
        )
        lines_human.append(f"<{item.address}>: {why}")
        if item.original != item.address:
            lines_human.append(f"    (you sent it to <{item.original}>)")
        if item.remote_mta:
            lines_human.append(f"    host {item.remote_mta} said: {item.reply}")
        else:
            lines_human.append(f"    reason: {item.reply}")
        lines_human.append("")
    status_lines = [
        f"Reporting-MTA: dns; {reporting_mta}",
        f"X-Mailwright-Queue-ID: {queue_id}",
        f"Arrival-Date: {arrival_date}",
    ]
    for item in failed:
        status_lines.append("")
        if item.original != item.address:
            status_lines.append(f"Original-Recipient: rfc822; {item.original}")
        status_lines.append(f"Final-Recipient: rfc822; {item.address}")
        status_lines.append("Action: failed")
        status_lines.append(f"Status: {status_of(item.reply, expired=item.expired)}")
        if item.remote_mta:
            status_lines.append(f"Remote-MTA: dns; {item.remote_mta}")
        status_lines.append(f"Diagnostic-Code: smtp; {item.reply}")
        status_lines.append(f"Last-Attempt-Date: {date}")
    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{sender}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {date}",
        f"Message-ID: <{queue_id}.{secrets.token_hex(6)}@{reporting_mta}>",
        "Auto-Submitted: auto-replied",  # RFC 3834
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        "Content-Type: text/plain; charset=utf-8",
        "",
        *lines_human,
        f"--{boundary}",
        "Content-Description: Delivery report",
        "Content-Type: message/delivery-status",
        "",
        *status_lines,
        "",
        f"--{boundary}",
        "Content-Description: Undelivered message headers",
        "Content-Type: text/rfc822-headers",
        "",
    ]
    out = "\r\n".join(head).encode("utf-8") + b"\r\n" + original_headers
    out += f"\r\n--{boundary}--\r\n".encode()
    return out


class DsnBouncer:
    """Makes the bounce for a message and queues it like any other mail.

    The DSN is routed with the same Router as incoming mail (so a local sender
    gets it in its Maildir), from the null sender, and enqueued durably before
    the failed recipients are marked final (a crash in between repeats the
    bounce rather than losing it).
    """

    def __init__(self, *, hostname: str, store: QueueStore, router: Router) -> None:
        self.hostname = hostname
        self.store = store
        self.router = router

    async def bounce(self, message: QueuedMessage, failed: Sequence[FailedRecipient]) -> str | None:
        """Queue the DSN; returns its queue id, or None when the message was itself a bounce."""
        if message.sender is None or not failed:
            return None  # never bounce a bounce (RFC 5321 4.5.5)
        decision = self.router.route_recipient(message.sender, may_relay=True)
        if not decision.targets:
            log.warning(
                kv(
                    event="bounce-undeliverable",
                    id=message.queue_id,
                    sender=message.sender,
                    reply=str(decision.reply),
                )
            )
            return None
        headers = await asyncio.to_thread(self._headers, message.queue_id)
        data = build_dsn(
            reporting_mta=self.hostname,
            sender=message.sender,
            queue_id=message.queue_id,
            arrival=message.received_at,
            failed=failed,
            original_headers=headers,
        )
        spool = self.store.new_spool()
        spool.write(data)
        bounce_id = await self.store.enqueue(None, decision.targets, spool)
        log.info(
            kv(
                event="bounce",
                id=message.queue_id,
                bounce_id=bounce_id,
                to=f"<{message.sender}>",
                failed=len(failed),
            )
        )
        return bounce_id

    def _headers(self, queue_id: str) -> bytes:
        with self.store.open_body(queue_id) as body:
            return read_original_headers(body)
