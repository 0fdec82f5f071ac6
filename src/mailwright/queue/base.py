"""The queue's contract: a small storage interface the rest of mailwright talks to.

The queue stores and knows nothing about *when* to retry (delivery/schedule.py
decides that) nor about how to deliver (delivery/ does).  SQLite is the embedded
default (queue/sqlite/); a PostgreSQL store for several nodes sharing one queue
must fit this same Protocol without any change to server/ or delivery/, and
pass the same contract tests (tests/queue/test_contract.py).

The event loop never blocks on the queue: every method that touches storage is
a coroutine, and a stored body is read through ``read_body``, whose every read
is awaited.  The one blocking method, ``open_body``, is for callers that
already run in a worker thread.
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from mailwright.model import NO_OPTIONS, Address, MailOptions, Target
from mailwright.protocol.reply import Reply

__all__ = [
    "BODY_READ_SIZE",
    "Attempt",
    "BodyReader",
    "BodySpool",
    "QueueStats",
    "QueueStore",
    "QueuedMessage",
    "QueuedRecipient",
    "RecipientResult",
    "RecipientState",
    "Target",
    "local_copy_prefix",
]


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
    #: Put aside by the operator (``queue hold``): never claimed, so never delivered and
    #: never expired, until released back to QUEUED (no attempt yet) or DEFERRED.
    HELD = "held"


@dataclass(frozen=True, slots=True)
class QueuedRecipient:
    queue_id: str
    index: int  # stable within the message: 0, 1, 2 ... in enqueue order
    target: Target
    state: RecipientState
    attempts: int  # delivery attempts made; retrying a bounce is not one
    next_attempt: float  # unix time
    last_reply: Reply | None  # the reply of the last attempt (or of the failure it bounces for)
    delay_reported: bool = False  # a "delayed" DSN was made for it (RFC 3464 2.3.3)


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    queue_id: str
    sender: Address | None  # None: the null reverse-path <> (a bounce)
    received_at: float  # unix time of enqueue
    size: int  # octets of the stored body
    recipients: tuple[QueuedRecipient, ...]
    options: MailOptions = NO_OPTIONS  # what MAIL FROM asked (DSN RET/ENVID, BODY)
    #: A file of the store that already is the whole Maildir copy for the message's one
    #: recipient, a local one: ``local_copy_prefix`` then the body.  Local delivery links it
    #: into the Maildir instead of writing a copy (write once); None: write a copy.
    local_copy: str | None = None


def local_copy_prefix(sender: Address | None, address: Address) -> bytes:
    """The trace lines a local copy starts with: Return-Path (RFC 5321 4.4: added at final
    delivery only, so never to a copy that is relayed) and Delivered-To (the mailbox it
    went to, which loop detection by mail readers and filters relies on)."""
    return_path = f"<{sender}>" if sender is not None else "<>"
    return f"Return-Path: {return_path}\r\nDelivered-To: {address}\r\n".encode()


@dataclass(frozen=True, slots=True)
class RecipientResult:
    """The outcome of one delivery attempt for one recipient, or of its bounce.

    ``state`` is DELIVERED or BOUNCED (final), DEFERRED (then ``next_attempt``
    says when to try again) or BOUNCING (failed for good, its DSN not made yet:
    ``next_attempt`` says when to try making it again).
    """

    state: RecipientState
    reply: Reply
    next_attempt: float = 0.0
    relay: str = ""  # the host that gave ``reply`` ("" when none did), for the history


@dataclass(frozen=True, slots=True)
class Attempt:
    """One delivery attempt of one recipient, as the history keeps it."""

    index: int  # the recipient's
    at: float  # unix time the result was recorded
    relay: str  # the host that answered, "" when none did (local delivery, no host reached)
    reply: Reply


@dataclass(frozen=True, slots=True)
class QueueStats:
    """What the metrics show of the queue: messages by state, and the oldest arrival.

    A message counts once, in the first of held, deferred, queued it has a
    recipient in (a BOUNCING recipient counts as deferred).
    """

    messages: dict[str, int]
    oldest_received_at: float | None


class BodySpool(Protocol):
    """A message body on its way into the queue: written by the receiver, stored by ``enqueue``.

    The receiver's side: ``write`` appends (memory first, a file once the body
    grows; never fsynced) and ``size`` counts.  A spool that is not enqueued
    must be ``discard()``-ed, which removes any file it made.

    The store's side, once ``enqueue`` has it: ``take_ownership`` first (from
    then on ``discard`` does nothing, so a receiver that gives up cannot pull
    the body from under a commit), then the body is either in memory
    (``on_disk`` false: ``take_bytes``) or in a file that ``seal`` makes
    durable and moves where the store keeps it; ``remove`` deletes whatever is
    left when the enqueue fails or is cancelled.

    Any store accepts any BodySpool: this is all a store may ask of one.  A
    store that keeps bodies in a file system seals the file into it (a rename:
    the same file system as the spool); one that keeps them elsewhere seals it
    to a name of its own and copies it from there.  ``QueueStore.new_spool``
    makes the spool a store prefers (queue/spool.py's ``SpillingSpool`` for
    SQLite).
    """

    #: Octets before the body in a file (``seal``); b"": none.  Not part of the body.
    prefix: bytes

    def write(self, data: bytes) -> None:
        """Append ``data``; StorageError (and the spool discarded) when the disk fails."""

    @property
    def size(self) -> int:
        """Octets written so far."""

    def discard(self) -> None:
        """Drop the body and any file; does nothing once a store took ownership."""

    def take_ownership(self) -> None:
        """Called by ``enqueue``; ValueError when the spool was discarded or enqueued already."""

    @property
    def on_disk(self) -> bool:
        """True once the body moved from memory to a file."""

    def take_bytes(self) -> bytes:
        """The body held in memory (``on_disk`` false), releasing it."""

    def seal(self, final_path: Path) -> None:
        """fsync and close the file (``on_disk`` true), then rename it to ``final_path``.

        Blocking: run it off the event loop.  The caller syncs the directory of
        ``final_path`` before it commits anything that names the file.
        """

    def remove(self) -> None:
        """Delete whatever of the body exists; for the store, when the enqueue failed."""


#: The pieces in which a ``BodyReader`` yields a body when iterated.
BODY_READ_SIZE = 64 * 1024


class BodyReader(Protocol):
    """A stored body opened for reading on the event loop (``QueueStore.read_body``).

    Every read is awaited, so a store can do its blocking I/O (a file, SQLite,
    a database server) off the event loop, or answer from memory.  It is an
    async iterable of bytes, which the SMTP client sends as it is.
    """

    async def read(self, size: int) -> bytes:
        """The next ``size`` octets (``size`` > 0): fewer only at the end, b"" after it.

        Raises StorageError when the body cannot be read.
        """

    def __aiter__(self) -> AsyncIterator[bytes]:
        """The rest of the body, in pieces of at most BODY_READ_SIZE octets."""


class QueueStore(Protocol):
    """Durable storage of accepted messages and the state of each recipient.

    Every method that touches storage is a coroutine (``read_body`` an async
    context manager); implementations run their blocking I/O (SQLite, fsync, a
    file) off the event loop.  ``open_body`` alone blocks, for worker threads.
    """

    async def open(self) -> None:
        """Create or open the storage; release claims left by a crash (they are due again)."""

    async def close(self) -> None: ...

    def new_spool(self, local_prefix: bytes = b"") -> BodySpool:
        """A spool to stream one body into, before enqueue.

        ``local_prefix``: the message has one recipient, a local one, and this is
        ``local_copy_prefix`` for it; a store that keeps such a message as its finished
        Maildir copy (write once) may start a file with it.  Others ignore it.
        """

    async def enqueue(
        self,
        sender: Address | None,
        targets: Sequence[Target],
        body: BodySpool,
        options: MailOptions = NO_OPTIONS,
    ) -> str:
        """Store the message durably, with ``options`` and each target's DSN parameters,
        and return its queue id.

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

    async def mark_delay_reported(self, queue_id: str, indexes: Sequence[int]) -> None:
        """Record durably (fsync) that a "delayed" report was made for these recipients:
        from then on their ``delay_reported`` is True, across restarts.

        delivery/results.py calls it before it queues the report, so that no
        crash ever makes a second one (at most once).  Recipients that are gone,
        or a message that is, are ignored.  Raises StorageError when it could
        not be recorded; then nothing was.
        """

    def read_body(self, queue_id: str) -> AbstractAsyncContextManager[BodyReader]:
        """The stored body, from its start, for a reader on the event loop::

            async with store.read_body(queue_id) as body:
                head = await body.read(64 * 1024)

        Neither opening nor reading blocks the event loop; the body is closed
        when the block ends.  Raises StorageError on entry when the message or
        its body is gone (or the store is closed).
        """

    def open_body(self, queue_id: str) -> BinaryIO:
        """The stored body as a blocking binary file, positioned at its start.

        Only for a caller that already runs in a worker thread: the Maildir
        writers of delivery/local.py read each body in their own threads and
        write it out there.  Never on the event loop (use ``read_body``); the
        SQLite store refuses it there with RuntimeError.  Raises StorageError
        when the message or its body is gone.
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

    async def retry_domain(self, domain: str) -> int:
        """Make the pending recipients at ``domain`` (any case) due now; returns how many."""

    async def hold(self, queue_id: str) -> int | None:
        """Put the QUEUED and DEFERRED recipients of a message on hold; returns how many,
        None when there is no such message.  A recipient being delivered (claimed) keeps
        its attempt and is not held; a BOUNCING one keeps its bounce."""

    async def release(self, queue_id: str) -> int | None:
        """Back from hold, on the schedule they had; returns how many, None: no message."""

    async def page(
        self, *, state: str | None, domain: str | None, limit: int, after: str | None
    ) -> builtins.list[QueuedMessage]:
        """Up to ``limit`` messages, oldest first, after the queue id ``after``, that have
        a recipient in ``state`` and at ``domain`` (when given), with all recipients."""

    async def history(self, queue_id: str) -> builtins.list[Attempt]:
        """Every delivery attempt recorded for the message still in the queue, oldest first."""

    async def stats(self) -> QueueStats: ...

    async def check_writable(self) -> None:
        """Take and release the queue's write lock; StorageError when that fails."""
