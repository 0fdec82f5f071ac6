"""The delivery loop: claim due work from the queue and hand each recipient to its transport.

Local recipients go to their Maildir; remote ones to the SMTP deliverer.  The
outcome of each attempt is recorded in the queue, with the next attempt time
from schedule.py; what the sender asked to hear of (failures, delays, success:
RFC 3461 NOTIFY) is collected per message and attempt and reported to the
sender in one DSN (results.py, dsn.py).

A failure stays in the delivery where it happened (DESIGN rule 9).  An error of
a transport becomes a temporary failure of the recipients it concerned; a
result that cannot be recorded (storage failing) is recorded again, with a
growing pause, until it is (results.py); a claim that fails is tried again at
the next look at the queue.  Nothing that goes wrong in one delivery ends the loop.

Two kinds of work never wait for each other: Maildir writes have threads of
their own (local.py), and SMTP deliveries take one of ``[delivery]
concurrency`` slots only once their destination has a connection free
(remote.py), so messages queued behind a slow destination hold nothing the
rest needs.  Every attempt ends within ``[delivery] attempt_timeout`` of its
claim, before the queue's lease on it lapses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from mailwright.config import Config
from mailwright.delivery.local import MAX_BATCH, LocalDelivery
from mailwright.delivery.outcome import (
    INTERNAL_ERROR,
    REMOTE_NOT_AVAILABLE,
    Outcome,
)
from mailwright.delivery.results import Reporter, ResultRecorder
from mailwright.logfmt import kv
from mailwright.metrics import Metrics
from mailwright.queue.base import (
    QueuedMessage,
    QueuedRecipient,
    QueueStore,
    RecipientState,
)

log = logging.getLogger("mailwright.delivery")

POLL_INTERVAL = 5.0  # seconds between looks at the queue when nobody wakes us
CLAIM_BATCH = 100  # messages claimed at once
#: Messages claimed and not yet finished, at most, counting those waiting for their
#: destination's turn (as Postfix's qmgr_message_active_limit).  The worker claims
#: work while fewer messages than it can start at once (``[delivery] concurrency`` SMTP
#: deliveries, plus what the Maildir threads take) are being delivered, not counting
#: those that have waited for their destination longer than SLOW_WAIT: so messages
#: queued behind a slow destination leave room for all other work, up to this many.
DEFAULT_MAX_CLAIMED = 1000
#: Seconds a delivery waits for its destination's turn before it stops counting as being
#: delivered.  A busy but healthy destination's turn comes sooner, and its waiting
#: messages keep the worker from claiming more than it can deliver.
SLOW_WAIT = 1.0


class RemoteDeliverer(Protocol):
    """Delivers one message to its remote recipients (delivery/remote.py)."""

    async def deliver(
        self,
        message: QueuedMessage,
        recipients: Sequence[QueuedRecipient],
        *,
        deadline: float | None = None,
        on_wait: Callable[[bool], None] | None = None,
    ) -> dict[int, Outcome]:
        """An Outcome for every recipient index given, by ``deadline`` (``loop.time()``).

        ``on_wait(True)`` when a delivery has to wait for its destination's turn
        (it holds no connection and no slot meanwhile), ``on_wait(False)`` when it
        stops waiting, whatever the reason.
        """


class DeliveryWorker:
    def __init__(
        self,
        config: Config,
        store: QueueStore,
        *,
        remote: RemoteDeliverer | None = None,
        reporter: Reporter | None = None,
        clock: Callable[[], float] = time.time,
        max_claimed: int = DEFAULT_MAX_CLAIMED,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics if metrics is not None else Metrics()
        self.store = store
        self.remote = remote
        self.reporter = reporter
        self.clock = clock
        self.max_claimed = max(1, max_claimed)
        #: Messages being delivered at once, at most: every SMTP slot busy and every
        #: Maildir thread with a full batch.  Those waiting for a destination don't count.
        self.max_active = min(
            self.max_claimed,
            config.delivery.concurrency + config.delivery.local_concurrency * MAX_BATCH,
        )
        self._slow_waits = 0  # deliveries waiting for their destination for over SLOW_WAIT
        self._wakeup = asyncio.Event()
        self._room = asyncio.Event()  # set when a message is finished or starts waiting
        self._stopping = False
        self._in_flight: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = float("inf")
        self._results = ResultRecorder(
            config,
            store,
            reporter=reporter,
            clock=clock,
            wake=self._wakeup.set,
            wake_at=self._wake_at,
        )
        self._local = LocalDelivery(
            data_dir=config.data_dir,
            mailboxes_dir=config.mailboxes_dir,
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
        """Claim due work and start its deliveries until ``stop()``.

        A claim that fails, for whatever reason, is logged and tried again
        after a pause; nothing here lets an exception end the loop.
        """
        while not self._stopping:
            self._wakeup.clear()
            try:
                more = await self._claim_and_start()
            except Exception as exc:  # storage failing, or a row it cannot read
                log.error(kv(event="claim-error", error=exc))
                await asyncio.sleep(POLL_INTERVAL)  # not woken early: spare a failing store
                continue
            if more:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), POLL_INTERVAL)

    async def _claim_and_start(self) -> bool:
        """Claim what fits beside the messages in flight and start delivering it.

        Returns True when more may be due at once (the claim was full).
        """
        while not (room := self._room_for_claims()) and not self._stopping:
            self._room.clear()
            await self._room.wait()
        if self._stopping:
            return False
        limit = min(CLAIM_BATCH, room)
        deadline = asyncio.get_running_loop().time() + self.config.delivery.attempt_timeout
        claimed = await self.store.claim_due(self.clock(), limit)
        for message in claimed:
            if self._stopping:
                break  # unstarted claims lapse; after a restart they are due again
            task = asyncio.create_task(
                self._deliver_message(message, deadline), name=message.queue_id
            )
            self._in_flight.add(task)
            task.add_done_callback(self._done)
        return len(claimed) >= limit

    def _room_for_claims(self) -> int:
        """How many more messages may be claimed now (see DEFAULT_MAX_CLAIMED)."""
        claimed = len(self._in_flight)
        active = claimed - min(self._slow_waits, claimed)
        return max(0, min(self.max_active - active, self.max_claimed - claimed))

    def _waits_of_one_message(self) -> Callable[[bool], None]:
        """The ``on_wait`` of one message's remote deliveries (see RemoteDeliverer).

        A wait longer than SLOW_WAIT stops counting as a delivery, until it ends.
        """
        loop = asyncio.get_running_loop()
        waits: list[_Wait] = []

        def slow(wait: _Wait) -> None:
            wait.slow = True
            self._slow_waits += 1
            self._room.set()  # it holds nothing the next message needs: claim more

        def on_wait(waiting: bool) -> None:
            if waiting:
                wait = _Wait()
                wait.timer = loop.call_later(SLOW_WAIT, slow, wait)
                waits.append(wait)
                return
            ended = waits.pop()  # the waits of one message are alike: any one will do
            if ended.slow:
                self._slow_waits -= 1
            elif ended.timer is not None:
                ended.timer.cancel()

        return on_wait

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._room.set()
        if not task.cancelled() and task.exception() is not None:
            log.error(kv(event="delivery-crash", error=repr(task.exception())))

    async def stop(self, grace: float) -> None:
        """Claim nothing more; let attempts in flight finish within ``grace``.

        An attempt still running after that is cancelled, its result not recorded:
        its claim stays until the next start releases it (the queue's recovery),
        and it is tried again (at-least-once).  One cut after the end of its data
        was sent may reach the next hop twice.  A Maildir write once begun ends in
        its thread (delivery/local.py).
        """
        self._stopping = True
        self._results.stopping = True
        self._wakeup.set()
        self._room.set()
        if self._timer is not None:
            self._timer.cancel()
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=grace)
        cut = set(self._in_flight)
        for task in cut:
            log.warning(kv(event="delivery-interrupted", id=task.get_name()))
            task.cancel()
        if cut:
            await asyncio.wait(cut)
        self._local.shutdown()

    # ------------------------------------------------------------ one message

    async def _deliver_message(self, message: QueuedMessage, deadline: float) -> None:
        """One attempt at a claimed message, ended by ``deadline`` (``loop.time()``).

        Order matters (delivery/results.py): the attempt's report is made
        first, the results of recipients delivered or deferred are recorded
        before it is queued, so that a report that fails never causes a
        delivered copy to be made again.  The failed recipients are recorded
        last: BOUNCED once their report is queued, else BOUNCING, and that
        report alone is tried again later.
        """
        try:
            await self._attempt_message(message, deadline)
        except Exception as exc:  # a bug: the claim lapses and the attempt is repeated
            log.exception(kv(event="delivery-crash", id=message.queue_id, error=repr(exc)))

    async def _attempt_message(self, message: QueuedMessage, deadline: float) -> None:
        bouncing = [r for r in message.recipients if r.state is RecipientState.BOUNCING]
        to_deliver = [r for r in message.recipients if r.state is not RecipientState.BOUNCING]
        outcomes = await self._attempts(message, to_deliver, deadline)
        self._count(message, to_deliver, outcomes)
        await self._results.record_attempt(message, to_deliver, outcomes, bouncing)

    def _count(
        self,
        message: QueuedMessage,
        recipients: Sequence[QueuedRecipient],
        outcomes: dict[int, Outcome],
    ) -> None:
        """The metrics of one attempt: by relay and status, the next hops' replies, and
        how long a delivered message took from its acceptance."""
        metrics = self.metrics
        for rcpt in recipients:
            outcome = outcomes[rcpt.index]
            status = "sent" if outcome.success else "bounced" if outcome.permanent else "deferred"
            relay = "local" if rcpt.target.local else "remote"
            metrics.delivery_attempts.labels(relay, status).inc()
            if outcome.relay and relay == "remote":  # a next hop answered
                metrics.remote_replies.labels(str(outcome.reply.code)).inc()
            if outcome.success:
                metrics.delivery_seconds.observe(max(0.0, self.clock() - message.received_at))

    async def _attempts(
        self, message: QueuedMessage, recipients: Sequence[QueuedRecipient], deadline: float
    ) -> dict[int, Outcome]:
        """An Outcome for every recipient: local and remote ones at the same time."""
        local = [r for r in recipients if r.target.local]
        remote = [r for r in recipients if not r.target.local]
        if not remote:  # the usual cases need no task of their own
            return await self._deliver_local(message, local, deadline)
        if not local:
            return await self._deliver_remote(message, remote, deadline)
        parts = await asyncio.gather(
            self._deliver_local(message, local, deadline),
            self._deliver_remote(message, remote, deadline),
        )
        return {index: attempt for part in parts for index, attempt in part.items()}

    async def _deliver_local(
        self, message: QueuedMessage, rcpts: Sequence[QueuedRecipient], deadline: float
    ) -> dict[int, Outcome]:
        """Together: the copies of one message go to a Maildir thread as one batch."""
        if not rcpts:
            return {}
        copies = await asyncio.gather(
            *(self._local.deliver(message, r, start_by=deadline) for r in rcpts),
            return_exceptions=True,
        )
        attempts: dict[int, Outcome] = {}
        for rcpt, copy in zip(rcpts, copies, strict=True):
            if isinstance(copy, BaseException):
                self._log_error(message, "local", copy)
                copy = Outcome(INTERNAL_ERROR)
            attempts[rcpt.index] = copy
        return attempts

    async def _deliver_remote(
        self, message: QueuedMessage, rcpts: Sequence[QueuedRecipient], deadline: float
    ) -> dict[int, Outcome]:
        if not rcpts:
            return {}
        if self.remote is None:
            return {r.index: Outcome(REMOTE_NOT_AVAILABLE) for r in rcpts}
        try:
            attempts = await self.remote.deliver(
                message, rcpts, deadline=deadline, on_wait=self._waits_of_one_message()
            )
        except Exception as exc:
            self._log_error(message, "remote", exc)
            attempts = {}
        internal = Outcome(INTERNAL_ERROR)
        return {r.index: attempts.get(r.index, internal) for r in rcpts}

    def _log_error(self, message: QueuedMessage, transport: str, exc: BaseException) -> None:
        log.error(
            kv(event="delivery-error", id=message.queue_id, transport=transport, error=repr(exc)),
            exc_info=exc,
        )


class _Wait:
    """One delivery waiting for its destination's turn."""

    __slots__ = ("slow", "timer")

    def __init__(self) -> None:
        self.slow = False
        self.timer: asyncio.TimerHandle | None = None
