"""What an attempt's outcomes become in the queue: results recorded, reports made.

Order matters.  The attempt's one report (RFC 3464) is made first, while the
message is surely there to be quoted (the last result recorded removes it).
The results of recipients delivered or deferred are recorded next, before the
report is queued, so that a report that fails never causes a delivered copy
to be made again.  The failed recipients are recorded last: BOUNCED once the
report is queued, else BOUNCING, and the failure report alone is tried again
later (after the first retry interval).  Reports of success and delay are made
at most once: one lost in a crash or a failing queue is not made again (a
second copy of a delivered message would be worse).  A result
that cannot be recorded is written again and again, with a growing pause,
until storage is back: one failing disk never ends the worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Protocol

from mailwright.config import Config
from mailwright.delivery.dsn import Action, ReportedRecipient
from mailwright.delivery.notify import (
    delay_warning_due,
    expansions,
    is_expanded,
    success_action,
    wants_success,
)
from mailwright.delivery.outcome import INTERNAL_ERROR, DeliveryStatus, Outcome
from mailwright.delivery.reports import PreparedReport
from mailwright.delivery.schedule import expires_at, next_attempt, retry_delay
from mailwright.errors import StorageError
from mailwright.logfmt import kv
from mailwright.queue.base import (
    QueuedMessage,
    QueuedRecipient,
    QueueStore,
    RecipientResult,
    RecipientState,
)

log = logging.getLogger("mailwright.delivery")

#: Pauses between tries to record a result while storage fails: doubling up to the max.
RECORD_RETRY_FIRST = 0.5
RECORD_RETRY_MAX = 30.0


class Reporter(Protocol):
    """Makes and queues reports (RFC 3464): delivery/reports.py's DsnReporter."""

    async def prepare(
        self, message: QueuedMessage, recipients: Sequence[ReportedRecipient]
    ) -> PreparedReport | None:
        """The report about ``recipients``, made while the message is still in the queue;
        None when none is made.  Raises when the message cannot be read."""

    async def queue(self, report: PreparedReport) -> str:
        """Enqueue a prepared report; its queue id.  Raises when it could not be queued."""


