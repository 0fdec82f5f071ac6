"""Group commit for PostgreSQL: the messages that finish together share one commit.

Each enqueue of a body held in memory becomes a ``NewMessage`` handed to the
``GroupCommitter``; its one task takes every message waiting, inserts them
all in one transaction and commits once, with ``synchronous_commit`` on: the
commit returns only once its WAL is flushed (on the primary, and on the
synchronous standbys the operator configured), so the 250 after DATA is
never sent for a message a crash could lose.  While one commit is under way
the next batch gathers, as in the SQLite store's writer thread.

The same transaction NOTIFYs ``NEW_MAIL_CHANNEL``: the delivery workers of
every node wake (notifications are sent at commit, and one per transaction).

``Batcher`` is the loop without the SQL; delivery results are batched by it
too (claims.ResultBatcher).
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import psycopg

from mailwright.errors import QueueUnavailable, StorageError
from mailwright.queue.postgresql.connect import PoolOf, pooled

logger = logging.getLogger("mailwright.queue.postgresql")

#: The LISTEN/NOTIFY channel of new mail (and of ``retry``): its payload is the sender node.
NEW_MAIL_CHANNEL = "mailwright_new_mail"

INSERT_MESSAGE = (
    "INSERT INTO messages (queue_id, sender_local, sender_domain, received_at, size, chunks,"
    " ret, envid, body_type, smtputf8, accepted_by)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
INSERT_RECIPIENT = (
    "INSERT INTO recipients (queue_id, idx, address_local, address_domain, original_local,"
    " original_domain, local, state, next_attempt, folder, notify, orcpt)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, 'queued', %s, %s, %s, %s)"
)
INSERT_CHUNK = "INSERT INTO body_chunks (queue_id, seq, data) VALUES (%s, %s, %s)"

J = TypeVar("J", bound="Job")


@dataclass(eq=False, slots=True)
class NewMessage:
    """The rows of one message to insert: ``message`` (INSERT_MESSAGE's values), its
    recipients (INSERT_RECIPIENT's) and its body in CHUNK_SIZE pieces."""

    message: tuple[Any, ...]
    recipients: list[tuple[Any, ...]]
    chunks: list[bytes]
    future: asyncio.Future[str] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    @property
    def queue_id(self) -> str:
        return str(self.message[0])

    def outcome(self) -> str:
        return self.queue_id


@dataclass(slots=True)
class CommitStats:
    """Instrumentation: how well group commit batches (read it in tests and benchmarks)."""

    commits: int = 0
    jobs: int = 0


async def insert_messages(
    connection: psycopg.AsyncConnection[Any], messages: Sequence[NewMessage], node: str
) -> None:
    """Insert ``messages`` in the current transaction (synchronous_commit on), and notify
    the nodes at its commit."""
    async with connection.cursor() as cursor:
        await cursor.executemany(INSERT_MESSAGE, [m.message for m in messages])
        await cursor.executemany(INSERT_RECIPIENT, [r for m in messages for r in m.recipients])
        chunks = [(m.queue_id, seq, data) for m in messages for seq, data in enumerate(m.chunks)]
        if chunks:
            await cursor.executemany(INSERT_CHUNK, chunks)
    await connection.execute("SELECT pg_notify(%s, %s)", (NEW_MAIL_CHANNEL, node))


class Job(Protocol):
    """What a ``Batcher`` commits: the caller waits on ``future`` for ``outcome()``."""

    @property
    def future(self) -> asyncio.Future[Any]: ...

    def outcome(self) -> Any: ...


class Batcher(ABC, Generic[J]):
    """One task that hands every waiting job to ``_commit`` as one batch, one transaction.

    While one batch commits the next gathers, so callers that finish together
    pay for one commit between them.  ``_commit`` settles each job's future.
    """

    task_name = "mailwright-queue-commits"

    def __init__(self, pool: PoolOf, *, max_batch: int, stats: CommitStats) -> None:
        self._pool = pool
        self._max_batch = max_batch
        self._stats = stats
        self._waiting: deque[J] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._closing = False
        self._task = asyncio.create_task(self._run(), name=self.task_name)

    async def stop(self) -> None:
        """Commit what was submitted, then end the task."""
        task, self._task = self._task, None
        self._closing = True
        self._wakeup.set()
        if task is not None:
            await task

    async def submit(self, job: J) -> Any:
        """Queue ``job`` for the next commit; its outcome once that commit is durable."""
        if self._task is None or self._closing:
            raise StorageError("the queue store is closed")
        self._waiting.append(job)
        self._wakeup.set()
        return await job.future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._waiting:
                batch: list[J] = []
                while self._waiting and len(batch) < self._max_batch:
                    job = self._waiting.popleft()
                    if not job.future.done():  # its caller was cancelled before: skip
                        batch.append(job)
                if batch:
                    await self._commit(batch)
            if self._closing:
                return

    def _committed(self, batch: list[J]) -> None:
        self._stats.commits += 1
        self._stats.jobs += len(batch)
        settle(batch, None)

    @abstractmethod
    async def _commit(self, batch: list[J]) -> None:
        """One transaction for ``batch``; settle every job (``_committed`` or ``settle``)."""


class GroupCommitter(Batcher[NewMessage]):
    """New messages in memory, inserted together with synchronous_commit on (see the module)."""

    def __init__(self, pool: PoolOf, node: str, *, max_batch: int, stats: CommitStats) -> None:
        super().__init__(pool, max_batch=max_batch, stats=stats)
        self._node = node

    async def store(self, message: NewMessage) -> str:
        """Queue ``message`` for the next commit; its queue id once that commit is durable."""
        return str(await self.submit(message))

    async def _commit(self, batch: list[NewMessage]) -> None:
        try:
            async with pooled(
                self._pool, "cannot store the message", synchronous_commit=True
            ) as connection:
                await insert_messages(connection, batch, self._node)
        except QueueUnavailable as exc:
            settle(batch, exc)
        except StorageError as exc:
            if len(batch) == 1:
                settle(batch, exc)
                return
            # One message the database refuses (a queue id taken) must not fail its
            # neighbours: each is tried again in a commit of its own.
            logger.warning("queue: a batch of %d failed (%s); one commit each", len(batch), exc)
            for message in batch:
                await self._commit([message])
        except Exception as exc:  # a bug: fail the batch, keep the committer running
            logger.exception("queue commit: unexpected error")
            settle(batch, StorageError(f"cannot store the message: {exc}"))
        else:
            self._committed(batch)


def settle(batch: Sequence[Job], error: BaseException | None) -> None:
    """Tell each caller of ``batch`` its outcome, or ``error``."""
    for job in batch:
        if job.future.done():
            continue  # cancelled meanwhile: committed or not, nobody was told
        if error is None:
            job.future.set_result(job.outcome())
        else:
            job.future.set_exception(error)
