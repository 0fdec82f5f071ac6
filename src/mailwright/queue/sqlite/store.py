"""The embedded queue: SQLite in WAL mode under data_dir, with group commit.

``SqliteQueueStore`` is the facade; the work is done by its parts:

- ``writer.Writer``: the one thread that owns the SQLite connection and runs
  every job, many per commit (group commit); ``writer.JobRunner`` is the event
  loop's side of it;
- ``bodies.Bodies``: spools, ``enqueue`` (durable before it returns), and
  reading bodies back; ``claims.Claims``: claims (leases) and attempt results;
  ``admin.Admin``: list, get, retry, remove, the quarantine;
- ``database.Database``: the connections and the lock files of the role
  (``locks``); ``checkpoint.Checkpointer``: the server's WAL checkpoints;
  ``schema``: the tables and their upgrade; ``recovery``: the server's
  start-up clean-up after a crash; ``ids``: queue ids; ``files``: the layout
  of data_dir and the one safe way to open a file in it.

Several processes.  Three roles open a data_dir.  ``server``: the one server
process; it takes ``queue.lock``, cleans the spool, releases leases and
quarantines damaged messages at open.  ``acceptor``: a process that only
receives mail (one per core, sharing the listening port with SO_REUSEPORT)
for the server that holds ``queue.lock``; it enqueues into the same database
and spool.  ``admin``: ``mailwright queue ...`` while the server runs.  Only
the server role cleans or recovers anything at open, so acceptor and admin
stores never disturb deliveries or receptions in flight.  WAL lets readers
run beside the one writer; write transactions of all processes take turns on
``queue.write-lock`` (see ``locks.WriteLock``), and ``busy_timeout`` covers
the rest of SQLite's locking (checkpoints, a process without that lock).
Queue ids carry the process id, so processes never make the same id (see
``ids.QueueIdGenerator``).
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import BinaryIO, Literal

from mailwright.errors import StorageError
from mailwright.model import NO_OPTIONS, Address, MailOptions
from mailwright.queue.base import (
    Attempt,
    BodyReader,
    BodySpool,
    QueuedMessage,
    QueueStats,
    RecipientResult,
    Target,
)
from mailwright.queue.spool import SpillingSpool
from mailwright.queue.sqlite import recovery, schema
from mailwright.queue.sqlite.admin import Admin
from mailwright.queue.sqlite.bodies import Bodies
from mailwright.queue.sqlite.checkpoint import Checkpointer
from mailwright.queue.sqlite.claims import Claims
from mailwright.queue.sqlite.database import Database
from mailwright.queue.sqlite.files import QueueLayout
from mailwright.queue.sqlite.ids import QueueIdGenerator
from mailwright.queue.sqlite.locks import WriteLock
from mailwright.queue.sqlite.writer import CommitStats, Effects, Job, JobRunner, Writer

#: Bodies up to this size are kept in memory while received and stored as a BLOB.
DEFAULT_MEMORY_SPOOL_LIMIT = 1024 * 1024
#: Bodies from this size for one local recipient are stored as their Maildir copy
#: (write once, see bodies.py); smaller ones as a BLOB.  ``[queue] write_once_from``
#: sets it for the server (64 KiB there, measured in docs/performance.md); a store
#: made directly (tests, tools) writes every such body once.
DEFAULT_WRITE_ONCE_FROM = 0
#: How long a claim protects a recipient from being claimed again (a delivery
#: attempt that takes longer is repeated: at-least-once).
DEFAULT_LEASE_SECONDS = 900.0
#: How long SQLite waits for a lock held by another connection.  Write transactions
#: of mailwright processes wait for each other on ``queue.write-lock`` instead (no
#: time limit: a holder that dies releases it); this bounds the rest (checkpoints,
#: recovery of a crashed writer's WAL, a process that does not take that lock).
DEFAULT_BUSY_TIMEOUT = 30.0
#: Most jobs run in one transaction (one commit, one fsync).
DEFAULT_MAX_BATCH = 1000
#: Threads that fsync large spool files, so the writer thread never waits on them.
DEFAULT_SYNC_THREADS = 4
#: Threads that open and read bodies for the event loop (``read_body``).
DEFAULT_READ_THREADS = 4

#: ``server`` owns the queue, ``acceptor`` only enqueues for it, ``admin`` inspects and edits.
StoreRole = Literal["server", "acceptor", "admin"]
_ROLES: tuple[StoreRole, ...] = ("server", "acceptor", "admin")


class SqliteQueueStore:
    """A ``QueueStore`` (queue/base.py) in SQLite: the embedded default, no server needed.

    ``role="server"`` is for the one mailwright server of this data_dir: it
    takes ``queue.lock`` (a second server fails to open), removes unfinished
    spool files, releases the claims of a previous run and moves damaged
    messages aside.  ``role="acceptor"`` is for a process that only receives
    mail for that server (several share its listening port with
    SO_REUSEPORT): it requires an existing queue, does not take
    ``queue.lock`` and changes nothing at open; it calls ``new_spool`` and
    ``enqueue``.  Acceptors must stop before the server of their data_dir
    (re)starts: that open removes unfinished spool files and unreferenced ones,
    and an acceptor's body in flight is both (see ``new_spool``).
    ``role="admin"`` is for ``mailwright queue ...`` in another process: like
    an acceptor it changes nothing at open and requires an existing queue.
    Every role's write transactions take turns on ``queue.write-lock``.

    ``clock`` gives ``received_at`` (and nothing else: the caller passes ``now``
    to ``claim_due``).  ``commit_stats`` counts commits and the jobs they held.
    ``queue_ids``: stores of one process that enqueue into one data_dir must
    share one generator (see ``ids.QueueIdGenerator``); by default a store
    makes its own.  ``write_once_from``: a body of at least this many octets
    (and up to ``memory_spool_limit``) for one local recipient is stored as
    that recipient's whole Maildir copy, for local delivery to link
    (``bodies``); None: never.  ``use_syncfs`` chooses how such files are
    synced (``writer``).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        role: StoreRole = "server",
        memory_spool_limit: int = DEFAULT_MEMORY_SPOOL_LIMIT,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        max_batch: int = DEFAULT_MAX_BATCH,
        sync_threads: int = DEFAULT_SYNC_THREADS,
        read_threads: int = DEFAULT_READ_THREADS,
        clock: Callable[[], float] = time.time,
        queue_ids: QueueIdGenerator | None = None,
        use_syncfs: bool | None = None,
        write_once_from: int | None = DEFAULT_WRITE_ONCE_FROM,
    ) -> None:
        if role not in _ROLES:
            raise ValueError(f"role must be one of {', '.join(_ROLES)}, not {role!r}")
        if memory_spool_limit < 0:
            raise ValueError(f"memory_spool_limit must not be negative: {memory_spool_limit}")
        if lease_seconds < 0:
            raise ValueError(f"lease_seconds must not be negative: {lease_seconds}")
        if max_batch < 1 or sync_threads < 1 or read_threads < 1:
            raise ValueError("max_batch, sync_threads and read_threads must be at least 1")
        self._layout = QueueLayout(Path(data_dir))
        self._role: StoreRole = role
        self._max_batch = max_batch
        self._clock = clock
        self._use_syncfs = use_syncfs
        self._stats = CommitStats()
        self._jobs = JobRunner()
        self._checkpointer: Checkpointer | None = None
        self._database = Database(
            self._layout,
            server=role == "server",
            acceptor=role == "acceptor",
            busy_timeout=busy_timeout,
        )
        self._bodies = Bodies(
            layout=self._layout,
            database=self._database,
            jobs=self._jobs,
            queue_ids=QueueIdGenerator() if queue_ids is None else queue_ids,
            clock=clock,
            memory_spool_limit=memory_spool_limit,
            sync_threads=sync_threads,
            read_threads=read_threads,
            write_once_from=write_once_from,
        )
        self._claims = Claims(self._layout, self._jobs, lease_seconds)
        self._admin = Admin(self._layout, self._jobs)

    @property
    def data_dir(self) -> Path:
        return self._layout.data_dir

    @property
    def role(self) -> StoreRole:
        return self._role

    @property
    def commit_stats(self) -> CommitStats:
        """Commits so far and the jobs they held; ``jobs / commits`` is the batching factor."""
        return self._stats

    # ------------------------------------------------------------ open / close

    async def open(self) -> None:
        """Open (creating it for the server role) the queue; the server role also recovers.

        Raises StorageError when the queue cannot be opened, when another
        server holds it, or (acceptor and admin roles) when there is no queue
        in data_dir.
        """
        if self._jobs.writer is not None:
            raise StorageError("the queue store is already open")
        writer = Writer(
            connect=self._database.connect,
            disconnect=self._database.disconnect,
            spool_dir=self._layout.spool_dir,
            wal_path=self._layout.wal,
            write_lock=self._database.write_lock,
            use_syncfs=self._use_syncfs,
            on_clean_close=(
                functools.partial(recovery.mark_closed_cleanly, self._layout)
                if self._role == "server"
                else None
            ),
            max_batch=self._max_batch,
            stats=self._stats,
        )
        try:
            await asyncio.wrap_future(writer.start())
            job = Job(self._prepare)
            writer.submit(job)
            await asyncio.wrap_future(job.future)
        except BaseException as exc:
            await asyncio.wrap_future(writer.stop())
            if isinstance(exc, sqlite3.Error | OSError):
                raise StorageError(f"cannot open the queue in {self.data_dir}: {exc}") from exc
            raise
        self._jobs.writer = writer
        if self._role == "server":
            self._checkpointer = Checkpointer(
                self._database.checkpoint_connection,
                WriteLock(self._layout.write_lock),
                self._layout.database,
            )
            self._checkpointer.start()
        self._bodies.start()

    def _prepare(self, connection: sqlite3.Connection, effects: Effects) -> None:
        """The open's job in the writer thread: the schema, then the server's recovery."""
        schema.prepare(connection, self.data_dir)
        if self._role == "server":
            recovery.recover(connection, effects, self._layout, self._clock)

    async def close(self) -> None:
        """Finish the submitted work and close.  Claims stay: the next server open releases them."""
        writer, self._jobs.writer = self._jobs.writer, None
        if writer is None:
            return
        await asyncio.wrap_future(writer.stop())
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            await asyncio.to_thread(checkpointer.stop)
        self._bodies.stop()
        self._database.close_readers()

    # ------------------------------------------------------------ receiving

    def new_spool(self, local_prefix: bytes = b"") -> SpillingSpool:
        """A spool: up to ``memory_spool_limit`` octets in memory, then a file in spool/tmp.

        spool/tmp is shared by the server and its acceptors.  File names come
        from mkstemp (created exclusively, so never shared), and ``enqueue``
        renames a file to spool/<queue id>, unique across processes.  Only the
        server role removes files there, and only at its own open
        (``recovery``), which comes before acceptors start; afterwards the
        server deletes only the spool file of a message it deletes.  A server
        that (re)started while acceptors ran would remove their files in
        flight: in spool/tmp (that enqueue then fails, nothing acknowledged)
        and, worse, a file already renamed into spool/ whose row is not yet
        committed (it would be acknowledged without its body).  Hence
        acceptors stop before their server restarts.

        ``local_prefix`` (base.py): a body that spills to a file starts the file
        with it, and that file becomes the message's Maildir copy (write once).
        """
        return self._bodies.new_spool(local_prefix)

    async def enqueue(
        self,
        sender: Address | None,
        targets: Sequence[Target],
        body: BodySpool,
        options: MailOptions = NO_OPTIONS,
    ) -> str:
        """Store the message durably (one group commit) and return its queue id.

        ``body`` is any BodySpool (queue/base.py); the store owns it from now
        on.  A spool file is renamed into spool/, so it must be on the file
        system of data_dir (``new_spool`` makes one there).  Raises
        StorageError, with nothing of the message left visible or on disk,
        when it cannot be stored.  If the caller is cancelled while the commit
        is under way the message may still be stored: it was never
        acknowledged, so at worst the client sends it again.
        """
        return await self._bodies.enqueue(sender, targets, body, options)

    # ------------------------------------------------------------ delivering

    async def claim_due(self, now: float, limit: int) -> list[QueuedMessage]:
        """Claim up to ``limit`` messages with recipients due at ``now``, earliest due first.

        Each claimed recipient is leased until ``now + lease_seconds``.
        """
        return await self._claims.claim_due(now, limit)

    async def record_result(self, queue_id: str, index: int, result: RecipientResult) -> None:
        """Record one attempt (attempts + 1 unless it was a bounce's retry), end the claim;
        remove the message once all are final.

        A result for a recipient that is already final, or for a message that
        was removed meanwhile (``mailwright queue delete``), is ignored.
        """
        await self._claims.record_result(queue_id, index, result)

    async def mark_delay_reported(self, queue_id: str, indexes: Sequence[int]) -> None:
        """Set ``delay_reported`` of these recipients, in a commit of its own kind: fsynced
        (group commit), so that no crash ever makes a second "delayed" report."""
        await self._claims.mark_delay_reported(queue_id, indexes)

    def read_body(self, queue_id: str) -> AbstractAsyncContextManager[BodyReader]:
        """The stored body for the event loop: opened and read on the store's read pool
        (a BLOB is fetched whole when opened, then read from memory); see ``bodies``."""
        return self._bodies.read_body(queue_id)

    def open_body(self, queue_id: str) -> BinaryIO:
        """The stored body from its start: BytesIO for a BLOB, an open file for a spool file.

        Blocking, for worker threads only (RuntimeError on an event loop or in
        the writer thread), but never behind the writer thread: a SELECT on
        this thread's own read-only connection (WAL readers do not wait for
        commits).  Raises StorageError when the message or its spool file is gone.
        """
        return self._bodies.open_body(queue_id)

    # ------------------------------------------------------------ administration

    async def get(self, queue_id: str) -> QueuedMessage | None:
        """One message with all its recipients, or None."""
        return await self._admin.get(queue_id)

    async def remove(self, queue_id: str) -> bool:
        """Delete a message and its body; False when there was no such message."""
        return await self._admin.remove(queue_id)

    async def retry_now(self, queue_id: str | None = None) -> int:
        """Make every pending recipient (of one message, or all) due now; returns how many.

        That includes the bounce of a BOUNCING recipient.  Claims are left
        alone: a recipient in flight keeps its lease.
        """
        return await self._admin.retry_now(queue_id)

    async def retry_domain(self, domain: str) -> int:
        """Make the pending recipients at ``domain`` due now; returns how many."""
        return await self._admin.retry_domain(domain)

    async def hold(self, queue_id: str) -> int | None:
        """QUEUED and DEFERRED recipients not being delivered now go on hold (how many)."""
        return await self._admin.hold(queue_id)

    async def release(self, queue_id: str) -> int | None:
        """Held recipients back to QUEUED or DEFERRED, on their schedule (how many)."""
        return await self._admin.release(queue_id)

    async def page(
        self, *, state: str | None, domain: str | None, limit: int, after: str | None
    ) -> list[QueuedMessage]:
        """Messages with a recipient in ``state`` at ``domain``, after ``after``, oldest first."""
        return await self._admin.page(state=state, domain=domain, limit=limit, after=after)

    async def history(self, queue_id: str) -> list[Attempt]:
        """The delivery attempts of a message still in the queue, oldest first."""
        return await self._admin.history(queue_id)

    async def stats(self) -> QueueStats:
        """Messages by state (held, deferred, queued) and the oldest arrival."""
        return await self._admin.stats()

    async def check_writable(self) -> None:
        """Take the write lock once (``/readyz``); StorageError when it cannot."""
        await self._admin.check_writable()

    async def quarantined(self) -> list[tuple[str, float, str]]:
        """Messages moved aside at start-up: (queue id, when, why), oldest first."""
        return await self._admin.quarantined()

    # Last, so that the name ``list`` in annotations above means the builtin.
    async def list(self) -> list[QueuedMessage]:
        """Every message still in the queue, oldest first, with all its recipients."""
        return await self._admin.list()
