"""Delivery status notifications (RFC 3464): the report's bytes, made by pure functions.

A report is a ``multipart/report; report-type=delivery-status`` (RFC 3464 2,
RFC 6522): a readable explanation, a ``message/delivery-status`` part with one
section per recipient, and the original (or its headers).  One report covers
every recipient of one message whose reports fall due together, whatever
their actions (RFC 3464 2.3.3 lets one report mix them):

- ``failed``: refused for good, or still failing at ``max_age``;
- ``delayed``: still undelivered after ``[queue] delay_warning`` (at most once);
- ``delivered``: written to a local Maildir;
- ``relayed``: handed to a next hop that does not offer DSN, which will not report;
- ``expanded``: an alias with several targets, reported once for the alias.

Which recipients get which report (their NOTIFY, RFC 3461 4.1) is decided in
delivery/notify.py; routing and queueing the report in delivery/reports.py.
Reports come from the null sender ``<>`` so that they never cause another
report (RFC 5321 4.5.5), and a message from ``<>`` never gets one.

A report goes to whatever sender the client claimed, so it is mail sent to a
stranger on a stranger's word (backscatter).  What it may carry is bounded:

- the original's header section, at most ``MAX_ORIGINAL_HEADERS`` octets cut
  between two header fields, or, for a failure the sender asked ``RET=FULL``
  for (RFC 3461 4.3), the whole message when it is at most
  ``MAX_RETURNED_MESSAGE`` octets.  RFC 3464 section 2 makes the returned
  content an optional third part, either the whole message (message/rfc822)
  or its headers alone (text/rfc822-headers, RFC 6522).
- reply texts of other servers, and what the sender gave as ORCPT, without
  their control characters: the report is read on terminals and parsed by
  programs, and a CR LF in a field would forge another field.
"""

from __future__ import annotations

import enum
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

from mailwright.model import Address, Target
from mailwright.protocol.dsn import encode_xtext
from mailwright.protocol.reply import Reply, printable_text

#: Octets of the original header section returned in a report, at most.
MAX_ORIGINAL_HEADERS = 16 * 1024
#: RET=FULL returns the whole original up to this size; a larger one, its headers only.
MAX_RETURNED_MESSAGE = 50 * 1024
#: The start of a header field: a field name and its colon (RFC 5322 2.2, 3.6.8; obs-FWS
#: before the colon, RFC 5322 4.5).
_FIELD_START = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")


class Action(enum.StrEnum):
    """RFC 3464 2.3.3: what became of one recipient."""

    FAILED = "failed"
    DELAYED = "delayed"
    DELIVERED = "delivered"
    RELAYED = "relayed"
    EXPANDED = "expanded"


@dataclass(frozen=True, slots=True)
class ReportedRecipient:
    """One section of the report: who, what became of it, with which reply, and where.

    ``address`` is the Final-Recipient (the alias itself for ``expanded``);
    ``original`` the recipient as the client gave it; ``orcpt`` its ORCPT
    (``addr-type;address``, decoded), None when it had none.
    """

    action: Action
    address: Address
    original: Address
    orcpt: str | None = None
    reply: Reply | None = None  # the one it failed or was deferred with, the next hop's 250
    remote_mta: str = ""  # the host that gave the reply, if any
    expired: bool = False  # failed: gave up after max_age rather than on a permanent reply
    will_retry_until: float | None = None  # delayed: the moment it expires (unix time)

    @classmethod
    def of(
        cls,
        target: Target,
        action: Action,
        reply: Reply | None = None,
        *,
        remote_mta: str = "",
        expired: bool = False,
        will_retry_until: float | None = None,
    ) -> ReportedRecipient:
        return cls(
            action=action,
            address=target.address,
            original=target.original,
            orcpt=target.orcpt,
            reply=reply,
            remote_mta=remote_mta,
            expired=expired,
            will_retry_until=will_retry_until,
        )

    @property
    def status(self) -> str:
        """The RFC 3463 status: the reply's enhanced code when it fits the action, else the
        class the action implies (RFC 3464 2.3.4)."""
        if self.action is Action.FAILED and self.expired:
            return "4.4.7"  # RFC 3463: delivery time expired
        klass = {Action.FAILED: 5, Action.DELAYED: 4}.get(self.action, 2)
        reply = self.reply
        if self.action is Action.FAILED and reply is not None:
            klass = reply.code // 100  # a 4xx that failed for good is still a 4.x.x
        if reply is not None and reply.enhanced and reply.enhanced[0] == str(klass):
            return reply.enhanced
        return f"{klass}.0.0"


