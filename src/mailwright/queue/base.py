"""The queue's contract: a small storage interface the rest of mailwright talks to.

The queue stores and knows nothing about *when* to retry (delivery/schedule.py
decides that) nor about how to deliver (delivery/ does).  SQLite is the embedded
default (queue/sqlite.py); a PostgreSQL store for several nodes sharing one queue
must fit this same Protocol without any change to server/ or delivery/.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from mailwright.model import Address, Target


class RecipientState(enum.StrEnum):
    """Where one recipient stands.  QUEUED, DEFERRED and BOUNCING are pending: the
    message and its body stay in the queue while any recipient is pending."""

    QUEUED = "queued"  # waiting for its first attempt
    DEFERRED = "deferred"  # an attempt failed temporarily; waits for next_attempt
    DELIVERED = "delivered"  # final
    BOUNCED = "bounced"  # final: failed permanently or expired; a DSN was made
    #: Failed for good (permanently, or expired), but the DSN could not be made yet:
    #: it is tried again at next_attempt.  Never delivered to again.  ``last_reply`` is
    #: the reply it failed with (5xx: refused for good; anything else: it expired).
    BOUNCING = "bouncing"


@dataclass(frozen=True, slots=True)
class QueuedRecipient:
    queue_id: str
    index: int  # stable within the message: 0, 1, 2 ... in enqueue order
    target: Target
    state: RecipientState
    attempts: int  # delivery attempts made; retrying a bounce is not one
    next_attempt: float  # unix time
    last_reply: str | None  # the last reply text, e.g. "451 4.3.0 try later"


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    queue_id: str
    sender: Address | None  # None: the null reverse-path <> (a bounce)
    received_at: float  # unix time of enqueue
    size: int  # octets of the stored body
    recipients: tuple[QueuedRecipient, ...]


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """The outcome of one delivery attempt for one recipient, or of its bounce.

    ``state`` is DELIVERED or BOUNCED (final), DEFERRED (then ``next_attempt``
    says when to try again) or BOUNCING (failed for good, its DSN not made yet:
    ``next_attempt`` says when to try making it again).
    """

    state: RecipientState
    reply: str
    next_attempt: float = 0.0


class BodySpool(Protocol):
    """A message body being received: memory first, a file once it grows.

    Writing never fsyncs; ``QueueStore.enqueue`` makes it durable.  A spool that
    is not enqueued must be ``discard()``-ed, which removes any file it made.
    """

    def write(self, data: bytes) -> None: ...

    @property
    def size(self) -> int: ...

    def discard(self) -> None: ...


class QueueStore(Protocol):
    """Durable storage of accepted messages and the state of each recipient.

    Every method that touches storage is a coroutine; implementations run their
    blocking I/O (SQLite, fsync) off the event loop.
    """

    async def open(self) -> None:
        """Create or open the storage; release claims left by a crash (they are due again)."""

    async def close(self) -> None: ...

    def new_spool(self) -> BodySpool:
        """A spool to stream one body into, before enqueue."""

    async def enqueue(
        self,
        sender: Address | None,
        targets: Sequence[Target],
        body: BodySpool,
    ) -> str:
        """Store the message durably and return its queue id.

        Returns only once the message and every target are on disk (fsync);
        implementations batch concurrent calls into one commit (group commit).
        Raises StorageError when the message could not be stored; then nothing
        of it is visible in the queue.
        """

    async def claim_due(self, now: float, limit: int) -> list[QueuedMessage]:
        """Claim up to ``limit`` messages with recipients due at ``now``.

        Only the due, pending recipients (QUEUED, DEFERRED, BOUNCING) are in each
        returned message; a BOUNCING one is there for its bounce to be made, not
        to be delivered.  The claim is a lease: claimed recipients are not
        returned again until a result is recorded for them or the lease lapses
        (a crash mid-delivery makes them due again: at-least-once delivery).
        """

    async def record_result(self, queue_id: str, index: int, result: RecipientResult) -> None:
        """Record one attempt's outcome (durably) and end the claim on that recipient.

        ``attempts`` counts delivery attempts: it grows by one for a result
        recorded on a QUEUED or DEFERRED recipient, not for one on a BOUNCING
        recipient (the bounce was retried, not the delivery).  A result for a
        recipient that is no longer pending is ignored.  When every recipient
        of the message is final (DELIVERED or BOUNCED), the message and its body
        are removed.

        Raises StorageError when the result could not be recorded; the
        recipient then stays claimed until the lease lapses, and the caller may
        simply record it again.
        """

    def open_body(self, queue_id: str) -> BinaryIO:
        """A binary file object positioned at the start of the stored body.

        Blocking; call it from a worker thread.
        """

    async def list(self) -> list[QueuedMessage]:
        """Every message still in the queue, with all its recipients."""

    async def get(self, queue_id: str) -> QueuedMessage | None: ...

    async def remove(self, queue_id: str) -> bool:
        """Delete a message and its body; False when there was no such message."""

    async def retry_now(self, queue_id: str | None = None) -> int:
        """Make pending recipients (of one message, or all) due now; returns how many.

        A BOUNCING recipient's bounce is then tried again now.
        """
