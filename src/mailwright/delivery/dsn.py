"""Bounces: delivery status notifications (RFC 3464) for recipients that failed for good.

One DSN per message lists every failed recipient; it comes from the null
sender ``<>`` so that it can never cause another bounce (RFC 5321 4.5.5), and a
message that itself came from ``<>`` is never bounced.

A bounce goes to whatever sender the client claimed, so it is mail sent to a
stranger on a stranger's word (backscatter).  What it may carry is bounded:

- the original's header section only, never its body, at most
  ``MAX_ORIGINAL_HEADERS`` octets cut between two header fields.  RFC 3464
  section 2 makes the returned content an optional third part, either the
  whole message (message/rfc822) or its headers alone (text/rfc822-headers,
  defined in RFC 6522); RFC 3461 4.3 calls the latter RET=HDRS.
- reply texts of other servers without their control characters
  (``printable_text``): the report is read on terminals and parsed by programs.

Where it may go is bounded too: never to an address literal (``x@[192.0.2.1]``
makes us connect to any IP the client names) unless ``[routes]`` has a route
for that very literal; such bounces are dropped and logged (``bounce-dropped``).
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

from mailwright.logfmt import kv
from mailwright.model import Address
from mailwright.policy.routing import Router
from mailwright.protocol.reply import Reply, printable_text
from mailwright.queue.base import QueuedMessage, QueueStore, Target
from mailwright.syntax import address_literal_key, is_address_literal

log = logging.getLogger("mailwright.delivery")

#: Octets of the original header section returned in a bounce, at most.
MAX_ORIGINAL_HEADERS = 16 * 1024
#: The start of a header field: a field name and its colon (RFC 5322 2.2, 3.6.8; obs-FWS
#: before the colon, RFC 5322 4.5).
_FIELD_START = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")


@dataclass(frozen=True, slots=True)
class FailedRecipient:
    """One line of the report: who failed, with which reply, and where."""

    address: Address
    original: Address
    reply: Reply  # the one it failed with, e.g. 550 5.1.1 Mailbox unavailable
    remote_mta: str = ""  # the host that gave the reply, if any
    expired: bool = False  # gave up after max_age rather than on a permanent reply


def headers_to_return(opening: bytes, limit: int = MAX_ORIGINAL_HEADERS) -> bytes:
    """The leading whole header fields of a stored message, at most ``limit`` octets.

    ``opening`` is the message's first ``limit + 1`` octets (or all of it, if shorter).

    The cut is always between two fields: a field and its folded continuation
    lines (RFC 5322 2.2.3) are kept or dropped together, so the part never
    ends inside a header.  Reading stops at the empty line that ends the
    header section and also at the first line that is neither a field nor a
    continuation (a message without the empty line): the body is never
    returned.  The result is empty or ends with CRLF.
    """
    # One octet more than the limit: whether the line after the last kept one continues it.
    head = opening[: limit + 1]
    whole = len(head) <= limit  # the message ended within what was read
    kept = 0  # the end of the last complete field
    start = 0  # the start of the line being looked at
    while start <= limit:
        end = head.find(b"\r\n", start)
        if end == -1:
            rest = head[start:]
            if rest[:1] not in (b"", b" ", b"\t") or (whole and not rest):
                kept = start  # what follows does not continue the last field
            break
        line = head[start:end]
        if line[:1] in (b" ", b"\t"):
            if start == 0:
                break  # a continuation of nothing: not a header section
        elif line and _FIELD_START.match(line):
            kept = start  # a new field: the one before it is complete
        else:
            kept = start  # the empty line, or the body without one: the end of the headers
            break
        start = end + 2
    return head[:kept]


def status_of(reply: Reply, *, expired: bool) -> str:
    """The RFC 3463 status for the report: the reply's enhanced code, else its class."""
    if expired:
        return "4.4.7"  # RFC 3463: delivery time expired
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
    # Replies of other servers (and texts stored before they were cleaned) lose
    # their control characters here too: the report is shown on terminals.
    failed = [
        FailedRecipient(
            address=item.address,
            original=item.original,
            reply=item.reply.printable(),
            remote_mta=printable_text(item.remote_mta),
            expired=item.expired,
        )
        for item in failed
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

    def __init__(
        self,
        *,
        hostname: str,
        store: QueueStore,
        router: Router,
        routed_domains: Collection[str] = (),
    ) -> None:
        self.hostname = hostname
        self.store = store
        self.router = router
        #: ``[routes]`` keys: an address literal among them may receive bounces.
        self.routed_domains = frozenset(routed_domains)

    def reload(self, router: Router, routed_domains: Collection[str]) -> None:
        """SIGHUP (app.py): bounces are routed as new mail is, by the new configuration."""
        self.router, self.routed_domains = router, frozenset(routed_domains)

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
        targets = tuple(t for t in decision.targets if self._may_receive(t))
        if not targets:
            log.warning(
                kv(
                    event="bounce-dropped",
                    id=message.queue_id,
                    sender=message.sender,
                    reason="an address literal without a route of its own",
                )
            )
            return None
        async with self.store.read_body(message.queue_id) as body:
            headers = headers_to_return(await body.read(MAX_ORIGINAL_HEADERS + 1))
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
        bounce_id = await self.store.enqueue(None, targets, spool)
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

    def _may_receive(self, target: Target) -> bool:
        """False for a remote address literal that no route of its own names.

        Only an exact route counts, not ``"*"``: the operator must have meant
        that literal.  A literal sender is nearly always forged, and a bounce
        to it would make us connect to whatever IP the client chose.
        """
        domain = target.address.domain_key
        if target.local or not is_address_literal(domain):
            return True
        return address_literal_key(domain) in self.routed_domains
