"""What an attempt's outcomes become in the queue: results recorded, bounces made.

Order matters: the results of recipients delivered or deferred are recorded
before the bounce is made, so that a bounce that fails never causes a
delivered copy to be made again.  The failed recipients are recorded last (the
message and its body stay until then, for the bounce to quote): BOUNCED once
the bounce is queued, else BOUNCING, and the bounce alone is tried again later
(after the first retry interval).  A result that cannot be recorded is written
again and again, with a growing pause, until storage is back: one failing disk
never ends the worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Protocol

from mailwright.config import Config
from mailwright.delivery.dsn import FailedRecipient
from mailwright.delivery.outcome import INTERNAL_ERROR, DeliveryStatus, Outcome
from mailwright.delivery.schedule import next_attempt, retry_delay
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


class Bouncer(Protocol):
    async def bounce(self, message: QueuedMessage, failed: Sequence[FailedRecipient]) -> str | None:
        """Tell the sender (once per message) about recipients that failed for good."""


class ResultRecorder:
    def __init__(
        self,
        config: Config,
        store: QueueStore,
        *,
        bouncer: Bouncer | None,
        clock: Callable[[], float],
        wake: Callable[[], None],
        wake_at: Callable[[float], None],
    ) -> None:
        """``wake``: there is new work (a bounce); ``wake_at``: a recipient falls due then."""
        self.config = config
        self.store = store
        self.bouncer = bouncer
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
        """Record every attempted recipient's outcome, then bounce what failed for good."""
        failed: list[tuple[QueuedRecipient, Outcome, DeliveryStatus]] = []
        for rcpt in attempted:
            outcome = outcomes[rcpt.index]
            result, status = self._decide(message, rcpt, outcome)
            result = replace(result, relay=outcome.relay)
            if result.state is RecipientState.BOUNCED:
                failed.append((rcpt, outcome, status))
                continue
            await self._record(message, rcpt, result)
            self._log(message, rcpt, outcome, status)
            if result.state is RecipientState.DEFERRED:
                self._wake_at(result.next_attempt)
        if failed or bouncing:
            await self._bounce(message, failed, bouncing)

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

    # ------------------------------------------------------------ bounces

    async def _bounce(
        self,
        message: QueuedMessage,
        failed: Sequence[tuple[QueuedRecipient, Outcome, DeliveryStatus]],
        bouncing: Sequence[QueuedRecipient],
    ) -> None:
        """Report the recipients that failed for good now, and those whose bounce failed
        before, in one DSN; then record them all: BOUNCED, or BOUNCING when the DSN could
        not be queued (it is tried again after the first retry interval)."""
        report = [
            FailedRecipient(
                address=rcpt.target.address,
                original=rcpt.target.original,
                reply=attempt.reply,
                remote_mta=attempt.relay,
                expired=status is DeliveryStatus.EXPIRED,
            )
            for rcpt, attempt, status in failed
        ] + [_failed_before(rcpt) for rcpt in bouncing]
        state = RecipientState.BOUNCED
        retry_at = 0.0
        if self.bouncer is not None:
            try:
                if await self.bouncer.bounce(message, report) is not None:
                    self._wake()  # the bounce is new work
            except Exception as exc:
                state = RecipientState.BOUNCING
                retry_at = self.clock() + retry_delay(1, self.config.queue.retry)
                log.error(
                    kv(
                        event="bounce-error",
                        id=message.queue_id,
                        error=repr(exc),
                        retry=f"{retry_at - self.clock():.0f}s",
                    )
                )
        for rcpt, attempt, status in failed:
            result = RecipientResult(state, attempt.reply, retry_at, relay=attempt.relay)
            await self._record(message, rcpt, result)
            self._log(message, rcpt, attempt, status)
        for rcpt in bouncing:
            reply = rcpt.last_reply or INTERNAL_ERROR
            await self._record(message, rcpt, RecipientResult(state, reply, retry_at))
        if state is RecipientState.BOUNCING:
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


def _failed_before(rcpt: QueuedRecipient) -> FailedRecipient:
    """A BOUNCING recipient's line of the report, from what the queue kept of it.

    Its last reply is the one it failed with: a 5xx refused it for good, any
    other reply means it expired.  The host that gave the reply is not kept.
    """
    reply = rcpt.last_reply or INTERNAL_ERROR
    return FailedRecipient(
        address=rcpt.target.address,
        original=rcpt.target.original,
        reply=reply,
        expired=not reply.is_permanent,
    )