@dataclass(frozen=True, slots=True)
class ReturnedContent:
    """The report's third part: the whole original (``whole``) or its headers; ``cut``:
    RET=FULL was asked but the original was too large, so only its headers came."""

    data: bytes
    whole: bool = False
    cut: bool = False


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


#: The Subject of a report, by the most important action in it.
_SUBJECTS = (
    (Action.FAILED, "Undelivered Mail Returned to Sender"),
    (Action.DELAYED, "Delayed Mail (still being retried)"),
    (Action.EXPANDED, "Successful Mail Delivery Report"),
    (Action.DELIVERED, "Successful Mail Delivery Report"),
    (Action.RELAYED, "Successful Mail Delivery Report"),
)

#: What the readable part says about the recipients of each action.
_SUMMARIES = {
    Action.FAILED: "Your message could not be delivered to these recipients:",
    Action.DELAYED: (
        "Your message has not been delivered yet to these recipients; it is tried again"
        " and you need not send it again:"
    ),
    Action.DELIVERED: "Your message was delivered to the mailbox of these recipients:",
    Action.RELAYED: (
        "Your message was handed on to a mail server that sends no delivery reports,"
        " so this is the last report about these recipients:"
    ),
    Action.EXPANDED: (
        "Your message was delivered to these addresses, each of which passes it on to"
        " several others (reports about those follow only if they fail):"
    ),
}


def orcpt_field(orcpt: str) -> str:
    """The ``addr-type; address`` of Original-Recipient (RFC 3464 2.3.1) from a decoded ORCPT.

    The address is the sender's own, decoded from xtext; one that would not be
    printable text in a header (a control character, a CR LF forging another
    field) is given as xtext again, as the ORCPT parameter carried it.
    """
    kind, _, address = orcpt.partition(";")
    kind = printable_text(kind).replace(" ", "") or "unknown"
    if printable_text(address) != address:
        address = encode_xtext(address)
    return f"{kind}; {address}"


def _human_lines(
    reporting_mta: str, recipients: Sequence[ReportedRecipient], returned: ReturnedContent
) -> list[str]:
    lines = [f"This is the mail system at {reporting_mta}.", ""]
    for action in Action:
        these = [item for item in recipients if item.action is action]
        if not these:
            continue
        lines += [_SUMMARIES[action], ""]
        for item in these:
            lines += _human_recipient(item)
    if returned.whole:
        lines.append("Your message is attached below.")
    elif returned.cut:
        lines.append(
            f"Your message was larger than {MAX_RETURNED_MESSAGE // 1024} KiB: only its"
            " headers are attached below, the rest was left out."
        )
    else:
        lines.append("The headers of your message are attached below.")
    return lines


def _human_recipient(item: ReportedRecipient) -> list[str]:
    if item.action is Action.FAILED:
        why = (
            "gave up after retrying for too long" if item.expired else "the receiving side refused"
        )
        lines = [f"<{item.address}>: {why}"]
    else:
        lines = [f"<{item.address}>"]
    if item.original != item.address:
        lines.append(f"    (you sent it to <{item.original}>)")
    if item.reply is not None and item.action in (Action.FAILED, Action.DELAYED):
        if item.remote_mta:
            lines.append(f"    host {item.remote_mta} said: {item.reply}")
        else:
            lines.append(f"    reason: {item.reply}")
    if item.will_retry_until is not None:
        until = format_datetime(datetime.fromtimestamp(item.will_retry_until, UTC))
        lines.append(f"    tried again until {until}")
    return [*lines, ""]


def _address_type(address: Address) -> str:
    """RFC 6533 3: an address with UTF-8 in it is of type ``utf-8``, never ``rfc822``."""
    return "rfc822" if str(address).isascii() else "utf-8"


def _is_global(recipients: Sequence[ReportedRecipient]) -> bool:
    """RFC 6533 6: a report naming a non-ASCII address is a global delivery status."""
    return any(
        not str(item.address).isascii()
        or not str(item.original).isascii()
        or (item.orcpt is not None and not item.orcpt.isascii())
        for item in recipients
    )


