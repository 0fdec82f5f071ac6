"""Queueing delivery status notifications: routed like any mail, from the null sender.

``DsnReporter`` makes the report of delivery/dsn.py for one message
(``prepare``, while the message is surely still in the queue to be quoted) and
enqueues it (``queue``).  It is routed with the same Router as incoming mail (so a local
sender gets it in its Maildir), from ``<>``, never for a message that came
from ``<>`` (RFC 5321 4.5.5: a report never causes another), and never to an
address literal (``x@[192.0.2.1]`` would make us connect to any IP the client
names) unless ``[routes]`` has a route for that very literal: such reports
are dropped and logged (``bounce-dropped``).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from mailwright.delivery.dsn import (
    MAX_ORIGINAL_HEADERS,
    MAX_RETURNED_MESSAGE,
    Action,
    ReportedRecipient,
    ReturnedContent,
    build_report,
    headers_to_return,
)
from mailwright.logfmt import kv
from mailwright.model import NO_OPTIONS, Address, MailOptions
from mailwright.policy.routing import Router
from mailwright.queue.base import QueuedMessage, QueueStore, Target
from mailwright.syntax import address_literal_key, is_address_literal

log = logging.getLogger("mailwright.delivery")


@dataclass(frozen=True, slots=True)
class PreparedReport:
    """A report made and routed, not yet queued."""

    about: str  # the queue id of the message it reports on
    sender: Address  # who gets it
    targets: tuple[Target, ...]
    data: bytes
    failed: bool  # it reports a failure (logged as a bounce)
    actions: str  # its actions, for the log: "delivered,failed"


class DsnReporter:
    """Makes the report for a message and queues it like any other mail."""

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
        #: ``[routes]`` keys: an address literal among them may receive reports.
        self.routed_domains = frozenset(routed_domains)

    def reload(self, router: Router, routed_domains: Collection[str]) -> None:
        """SIGHUP (app.py): reports are routed as new mail is, by the new configuration."""
        self.router, self.routed_domains = router, frozenset(routed_domains)

    async def prepare(
        self, message: QueuedMessage, recipients: Sequence[ReportedRecipient]
    ) -> PreparedReport | None:
        """The report about ``recipients``, made but not queued; None when none is made (a
        message from ``<>``, nothing to report, a sender it may not go to).

        Made before the attempt's results are recorded: the last one recorded
        removes the message, and the report quotes it.  Raises StorageError
        when the original cannot be read.
        """
        if message.sender is None or not recipients:
            return None  # never report on a report (RFC 5321 4.5.5)
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
        failed = any(item.action is Action.FAILED for item in recipients)
        data = build_report(
            reporting_mta=self.hostname,
            sender=message.sender,
            queue_id=message.queue_id,
            arrival=message.received_at,
            recipients=recipients,
            returned=await self._returned(message, failed=failed),
            envid=message.options.envid,
        )
        actions = ",".join(sorted({str(item.action) for item in recipients}))
        return PreparedReport(message.queue_id, message.sender, targets, data, failed, actions)

    async def queue(self, report: PreparedReport) -> str:
        """Enqueue a prepared report (durably, like any mail); returns its queue id.

        Raises StorageError when it could not be queued.
        """
        spool = self.store.new_spool()
        spool.write(report.data)
        eight_bit = MailOptions(body="8BITMIME") if not report.data.isascii() else NO_OPTIONS
        report_id = await self.store.enqueue(None, report.targets, spool, eight_bit)
        log.info(
            kv(
                event="bounce" if report.failed else "report",
                id=report.about,
                bounce_id=report_id,
                to=f"<{report.sender}>",
                actions=report.actions,
            )
        )
        return report_id

    async def _returned(self, message: QueuedMessage, *, failed: bool) -> ReturnedContent:
        """What of the original comes back: RFC 3461 4.3 RET=FULL asks for all of it, in a
        report of a failure only; otherwise (RET=HDRS, no RET, other reports) the headers.

        A BINARYMIME original (RFC 3030) never comes back whole: message/rfc822
        cannot carry binary in a report sent as 8-bit text.
        """
        whole = failed and message.options.ret == "FULL" and message.options.body != "BINARYMIME"
        limit = MAX_RETURNED_MESSAGE if whole else MAX_ORIGINAL_HEADERS
        async with self.store.read_body(message.queue_id) as body:
            opening = await body.read(limit + 1)
        if whole and len(opening) <= MAX_RETURNED_MESSAGE:
            return ReturnedContent(opening, whole=True)
        return ReturnedContent(headers_to_return(opening), cut=whole)

    def _may_receive(self, target: Target) -> bool:
        """False for a remote address literal that no route of its own names.

        Only an exact route counts, not ``"*"``: the operator must have meant
        that literal.  A literal sender is nearly always forged, and a report
        to it would make us connect to whatever IP the client chose.
        """
        domain = target.address.domain_key
        if target.local or not is_address_literal(domain):
            return True
        return address_literal_key(domain) in self.routed_domains
