"""The delivery loop: claim due work from the queue and hand each recipient to its transport.

Local recipients go to their Maildir; remote ones to the SMTP deliverer.  The
outcome of each attempt is recorded in the queue, with the next attempt time
from schedule.py; permanent failures and expired recipients are collected per
message and reported to the sender in one bounce (dsn.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from mailwright.config import Config
from mailwright.delivery.attempt import Attempt
from mailwright.delivery.dsn import FailedRecipient
from mailwright.delivery.local import LocalDelivery
from mailwright.delivery.schedule import next_attempt
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

POLL_INTERVAL = 5.0  # seconds between looks at the queue when nobody wakes us
CLAIM_BATCH = 100  # messages claimed at once


class RemoteDeliverer(Protocol):
    """Delivers one message to its remote recipients (delivery/remote.py)."""

    async def deliver(
        self, message: QueuedMessage, recipients: Sequence[QueuedRecipient]
    ) -> dict[int, Attempt]:
        """An Attempt for every recipient index given."""


class Bouncer(Protocol):
    async def bounce(self, message: QueuedMessage, failed: Sequence[FailedRecipient]) -> str | None:
        """Tell the sender (once per message) about recipients that failed for good."""


class DeliveryWorker:
    def __init__(
        self,
        config: Config,
        store: QueueStore,
        *,
        remote: RemoteDeliverer | None = None,
        bouncer: Bouncer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.remote = remote
        self.bouncer = bouncer
        self.clock = clock
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._slots = asyncio.Semaphore(max(1, config.delivery.concurrency))
        self._in_flight: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = float("inf")
        self._local = LocalDelivery(
            data_dir=config.data_dir,
            hostname=config.hostname,
            store=store,
            threads=config.delivery.local_concurrency,
        )

    def wake(self, queue_id: str | None = None) -> None:
        self._wakeup.set()

    def _wake_at(self, when: float) -> None:
        """Look at the queue again when a deferred recipient falls due (not only at polls)."""
        if when >= self._timer_due:
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer_due = when
        self._timer = loop.call_later(max(0.0, when - self.clock()), self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self._timer_due = float("inf")
        self._wakeup.set()

    async def run(self) -> None:
        while not self._stopping:
            self._wakeup.clear()
            try:
                claimed = await self.store.claim_due(self.clock(), CLAIM_BATCH)
            except StorageError as exc:
                log.error(kv(event="claim-error", error=exc))
                claimed = []
            for message in claimed:
                await self._slots.acquire()
                if self._stopping:
                    self._slots.release()
                    break
                task = asyncio.create_task(self._deliver_message(message))
                self._in_flight.add(task)
                task.add_done_callback(self._done)
            if claimed and len(claimed) >= CLAIM_BATCH:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), POLL_INTERVAL)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error(kv(event="delivery-crash", error=repr(task.exception())))

    async def stop(self, grace: float) -> None:
        """Claim nothing more; let attempts in flight finish within ``grace``.

        An attempt still running after that is abandoned: its lease lapses and it
        is tried again after restart (at-least-once).
        """
        self._stopping = True
        self._wakeup.set()
        if self._timer is not None:
            self._timer.cancel()
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=grace)
        self._local.shutdown()

    async def _deliver_message(self, message: QueuedMessage) -> None:
        local = [r for r in message.recipients if r.target.local]
        remote = [r for r in message.recipients if not r.target.local]
        attempts: dict[int, Attempt] = {}
        if local:  # together: the copies of one message go to a Maildir thread as one batch
            copies = await asyncio.gather(*(self._local.deliver(message, r) for r in local))
            attempts.update(
                (rcpt.index, attempt) for rcpt, attempt in zip(local, copies, strict=True)
            )
        if remote:
            if self.remote is None:
                for rcpt in remote:
                    attempts[rcpt.index] = Attempt(
                        success=False,
                        permanent=False,
                        reply="451 4.4.0 Remote delivery is not available in this process",
                    )
            else:
                attempts.update(await self.remote.deliver(message, remote))
        decided = [(rcpt, attempts[rcpt.index]) for rcpt in message.recipients]
        results = [(rcpt, att, *self._decide(message, rcpt, att)) for rcpt, att in decided]
        failed = [
            FailedRecipient(
                address=rcpt.target.address,
                original=rcpt.target.original,
                reply=att.reply,
                remote_mta=att.relay,
                expired=status == "expired",
            )
            for rcpt, att, _, status in results
            if status in ("bounced", "expired")
        ]
        if failed and self.bouncer is not None:
            # Before recording: once every recipient is final the body is gone.
            try:
                if await self.bouncer.bounce(message, failed) is not None:
                    self._wakeup.set()  # the bounce is new work
            except Exception as exc:  # the bounce is retried with the message
                log.error(kv(event="bounce-error", id=message.queue_id, error=repr(exc)))
                return
        for rcpt, attempt, result, status in results:
            await self.store.record_result(message.queue_id, rcpt.index, result)
            self._log(message, rcpt, attempt, status)
            if result.state is RecipientState.DEFERRED:
                self._wake_at(result.next_attempt)

    def _decide(
        self, message: QueuedMessage, rcpt: QueuedRecipient, attempt: Attempt
    ) -> tuple[RecipientResult, str]:
        now = self.clock()
        if attempt.success:
            return RecipientResult(RecipientState.DELIVERED, attempt.reply), "sent"
        if attempt.permanent:
            return RecipientResult(RecipientState.BOUNCED, attempt.reply), "bounced"
        queue = self.config.queue
        when = next_attempt(message.received_at, rcpt.attempts + 1, now, queue.retry, queue.max_age)
        if when is None:
            return RecipientResult(RecipientState.BOUNCED, attempt.reply), "expired"
        return RecipientResult(RecipientState.DEFERRED, attempt.reply, when), "deferred"

    def _log(
        self, message: QueuedMessage, rcpt: QueuedRecipient, attempt: Attempt, status: str
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
                reply=attempt.reply,
            )
        )