def _status_section(item: ReportedRecipient, date: str) -> list[str]:
    """RFC 3464 2.3: the per-recipient fields, in the RFC's order."""
    lines = [""]
    if item.orcpt is not None:
        lines.append(f"Original-Recipient: {orcpt_field(item.orcpt)}")
    elif item.original != item.address:
        lines.append(f"Original-Recipient: {_address_type(item.original)}; {item.original}")
    lines.append(f"Final-Recipient: {_address_type(item.address)}; {item.address}")
    lines.append(f"Action: {item.action}")
    lines.append(f"Status: {item.status}")
    if item.remote_mta:
        lines.append(f"Remote-MTA: dns; {item.remote_mta}")
    if item.reply is not None and (item.remote_mta or item.action is not Action.DELIVERED):
        lines.append(f"Diagnostic-Code: smtp; {item.reply}")
    if item.action is not Action.EXPANDED:
        lines.append(f"Last-Attempt-Date: {date}")
    if item.will_retry_until is not None:  # RFC 3464 2.3.7
        until = datetime.fromtimestamp(item.will_retry_until, UTC)
        lines.append(f"Will-Retry-Until: {format_datetime(until)}")
    return lines


def build_report(
    *,
    reporting_mta: str,
    sender: Address,
    queue_id: str,
    arrival: float,
    recipients: Sequence[ReportedRecipient],
    returned: ReturnedContent,
    envid: str | None = None,
    now: datetime | None = None,
) -> bytes:
    """The whole report as bytes with CRLF line endings."""
    now = now or datetime.now(UTC)
    boundary = f"=_mailwright_{secrets.token_hex(12)}"
    date = format_datetime(now)
    arrival_date = format_datetime(datetime.fromtimestamp(arrival, UTC))
    # Replies of other servers (and texts stored before they were cleaned) lose
    # their control characters here too: the report is shown on terminals.
    recipients = [
        ReportedRecipient(
            action=item.action,
            address=item.address,
            original=item.original,
            orcpt=item.orcpt,
            reply=item.reply.printable() if item.reply is not None else None,
            remote_mta=printable_text(item.remote_mta),
            expired=item.expired,
            will_retry_until=item.will_retry_until,
        )
        for item in recipients
    ]
    status_lines = []
    if envid is not None:  # RFC 3464 2.2.1: the ENVID as the sender gave it, xtext
        status_lines.append(f"Original-Envelope-Id: {encode_xtext(envid)}")
    status_lines += [
        f"Reporting-MTA: dns; {reporting_mta}",
        f"X-Mailwright-Queue-ID: {queue_id}",
        f"Arrival-Date: {arrival_date}",
    ]
    for item in recipients:
        status_lines += _status_section(item, date)
    # RFC 6533 6.1, 6.2: with a UTF-8 address the status part is message/global-delivery-
    # status (UTF-8 allowed in it), and the report's report-type says so.
    status_type = "global-delivery-status" if _is_global(recipients) else "delivery-status"
    actions = {item.action for item in recipients}
    subject = next(text for action, text in _SUBJECTS if action in actions)
    if returned.whole:
        third = ["Content-Description: Undelivered message", "Content-Type: message/rfc822"]
        if any(octet > 0x7F for octet in returned.data):
            third.append("Content-Transfer-Encoding: 8bit")  # RFC 2046 5.2.1: 7bit, 8bit or binary
    else:
        third = ["Content-Description: Message headers", "Content-Type: text/rfc822-headers"]
    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{sender}>",
        f"Subject: {subject}",
        f"Date: {date}",
        f"Message-ID: <{queue_id}.{secrets.token_hex(6)}@{reporting_mta}>",
        "Auto-Submitted: auto-replied",  # RFC 3834
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type={status_type}; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        "Content-Type: text/plain; charset=utf-8",
        "",
        *_human_lines(reporting_mta, recipients, returned),
        "",
        f"--{boundary}",
        "Content-Description: Delivery report",
        f"Content-Type: message/{status_type}",
        "",
        *status_lines,
        "",
        f"--{boundary}",
        *third,
        "",
    ]
    out = "\r\n".join(head).encode("utf-8") + b"\r\n" + returned.data
    if returned.data and not returned.data.endswith(b"\r\n"):
        out += b"\r\n"
    out += f"\r\n--{boundary}--\r\n".encode()
    return out