class ResultRecorder:
    def __init__(
        self,
        config: Config,
        store: QueueStore,
        *,
        reporter: Reporter | None,
        clock: Callable[[], float],
        wake: Callable[[], None],
        wake_at: Callable[[float], None],
    ) -> None:
        """``wake``: there is new work (a report); ``wake_at``: a recipient falls due then."""
        self.config = config
        self.store = store
        self.reporter = reporter
        self.clock = clock
        self._wake = wake
        self._wake_at = wake_at
        #: Set when the worker stops: a result that cannot be recorded is then given up
        #: (its claim lapses and the recipient is tried again after a restart).
        self.stopping = False

    async def record_attempt(
        self,
        message: QueuedMessage,
        attempted: Sequence[QueuedRecipient],
        outcomes: Mapping[int, Outcome],
        bouncing: Sequence[QueuedRecipient],
    ) -> None:
        """Record every attempted recipient's outcome and queue the one report of
        everything that fell due (delivery/notify.py says what): those recipients of
        the message share it (RFC 3464 2.3: a section each).

        The report is made first (it quotes the message, which the last result
        recorded removes), queued after the results of the delivered and deferred
        recipients are recorded, and before those of the failed ones.
        """
        everyone = await self._all_recipients(message, attempted, outcomes)
        results: list[tuple[QueuedRecipient, Outcome, RecipientResult, DeliveryStatus]] = []
        for rcpt in attempted:
            outcome = outcomes[rcpt.index]
            result, status = self._decide(message, rcpt, outcome)
            results.append((rcpt, outcome, replace(result, relay=outcome.relay), status))
        failed = [
            (rcpt, outcome, status)
            for rcpt, outcome, result, status in results
            if result.state is RecipientState.BOUNCED
        ]
        succeeded = [
            (rcpt, outcome)
            for rcpt, outcome, result, _ in results
            if result.state is RecipientState.DELIVERED
        ]
        deferred = [
            (rcpt, outcome)
            for rcpt, outcome, result, _ in results
            if result.state is RecipientState.DEFERRED
        ]
        failures = _failure_reports(failed, bouncing)
        sections = [
            *failures,
            *_success_reports(everyone, succeeded),
            *await self._delay_reports(message, deferred),
        ]
        report, problem = await self._prepare(message, sections)
        for rcpt, outcome, result, status in results:
            if result.state is RecipientState.BOUNCED:
                continue
            await self._record(message, rcpt, result)
            self._log(message, rcpt, outcome, status)
            if result.state is RecipientState.DEFERRED:
                self._wake_at(result.next_attempt)
        if report is not None:
            problem = await self._queue(report)
        if problem is not None:
            self._log_report_error(message, problem, failures=bool(failures))
        await self._record_failed(message, failed, bouncing, report_failed=problem is not None)

    def _decide(
        self, message: QueuedMessage, rcpt: QueuedRecipient, attempt: Outcome
    ) -> tuple[RecipientResult, DeliveryStatus]:
        now = self.clock()
        reply = attempt.reply
        if attempt.success:
            return RecipientResult(RecipientState.DELIVERED, reply), DeliveryStatus.SENT
        if attempt.permanent:
            return RecipientResult(RecipientState.BOUNCED, reply), DeliveryStatus.BOUNCED
        queue = self.config.queue
        when = next_attempt(message.received_at, rcpt.attempts + 1, now, queue.retry, queue.max_age)
        if when is None:
            return RecipientResult(RecipientState.BOUNCED, reply), DeliveryStatus.EXPIRED
        return RecipientResult(RecipientState.DEFERRED, reply, when), DeliveryStatus.DEFERRED

    # ------------------------------------------------------------ reports

    async def _all_recipients(
        self,
        message: QueuedMessage,
        attempted: Sequence[QueuedRecipient],
        outcomes: Mapping[int, Outcome],
    ) -> Sequence[QueuedRecipient]:
        """Every recipient of the message as it was before this attempt was recorded, when
        an alias's ``expanded`` report may fall due (the claim holds only pending ones);
        else the claimed ones.  Read before the results, so a target delivered earlier is
        told from one delivered now."""
        if message.sender is None or self.reporter is None:
            return message.recipients
        if not any(
            outcomes[r.index].success and wants_success(r.target) and is_expanded(r.target)
            for r in attempted
        ):
            return message.recipients
        try:
            whole = await self.store.get(message.queue_id)
        except StorageError as exc:
            log.warning(kv(event="report-error", id=message.queue_id, error=exc))
            return message.recipients
        return message.recipients if whole is None else whole.recipients

    async def _delay_reports(
        self, message: QueuedMessage, deferred: Sequence[tuple[QueuedRecipient, Outcome]]
    ) -> list[ReportedRecipient]:
        """The ``delayed`` sections due now, each recipient's first and last.

        At most once, not at least once: the recipients are marked
        (``mark_delay_reported``, durable) before the report is queued.  A crash
        or a storage failure in between loses that warning, and the sender
        still gets the failure or success report it asked for; the other order
        would send a second warning after every crash between the two, and a
        warning is a courtesy, while two of them look like two problems.  A
        mark that cannot be written makes no report now: the next deferral
        tries again.
        """
        if self.reporter is None:
            return []
        now = self.clock()
        queue = self.config.queue
        due = [
            (rcpt, outcome)
            for rcpt, outcome in deferred
            if delay_warning_due(message, rcpt, now, queue.delay_warning)
        ]
        if not due:
            return []
        try:
            await self.store.mark_delay_reported(message.queue_id, [r.index for r, _ in due])
        except StorageError as exc:
            log.warning(kv(event="report-error", id=message.queue_id, error=exc))
            return []
        until = expires_at(message.received_at, queue.max_age)
        return [
            ReportedRecipient.of(
                rcpt.target,
                Action.DELAYED,
                outcome.reply,
                remote_mta=outcome.relay,
                will_retry_until=until,
            )
            for rcpt, outcome in due
        ]

    async def _prepare(
        self, message: QueuedMessage, sections: Sequence[ReportedRecipient]
    ) -> tuple[PreparedReport | None, Exception | None]:
        """The report of ``sections``, or why it could not be made."""
        if self.reporter is None or not sections:
            return None, None
        try:
            return await self.reporter.prepare(message, sections), None
        except Exception as exc:
            return None, exc

    async def _queue(self, report: PreparedReport) -> Exception | None:
        assert self.reporter is not None
        try:
            await self.reporter.queue(report)
        except Exception as exc:
            return exc
        self._wake()  # the report is new work
        return None

    def _log_report_error(
        self, message: QueuedMessage, problem: Exception, *, failures: bool
    ) -> None:
        """A report that could not be made or queued: one of failure is tried again after
        the first retry interval; one of success or delay alone is not (at most once)."""
        retry = retry_delay(1, self.config.queue.retry)
        log.error(
            kv(
                event="bounce-error" if failures else "report-error",
                id=message.queue_id,
                error=repr(problem),
                retry=f"{retry}s" if failures else None,
            )
        )

    async def _record_failed(
        self,
        message: QueuedMessage,
        failed: Sequence[tuple[QueuedRecipient, Outcome, DeliveryStatus]],
        bouncing: Sequence[QueuedRecipient],
        *,
        report_failed: bool,
    ) -> None:
        """Record the recipients that failed for good now, and those whose report of
        failure failed before: BOUNCED, or BOUNCING when their report could not be
        made or queued (it is tried again after the first retry interval).  One whose
        NOTIFY leaves out FAILURE is BOUNCED: it never had a report to wait for."""
        retry_at = self.clock() + retry_delay(1, self.config.queue.retry) if report_failed else 0.0

        def state_of(rcpt: QueuedRecipient) -> RecipientState:
            if report_failed and _wants_failure(rcpt):
                return RecipientState.BOUNCING
            return RecipientState.BOUNCED

        for rcpt, attempt, status in failed:
            result = RecipientResult(state_of(rcpt), attempt.reply, retry_at, relay=attempt.relay)
            await self._record(message, rcpt, result)
            self._log(message, rcpt, attempt, status)
        for rcpt in bouncing:
            reply = rcpt.last_reply or INTERNAL_ERROR
            await self._record(message, rcpt, RecipientResult(state_of(rcpt), reply, retry_at))
        if retry_at and any(_wants_failure(r) for r in [*(f[0] for f in failed), *bouncing]):
            self._wake_at(retry_at)

    # ------------------------------------------------------------ recording

    async def _record(
        self, message: QueuedMessage, rcpt: QueuedRecipient, result: RecipientResult
    ) -> None:
        """Record one result, again and again while storage fails, until it is recorded.

        Giving up would not lose the recipient (its claim lapses and it is tried
        again), but a delivered one would be delivered twice.  Only a worker
        that is stopping gives up.
        """
        pause = RECORD_RETRY_FIRST
        while True:
            try:
                await self.store.record_result(message.queue_id, rcpt.index, result)
                return
            except StorageError as exc:
                if self.stopping:
                    log.error(kv(event="record-abandoned", id=message.queue_id, error=exc))
                    return
                log.warning(
                    kv(
                        event="record-error",
                        id=message.queue_id,
                        to=f"<{rcpt.target.address}>",
                        error=exc,
                        retry=f"{pause:g}s",
                    )
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, RECORD_RETRY_MAX)

    def _log(
        self,
        message: QueuedMessage,
        rcpt: QueuedRecipient,
        attempt: Outcome,
        status: DeliveryStatus,
    ) -> None:
        target = rcpt.target
        log.info(
            kv(
                event="delivery",
                id=message.queue_id,
                to=f"<{target.address}>",
                orig_to=f"<{target.original}>" if target.original != target.address else None,
                relay=attempt.relay or ("local" if target.local else None),
                delay=f"{self.clock() - message.received_at:.2f}",
                attempt=rcpt.attempts + 1,
                status=status,
                reply=str(attempt.reply),
            )
        )


def _wants_failure(rcpt: QueuedRecipient) -> bool:
    return rcpt.target.notify.wants("FAILURE")


def _failure_reports(
    failed: Sequence[tuple[QueuedRecipient, Outcome, DeliveryStatus]],
    bouncing: Sequence[QueuedRecipient],
) -> list[ReportedRecipient]:
    """The ``failed`` sections of the recipients whose NOTIFY asks for FAILURE."""
    now = [
        ReportedRecipient.of(
            rcpt.target,
            Action.FAILED,
            attempt.reply,
            remote_mta=attempt.relay,
            expired=status is DeliveryStatus.EXPIRED,
        )
        for rcpt, attempt, status in failed
        if _wants_failure(rcpt)
    ]
    return now + [_failed_before(rcpt) for rcpt in bouncing if _wants_failure(rcpt)]


def _success_reports(
    everyone: Sequence[QueuedRecipient], succeeded: Sequence[tuple[QueuedRecipient, Outcome]]
) -> list[ReportedRecipient]:
    """The ``delivered``, ``relayed`` and ``expanded`` sections of recipients delivered now.

    ``everyone``: the message's recipients before this attempt was recorded.  An
    alias with several targets gets its one ``expanded`` section when the first
    of them is delivered (none of them DELIVERED before), and its targets none
    of their own (see delivery/notify.py).
    """
    groups = expansions(everyone)
    group_of = {rcpt.index: key for key, members in groups.items() for rcpt in members}
    sections: list[ReportedRecipient] = []
    expanded: set[str] = set()
    for rcpt, outcome in succeeded:
        target = rcpt.target
        key = group_of.get(rcpt.index)
        if key is None:
            action = success_action(target, outcome)
            if action is not None:
                sections.append(
                    ReportedRecipient.of(target, action, outcome.reply, remote_mta=outcome.relay)
                )
            continue
        if key in expanded or not wants_success(target):
            continue
        if any(member.state is RecipientState.DELIVERED for member in groups[key]):
            continue  # reported when the first of them was delivered
        expanded.add(key)
        sections.append(
            ReportedRecipient(
                action=Action.EXPANDED,
                address=target.original,
                original=target.original,
                orcpt=target.orcpt,
            )
        )
    return sections


def _failed_before(rcpt: QueuedRecipient) -> ReportedRecipient:
    """A BOUNCING recipient's section of the report, from what the queue kept of it.

    Its last reply is the one it failed with: a 5xx refused it for good, any
    other reply means it expired.  The host that gave the reply is not kept.
    """
    reply = rcpt.last_reply or INTERNAL_ERROR
    return ReportedRecipient.of(rcpt.target, Action.FAILED, reply, expired=not reply.is_permanent)
