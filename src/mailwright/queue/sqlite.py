"""The embedded queue: SQLite in WAL mode under data_dir, with group commit.

Layout under ``data_dir``::

    queue.sqlite3 (+ -wal, -shm)   messages, recipients, quarantine
    queue.lock                     held (flock) by the one server using this queue
    queue.write-lock               flock taken around every write transaction, all roles
    queue.acceptors                held shared by each acceptor; a server will not recover under it
    spool/<queue_id>               bodies larger than the memory limit
    spool/tmp/                     bodies being received (never acknowledged)
    spool/corrupt/                 spool files found damaged at start-up

Durability.  ``enqueue`` returns only after the commit that holds the message
has been fsynced (``synchronous=FULL``: the WAL is synced at every commit), so
the server may answer 250 to DATA (RFC 5321 4.1.1.4, 6.1: once accepted, a
message must not be lost).  A spooled body is fsynced and renamed into
``spool/`` and that directory synced *before* the commit that references it.

Group commit.  One writer thread owns the SQLite connection and runs every
job; each time it wakes it takes every job waiting (enqueues, claims, results
...), runs each in its own savepoint inside one transaction, and commits once:
many concurrent messages share one fsync, so durability does not cost
throughput.  The event loop only submits jobs and awaits their futures.

Crash safety (kill -9 at any moment).  Nothing is acknowledged before its
commit.  A spool file without a committed row is removed at start-up; a row
whose spool file is missing or damaged is moved aside to ``quarantine`` with a
warning, and the rest of the queue is delivered.  Claims (leases) of the
previous run are released at start-up, so recipients that were in flight are
delivered again: at-least-once, duplicates only for deliveries in flight.

Several processes.  Three roles open a data_dir.  ``server``: the one server
process; it takes ``queue.lock``, cleans the spool, releases leases and
quarantines damaged messages at open.  ``acceptor``: a process that only
receives mail (one per core, sharing the listening port with SO_REUSEPORT)
for the server that holds ``queue.lock``; it enqueues into the same database
and spool.  ``admin``: ``mailwright queue ...`` while the server runs.  Only
the server role cleans or recovers anything at open, so acceptor and admin
stores never disturb deliveries or receptions in flight.  WAL lets readers
run beside the one writer; write transactions of all processes take turns on
``queue.write-lock`` (see ``_WriteLock``), and ``busy_timeout`` covers the
rest of SQLite's locking (checkpoints, a process without that lock).  Queue
ids carry the process id, so processes never make the same id (see
``_QueueIdGenerator``).

Files.  Whoever owns data_dir controls every name in it.  Every file the
store opens there itself is opened with O_NOFOLLOW and checked with fstat to
be a regular file (``_open_regular_file``): a link planted in place of a lock
file or a spool file is refused, never followed.  Nothing is chowned, and root
refuses a data_dir that belongs to another user (``_refuse_foreign_data_dir``;
``mailwright queue`` first becomes that user), so whatever the store and SQLite
create has the owner of data_dir.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import fcntl
import io
import json
import logging
import os
import secrets
import sqlite3
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, Generic, Literal, TypeVar
from urllib.parse import quote

from mailwright.errors import StorageError
from mailwright.model import Address
from mailwright.queue.base import (
    BodySpool,
    QueuedMessage,
    QueuedRecipient,
    RecipientResult,
    RecipientState,
    Target,
)
from mailwright.queue.spool import (
    SPOOL_DIRECTORY_MODE,
    SpillingSpool,
    fsync_directory,
    make_directories,
)

__all__ = [
    "DEFAULT_BUSY_TIMEOUT",
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MEMORY_SPOOL_LIMIT",
    "DEFAULT_SYNC_THREADS",
    "SqliteQueueStore",
    "StoreRole",
]

logger = logging.getLogger(__name__)

#: Bodies up to this size are kept in memory while received and stored as a BLOB.
DEFAULT_MEMORY_SPOOL_LIMIT = 1024 * 1024
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

#: ``server`` owns the queue, ``acceptor`` only enqueues for it, ``admin`` inspects and edits.
StoreRole = Literal["server", "acceptor", "admin"]
_ROLES: tuple[StoreRole, ...] = ("server", "acceptor", "admin")
T = TypeVar("T")

DATABASE_NAME = "queue.sqlite3"
LOCK_NAME = "queue.lock"
WRITE_LOCK_NAME = "queue.write-lock"
#: WAL pages after which a commit also checkpoints (SQLite's default is 1000, 4 MB).
#: An automatic checkpoint copies the WAL into the database and fsyncs it inside
#: the commit that crossed the mark, with the write lock held, so every process
#: waits for it: measured with 64 KiB messages, checkpoints took a quarter of
#: the receiving rate.  The server's _Checkpointer thread does the work instead;
#: this mark is only the safety net should it fall behind (64 MB of WAL).
WAL_AUTOCHECKPOINT_PAGES = 16384
#: How often the server's checkpointer copies the WAL into the database.
CHECKPOINT_INTERVAL = 0.5
#: WAL pages (16 MB) above which the checkpointer restarts the WAL from its beginning.
WAL_RESTART_PAGES = 4096
#: Held shared by every acceptor for its lifetime; see _no_acceptors_left.
ACCEPTORS_LOCK_NAME = "queue.acceptors"
SPOOL_DIR_NAME = "spool"
SPOOL_TMP_NAME = "tmp"
SPOOL_CORRUPT_NAME = "corrupt"
#: 2: the state 'bouncing' (failed for good, its DSN still to be made); an older
#: mailwright would not understand it, so it refuses the queue.
SCHEMA_VERSION = 2
#: Mode of the files the queue creates itself (the database, lock files): private.
PRIVATE_FILE_MODE = 0o600
#: Added to every open of a file in data_dir: a symbolic link planted there is refused,
#: never followed (it could name /etc/shadow), and a FIFO or terminal put in place of a
#: file neither blocks the open nor becomes our terminal; fstat then refuses it.
_SAFE_OPEN = os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK

_PENDING = (
    RecipientState.QUEUED.value,
    RecipientState.DEFERRED.value,
    RecipientState.BOUNCING.value,
)
_PENDING_SQL = "state IN ('queued', 'deferred', 'bouncing')"
_RECIPIENT_COLUMNS = (
    "queue_id, idx, address_local, address_domain, original_local, original_domain, "
    "local, state, attempts, next_attempt, last_reply"
)
_MESSAGE_COLUMNS = "queue_id, sender_local, sender_domain, received_at, size"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS messages (
    queue_id      TEXT PRIMARY KEY,
    sender_local  TEXT,             -- NULL for the null reverse-path <>
    sender_domain TEXT,
    received_at   REAL NOT NULL,
    size          INTEGER NOT NULL,
    spool_name    TEXT,             -- file in spool/ when the body is not in this row
    body          BLOB              -- last column: reading the others skips it
);
CREATE TABLE IF NOT EXISTS recipients (
    queue_id        TEXT NOT NULL,
    idx             INTEGER NOT NULL,
    address_local   TEXT NOT NULL,
    address_domain  TEXT NOT NULL,
    original_local  TEXT NOT NULL,
    original_domain TEXT NOT NULL,
    local           INTEGER NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt    REAL NOT NULL,
    last_reply      TEXT,
    lease_until     REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (queue_id, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS recipients_pending ON recipients (next_attempt) WHERE {_PENDING_SQL};
CREATE TABLE IF NOT EXISTS quarantine (
    queue_id       TEXT PRIMARY KEY,
    quarantined_at REAL NOT NULL,
    reason         TEXT NOT NULL,
    envelope       TEXT NOT NULL,   -- JSON: sender, recipients and their states
    spool_name     TEXT,            -- moved to spool/corrupt/
    body           BLOB
);
"""


# ====================================================================== queue ids

_BASE32 = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford's alphabet, lower case
_TIME_DIGITS = 11  # 55 bits of microseconds: until the year 3111
_TAG_DIGITS = 5  # 25 bits: the process id, then random bits
_PID_BITS = 22  # Linux process ids are below PID_MAX_LIMIT = 2**22
_RANDOM_BITS = 5 * _TAG_DIGITS - _PID_BITS  # 3


def _base32(value: int, digits: int) -> str:
    out = []
    for _ in range(digits):
        out.append(_BASE32[value & 31])
        value >>= 5
    return "".join(reversed(out))


class _QueueIdGenerator:
    """Queue ids: 16 characters, sortable by time, safe as file names on any file system.

    Eleven base32 digits of microseconds since the epoch, then five digits
    holding the process id (22 bits) and 3 random bits.  Ids must never repeat
    among the processes enqueueing into one data_dir (a server, its acceptors):
    an id names the message's spool file, and a second file of the same name
    would replace the first body.  Random bits alone only make that unlikely;
    (process id, microsecond) cannot repeat on a host, because the process id
    tells apart the processes alive at the same time and the microseconds are
    strictly increasing within a process.  That is why one generator serves
    every store of a process (``_QUEUE_IDS``): two stores of one process share
    the process id, so they must share the counter too.

    Limits: processes in different PID namespaces (containers) sharing a
    data_dir may have equal ids and then differ only by the random bits; and
    ids of different hosts may repeat (a SQLite queue belongs to one host).
    """

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            micros = max(time.time_ns() // 1000, self._last + 1)
            self._last = micros
        tag = (os.getpid() & ((1 << _PID_BITS) - 1)) << _RANDOM_BITS
        tag |= secrets.randbits(_RANDOM_BITS)
        return _base32(micros, _TIME_DIGITS) + _base32(tag, _TAG_DIGITS)

    def after_fork_in_child(self) -> None:
        """A fork may copy the lock held by a thread that the child does not have."""
        self._lock = threading.Lock()


#: The one generator of this process; see _QueueIdGenerator for why it is shared.
_QUEUE_IDS = _QueueIdGenerator()
os.register_at_fork(after_in_child=_QUEUE_IDS.after_fork_in_child)


# ====================================================================== the write lock


class _WriteLock:
    """An exclusive ``flock`` on ``queue.write-lock`` around every write transaction.

    Why: several processes write one queue (the server, its acceptors, the
    admin tool).  Without this lock a writer that finds the database locked
    waits in SQLite's busy handler, which sleeps with back-off (1, 2, 5, 10 ms
    ...) and polls, so it wakes long after the lock became free; two acceptor
    processes then made tiny commit batches and less throughput than one.  A
    blocked ``flock`` wakes as soon as the holder releases it: the processes
    take turns, and each gathers a larger batch of jobs while it waits
    (measured: two processes went from 895 to 1423 messages/s, commits
    balanced between them).

    It only schedules: SQLite's own locks still keep the database correct, so
    a process that does not take this lock (an older mailwright), a lock file
    replaced meanwhile or a descriptor shared across fork() costs throughput,
    never data.  ``flock`` rather than ``fcntl``/``lockf`` record locks: a flock
    belongs to the open file description, so two stores of one process
    exclude each other too, while record locks are per process.  Each writer
    opens its own descriptor (close-on-exec) and closes it with the store; a
    forked child must open its own store.  Read-only transactions do not take
    it (WAL readers never wait for the writer).

    No time limit: a writer waits as long as another process's transaction
    lasts.  The kernel releases the lock of a process that dies, so a crash
    never leaves it held; a process stopped mid-transaction (SIGSTOP) does
    hold up the others until it continues.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    def open(self) -> None:
        """Open the lock file, creating it private (0600) if missing (``_open_regular_file``).

        No chown: a store never runs as root on a data_dir of another user
        (``_refuse_foreign_data_dir``), so what it creates has the right owner.
        """
        if self._fd is not None:
            raise StorageError("the write lock is already open")
        self._fd = _open_regular_file(self._path, os.O_RDWR | os.O_CREAT)

    def acquire(self) -> None:
        """Wait until no other writer holds the lock, then hold it."""
        if self._fd is None:
            raise StorageError("the write lock is not open")
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the descriptor (which also releases a lock still held)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


# ====================================================================== the writer thread


@dataclass(slots=True)
class _Effects:
    """File-system work a job needs around the commit of its transaction."""

    sync_spool_dir: bool = False  # a spool file was renamed in: sync spool/ before COMMIT
    after_commit: list[Callable[[], None]] = field(default_factory=list)


@dataclass(eq=False, slots=True)
class _Job(Generic[T]):
    """One unit of work for the writer thread, run in its own savepoint.

    ``on_failure`` runs (in the writer thread) when the job failed, was
    cancelled before it started, or its transaction did not commit.
    """

    apply: Callable[[sqlite3.Connection, _Effects], T]
    writes: bool = True
    #: False for bookkeeping whose loss in an OS crash only repeats work (claims,
    #: attempt results): a batch of such jobs commits without fsync (WAL with
    #: synchronous=NORMAL still survives a crash of the process, kill -9 included).
    durable: bool = True
    on_failure: Callable[[], None] | None = None
    future: concurrent.futures.Future[T] = field(default_factory=concurrent.futures.Future)


@dataclass(slots=True)
class CommitStats:
    """Instrumentation: how well group commit batches (read it in tests and benchmarks)."""

    commits: int = 0  # write transactions committed (each one WAL fsync)
    jobs: int = 0  # jobs that were part of those commits


@dataclass(slots=True)
class _Outcome:
    """How a transaction ended for each job; settled once the write lock is released."""

    committed: list[tuple[_Job[Any], Any, _Effects]] = field(default_factory=list)
    failed: list[tuple[_Job[Any], BaseException]] = field(default_factory=list)


class _Writer:
    """The one thread that owns the SQLite connection and does every fsync of the queue."""

    def __init__(
        self,
        *,
        connect: Callable[[], sqlite3.Connection],
        disconnect: Callable[[sqlite3.Connection], None],
        spool_dir: Path,
        write_lock: _WriteLock,
        max_batch: int,
        stats: CommitStats,
    ) -> None:
        self._connect = connect
        self._disconnect = disconnect
        self._spool_dir = spool_dir
        self._write_lock = write_lock  # opened by connect, closed by disconnect
        self._max_batch = max_batch
        self._stats = stats
        self._sync = "FULL"  # the connection opens with synchronous=FULL
        self._jobs: deque[_Job[Any]] = deque()
        self._wakeup = threading.Condition()
        self._accepting = True
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._stopped: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, name="mailwright-queue-writer", daemon=True
        )

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def start(self) -> concurrent.futures.Future[None]:
        """Start the thread; the future resolves once the connection is open."""
        self._ready.set_running_or_notify_cancel()
        self._thread.start()
        return self._ready

    def submit(self, job: _Job[Any]) -> None:
        with self._wakeup:
            if not self._accepting:
                raise StorageError("the queue store is closed")
            self._jobs.append(job)
            self._wakeup.notify()

    def stop(self) -> concurrent.futures.Future[None]:
        """Finish the jobs already submitted, close the connection, end the thread."""
        with self._wakeup:
            self._accepting = False
            self._wakeup.notify()
        if not self._thread.is_alive() and not self._stopped.done():
            self._stopped.set_result(None)
        return self._stopped

    # ------------------------------------------------------------ in the thread

    def _run(self) -> None:
        try:
            connection = self._connect()
        except BaseException as exc:
            self._ready.set_exception(exc)
            with self._wakeup:
                self._accepting = False
            self._stopped.set_result(None)
            return
        self._ready.set_result(None)
        try:
            while True:
                with self._wakeup:
                    while not self._jobs and self._accepting:
                        self._wakeup.wait()
                    if not self._jobs:
                        break
                    batch = [
                        self._jobs.popleft() for _ in range(min(len(self._jobs), self._max_batch))
                    ]
                try:
                    self._execute(connection, batch)
                except Exception as exc:  # a bug: fail the batch, keep the queue running
                    logger.exception("queue writer: unexpected error")
                    with contextlib.suppress(sqlite3.Error):
                        if connection.in_transaction:
                            connection.execute("ROLLBACK")
                    self._fail([job for job in batch if not job.future.done()], exc)
        finally:
            try:
                self._disconnect(connection)
            finally:
                self._stopped.set_result(None)

    def _execute(self, connection: sqlite3.Connection, batch: list[_Job[Any]]) -> None:
        live: list[_Job[Any]] = []
        for job in batch:
            if job.future.set_running_or_notify_cancel():
                live.append(job)
            else:
                _run_quietly(job.on_failure)
        if not live:
            return
        writes = any(job.writes for job in live)
        if writes:
            try:
                self._write_lock.acquire()
            except (OSError, StorageError) as exc:
                self._fail(live, exc)
                return
            try:
                outcome = self._transaction(connection, live, writes=True)
            finally:
                # _transaction never returns or raises with its transaction open.
                self._write_lock.release()
        else:
            outcome = self._transaction(connection, live, writes=False)
        self._settle(outcome)

    def _transaction(
        self, connection: sqlite3.Connection, live: list[_Job[Any]], *, writes: bool
    ) -> _Outcome:
        """Run the jobs in one transaction, each in a savepoint, and end it: COMMIT or ROLLBACK.

        Touches no future and runs no clean-up: the caller settles the outcome
        after releasing the write lock, which is held no longer than the
        transaction itself.
        """
        sync = "FULL" if any(job.writes and job.durable for job in live) else "NORMAL"
        try:
            if writes and sync != self._sync:
                connection.execute(f"PRAGMA synchronous={sync}")
                self._sync = sync
            connection.execute("BEGIN IMMEDIATE" if writes else "BEGIN")
        except sqlite3.Error as exc:
            return _Outcome(failed=[(job, exc) for job in live])
        done: list[tuple[_Job[Any], Any, _Effects]] = []
        failed: list[tuple[_Job[Any], BaseException]] = []
        try:
            for position, job in enumerate(live):
                effects = _Effects()
                try:
                    connection.execute("SAVEPOINT job")
                    result = job.apply(connection, effects)
                    connection.execute("RELEASE job")
                except Exception as exc:
                    if not _rollback_savepoint(connection):
                        # The error ended the whole transaction (disk full, I/O error):
                        # the work of the jobs before this one is gone too.
                        return _Outcome(
                            failed=[
                                *((j, exc) for j, _, _ in done),
                                *failed,
                                *((j, exc) for j in live[position:]),
                            ]
                        )
                    failed.append((job, exc))
                else:
                    done.append((job, result, effects))
            try:
                if any(effects.sync_spool_dir for _, _, effects in done):
                    fsync_directory(self._spool_dir)
                connection.execute("COMMIT")
            except (sqlite3.Error, OSError) as exc:
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
                return _Outcome(failed=[*((j, exc) for j, _, _ in done), *failed])
        finally:
            # Whatever happened (a failed ROLLBACK, a bug in a job), no transaction
            # may outlive this call: the write lock is released right after it.
            if connection.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
        if writes:
            self._stats.commits += 1
            self._stats.jobs += len(done)
        return _Outcome(committed=done, failed=failed)

    def _settle(self, outcome: _Outcome) -> None:
        """After the transaction: clean-up of committed jobs, then every job's future."""
        for job, result, effects in outcome.committed:
            for action in effects.after_commit:
                _run_quietly(action)
            job.future.set_result(result)
        for job, exc in outcome.failed:
            self._fail([job], exc)

    @staticmethod
    def _fail(jobs: Iterable[_Job[Any]], exc: BaseException) -> None:
        for job in jobs:
            _run_quietly(job.on_failure)
            job.future.set_exception(exc)


def _rollback_savepoint(connection: sqlite3.Connection) -> bool:
    """Undo one job's work; False when the transaction itself is gone."""
    if not connection.in_transaction:
        return False
    try:
        connection.execute("ROLLBACK TO job")
        connection.execute("RELEASE job")
    except sqlite3.Error:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")
        return False
    return True


def _run_quietly(action: Callable[[], None] | None) -> None:
    """Clean-up that must not stop the writer: log what fails and go on."""
    if action is None:
        return
    try:
        action()
    except Exception:
        logger.exception("queue clean-up step failed")


# ====================================================================== checkpoints


class _Checkpointer:
    """The server's thread that checkpoints the WAL, so that commits never have to.

    ``PRAGMA wal_checkpoint(PASSIVE)`` on a connection of its own, every
    CHECKPOINT_INTERVAL: it copies committed pages into the database (and
    fsyncs it) without taking the write lock or waiting for readers, beside
    the writers of every process.  A failure is logged and tried again.
    """

    def __init__(
        self, connect: Callable[[], sqlite3.Connection], write_lock: _WriteLock, database: Path
    ) -> None:
        self._connect = connect
        self._write_lock = write_lock
        self._database = database
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="mailwright-queue-checkpoint", daemon=True
        )
        self.checkpoints = 0

    def start(self) -> None:
        self._write_lock.open()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        try:
            connection = self._connect()
        except (sqlite3.Error, OSError):
            logger.exception("queue checkpointer: cannot open the database")
            self._write_lock.close()
            return
        try:
            while not self._stop.wait(CHECKPOINT_INTERVAL):
                try:
                    self._checkpoint(connection)
                except (sqlite3.Error, OSError) as exc:
                    logger.warning("queue checkpoint failed (tried again): %s", exc)
        finally:
            connection.close()
            self._write_lock.close()

    def _checkpoint(self, connection: sqlite3.Connection) -> None:
        _busy, wal_pages, _copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.checkpoints += 1
        if wal_pages > WAL_RESTART_PAGES:
            # Under steady writing a passive checkpoint never catches the WAL's end,
            # so the WAL would only grow.  Between two write transactions (the write
            # lock held; the pages are mostly copied already) a RESTART finishes the
            # copy and lets the next writer start the WAL from its beginning.
            self._write_lock.acquire()
            try:
                connection.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            finally:
                self._write_lock.release()


# ====================================================================== the store


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
        clock: Callable[[], float] = time.time,
    ) -> None:
        if role not in _ROLES:
            raise ValueError(f"role must be one of {', '.join(_ROLES)}, not {role!r}")
        if memory_spool_limit < 0:
            raise ValueError(f"memory_spool_limit must not be negative: {memory_spool_limit}")
        if lease_seconds < 0:
            raise ValueError(f"lease_seconds must not be negative: {lease_seconds}")
        if max_batch < 1 or sync_threads < 1:
            raise ValueError("max_batch and sync_threads must be at least 1")
        self._data_dir = Path(data_dir)
        self._role: StoreRole = role
        self._memory_spool_limit = memory_spool_limit
        self._lease_seconds = lease_seconds
        self._busy_timeout = busy_timeout
        self._max_batch = max_batch
        self._sync_threads = sync_threads
        self._clock = clock
        self._database = self._data_dir / DATABASE_NAME
        self._spool_dir = self._data_dir / SPOOL_DIR_NAME
        self._tmp_dir = self._spool_dir / SPOOL_TMP_NAME
        self._corrupt_dir = self._spool_dir / SPOOL_CORRUPT_NAME
        self._new_queue_id = _QUEUE_IDS  # shared by the process: see _QueueIdGenerator
        self._stats = CommitStats()
        self._writer: _Writer | None = None
        self._sync_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock_fd: int | None = None
        self._acceptor_fd: int | None = None
        self._checkpointer: _Checkpointer | None = None
        self._write_lock = _WriteLock(self._data_dir / WRITE_LOCK_NAME)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()

    @property
    def data_dir(self) -> Path:
        return self._data_dir

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
        if self._writer is not None:
            raise StorageError("the queue store is already open")
        writer = _Writer(
            connect=self._connect,
            disconnect=self._disconnect,
            spool_dir=self._spool_dir,
            write_lock=self._write_lock,
            max_batch=self._max_batch,
            stats=self._stats,
        )
        try:
            await asyncio.wrap_future(writer.start())
            job = _Job(self._prepare)
            writer.submit(job)
            await asyncio.wrap_future(job.future)
        except BaseException as exc:
            await asyncio.wrap_future(writer.stop())
            if isinstance(exc, sqlite3.Error | OSError):
                raise StorageError(f"cannot open the queue in {self._data_dir}: {exc}") from exc
            raise
        self._writer = writer
        if self._role == "server":
            self._checkpointer = _Checkpointer(
                self._checkpoint_connection,
                _WriteLock(self._data_dir / WRITE_LOCK_NAME),
                self._database,
            )
            self._checkpointer.start()
        self._sync_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self._sync_threads, thread_name_prefix="mailwright-spool-sync"
        )

    async def close(self) -> None:
        """Finish the submitted work and close.  Claims stay: the next server open releases them."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        await asyncio.wrap_future(writer.stop())
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            await asyncio.to_thread(checkpointer.stop)
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for connection in readers:
            connection.close()
        self._local = threading.local()
        if self._sync_pool is not None:
            self._sync_pool.shutdown(wait=False)
            self._sync_pool = None

    # ------------------------------------------------------------ receiving

    def new_spool(self) -> SpillingSpool:
        """A spool: up to ``memory_spool_limit`` octets in memory, then a file in spool/tmp.

        spool/tmp is shared by the server and its acceptors.  File names come
        from mkstemp (created exclusively, so never shared), and ``enqueue``
        renames a file to spool/<queue id>, unique across processes.  Only the
        server role removes files there, and only at its own open
        (``_recover``), which comes before acceptors start; afterwards the
        server deletes only the spool file of a message it deletes.  A server
        that (re)started while acceptors ran would remove their files in
        flight: in spool/tmp (that enqueue then fails, nothing acknowledged)
        and, worse, a file already renamed into spool/ whose row is not yet
        committed (it would be acknowledged without its body).  Hence
        acceptors stop before their server restarts.
        """
        return SpillingSpool(self._tmp_dir, self._memory_spool_limit)

    async def enqueue(
        self,
        sender: Address | None,
        targets: Sequence[Target],
        body: BodySpool,
    ) -> str:
        """Store the message durably (one group commit) and return its queue id.

        ``body`` must be a spool made by this store's ``new_spool()``; the store
        owns it from now on.  Raises StorageError, with nothing of the message
        left visible or on disk, when it cannot be stored.  If the caller is
        cancelled while the commit is under way the message may still be
        stored: it was never acknowledged, so at worst the client sends it again.
        """
        if not isinstance(body, SpillingSpool):
            raise TypeError("enqueue needs a spool made by this store's new_spool()")
        if not targets:
            raise ValueError("a message needs at least one target")
        writer = self._require_open()
        body.take_ownership()
        queue_id = self._new_queue_id()
        received_at = self._clock()
        try:
            blob: bytes | None = None
            spool_name: str | None = None
            if body.on_disk:
                spool_name = queue_id
                await self._seal(body, self._spool_dir / spool_name)
            else:
                blob = body.take_bytes()
            row = (queue_id, *_split(sender), received_at, body.size, spool_name, blob)
            recipients = [
                (
                    queue_id,
                    index,
                    *_split(t.address),
                    *_split(t.original),
                    int(t.local),
                    received_at,
                )
                for index, t in enumerate(targets)
            ]
            job = _Job(
                lambda connection, effects: self._insert(connection, effects, row, recipients),
                on_failure=body.remove,
            )
            writer.submit(job)
        except asyncio.CancelledError:
            raise  # _seal arranged the clean-up
        except BaseException as exc:
            body.remove()
            if isinstance(exc, OSError):
                raise StorageError(f"cannot store the message: {exc}") from exc
            raise
        return await self._result(job, "cannot store the message")

    async def _seal(self, spool: SpillingSpool, final_path: Path) -> None:
        """fsync and rename a spool file on the sync pool; clean up even if cancelled."""
        if self._sync_pool is None:
            raise StorageError("the queue store is closed")
        sealing = self._sync_pool.submit(spool.seal, final_path)
        try:
            await asyncio.wrap_future(sealing)
        except asyncio.CancelledError:
            sealing.add_done_callback(lambda _: spool.remove())
            raise

    @staticmethod
    def _insert(
        connection: sqlite3.Connection,
        effects: _Effects,
        row: tuple[Any, ...],
        recipients: list[tuple[Any, ...]],
    ) -> str:
        connection.execute(
            "INSERT INTO messages (queue_id, sender_local, sender_domain, received_at, size,"
            " spool_name, body) VALUES (?, ?, ?, ?, ?, ?, ?)",
            row,
        )
        connection.executemany(
            "INSERT INTO recipients (queue_id, idx, address_local, address_domain,"
            " original_local, original_domain, local, state, next_attempt)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?)",
            recipients,
        )
        if row[5] is not None:
            effects.sync_spool_dir = True
        return str(row[0])

    # ------------------------------------------------------------ delivering

    async def claim_due(self, now: float, limit: int) -> list[QueuedMessage]:
        """Claim up to ``limit`` messages with recipients due at ``now``, earliest due first.

        Each claimed recipient is leased until ``now + lease_seconds``.
        """
        if limit <= 0:
            return []
        lease_until = now + self._lease_seconds

        def claim(connection: sqlite3.Connection, effects: _Effects) -> list[QueuedMessage]:
            due = f"{_PENDING_SQL} AND next_attempt <= ? AND lease_until <= ?"
            queue_ids: dict[str, None] = {}
            cursor = connection.execute(
                f"SELECT queue_id FROM recipients WHERE {due} ORDER BY next_attempt", (now, now)
            )
            while len(queue_ids) < limit and (rows := cursor.fetchmany(256)):
                for (queue_id,) in rows:
                    queue_ids[queue_id] = None
                    if len(queue_ids) == limit:
                        break
            cursor.close()
            claimed = []
            for queue_id in queue_ids:
                message = connection.execute(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE queue_id = ?", (queue_id,)
                ).fetchone()
                if message is None:
                    continue
                recipients = connection.execute(
                    f"SELECT {_RECIPIENT_COLUMNS} FROM recipients WHERE queue_id = ? AND {due}"
                    " ORDER BY idx",
                    (queue_id, now, now),
                ).fetchall()
                connection.execute(
                    f"UPDATE recipients SET lease_until = ? WHERE queue_id = ? AND {due}",
                    (lease_until, queue_id, now, now),
                )
                claimed.append(_message(message, recipients))
            return claimed

        # A lost claim only makes the work due again: no fsync for it.
        return await self._call(claim, "cannot claim due messages", durable=False)

    async def record_result(self, queue_id: str, index: int, result: RecipientResult) -> None:
        """Record one attempt (attempts + 1 unless it was a bounce's retry), end the claim;
        remove the message once all are final.

        A result for a recipient that is already final, or for a message that
        was removed meanwhile (``mailwright queue delete``), is ignored.
        """
        if result.state is RecipientState.QUEUED:
            raise ValueError("a result is delivered, bounced, bouncing or deferred, never queued")
        waits = result.state in (RecipientState.DEFERRED, RecipientState.BOUNCING)
        next_attempt = result.next_attempt if waits else 0.0

        def record(connection: sqlite3.Connection, effects: _Effects) -> None:
            updated = connection.execute(
                "UPDATE recipients SET state = ?,"
                " attempts = attempts + (CASE state WHEN 'bouncing' THEN 0 ELSE 1 END),"
                " next_attempt = ?, last_reply = ?, lease_until = 0"
                f" WHERE queue_id = ? AND idx = ? AND {_PENDING_SQL}",
                (result.state.value, next_attempt, result.reply, queue_id, index),
            ).rowcount
            if not updated:
                logger.debug(
                    "queue %s: result for recipient %d ignored (final or removed)", queue_id, index
                )
                return
            pending = connection.execute(
                f"SELECT 1 FROM recipients WHERE queue_id = ? AND {_PENDING_SQL} LIMIT 1",
                (queue_id,),
            ).fetchone()
            if pending is None:
                self._delete(connection, effects, queue_id)

        # Lost only in an OS crash (not kill -9), and then the attempt is repeated:
        # at-least-once, like a delivery in flight at the crash.
        await self._call(record, f"cannot record the result for {queue_id}", durable=False)

    def open_body(self, queue_id: str) -> BinaryIO:
        """The stored body from its start: BytesIO for a BLOB, an open file for a spool file.

        Blocking, but never behind the writer thread: a SELECT on this thread's own
        read-only connection (WAL readers do not wait for commits).  Fine on an
        event loop for a small body; call it from a worker thread for a large one.
        Raises StorageError when the message or its spool file is gone.
        """
        writer = self._require_open()
        if threading.current_thread() is writer.thread:
            raise RuntimeError("open_body cannot be called from the queue's writer thread")
        # Read on a connection of this thread's own: WAL lets readers run beside the
        # writer, so delivery never queues behind a group commit (the profile showed
        # a fifth of the delivery path waiting here when it went through the writer).
        try:
            row = (
                self._reader()
                .execute("SELECT spool_name, body FROM messages WHERE queue_id = ?", (queue_id,))
                .fetchone()
            )
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the body of {queue_id}: {exc}") from exc
        if row is None:
            raise StorageError(f"no message {queue_id} in the queue")
        spool_name, blob = row
        if spool_name is None:
            return io.BytesIO(blob)
        try:
            return open(_open_regular_file(self._spool_dir / spool_name, os.O_RDONLY), "rb")
        except OSError as exc:
            raise StorageError(f"cannot open the body of {queue_id}: {exc}") from exc

    # ------------------------------------------------------------ administration

    async def get(self, queue_id: str) -> QueuedMessage | None:
        """One message with all its recipients, or None."""
        return await self._call(
            lambda connection, effects: _load(connection, queue_id),
            f"cannot read {queue_id}",
            writes=False,
        )

    async def remove(self, queue_id: str) -> bool:
        """Delete a message and its body; False when there was no such message."""
        return await self._call(
            lambda connection, effects: self._delete(connection, effects, queue_id),
            f"cannot remove {queue_id}",
        )

    async def retry_now(self, queue_id: str | None = None) -> int:
        """Make every pending recipient (of one message, or all) due now; returns how many.

        That includes the bounce of a BOUNCING recipient.  Claims are left
        alone: a recipient in flight keeps its lease.
        """

        def retry(connection: sqlite3.Connection, effects: _Effects) -> int:
            params: tuple[str, ...] = ()
            if queue_id is None:
                sql = f"UPDATE recipients SET next_attempt = 0 WHERE {_PENDING_SQL}"
            else:
                sql = (
                    f"UPDATE recipients SET next_attempt = 0 WHERE queue_id = ? AND {_PENDING_SQL}"
                )
                params = (queue_id,)
            return int(connection.execute(sql, params).rowcount)

        return await self._call(retry, "cannot reschedule")

    async def quarantined(self) -> list[tuple[str, float, str]]:
        """Messages moved aside at start-up: (queue id, when, why), oldest first."""

        def read(connection: sqlite3.Connection, effects: _Effects) -> list[tuple[str, float, str]]:
            return [
                (str(queue_id), float(when), str(reason))
                for queue_id, when, reason in connection.execute(
                    "SELECT queue_id, quarantined_at, reason FROM quarantine"
                    " ORDER BY quarantined_at"
                )
            ]

        return await self._call(read, "cannot read the quarantine", writes=False)

    # ------------------------------------------------------------ plumbing

    def _require_open(self) -> _Writer:
        if self._writer is None:
            raise StorageError("the queue store is not open")
        return self._writer

    async def _call(
        self,
        apply: Callable[[sqlite3.Connection, _Effects], T],
        what: str,
        *,
        writes: bool = True,
        durable: bool = True,
    ) -> T:
        job = _Job(apply, writes=writes, durable=durable)
        self._require_open().submit(job)
        return await self._result(job, what)

    @staticmethod
    async def _result(job: _Job[T], what: str) -> T:
        try:
            return await asyncio.wrap_future(job.future)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"{what}: {exc}") from exc

    def _delete(self, connection: sqlite3.Connection, effects: _Effects, queue_id: str) -> bool:
        row = connection.execute(
            "SELECT spool_name FROM messages WHERE queue_id = ?", (queue_id,)
        ).fetchone()
        if row is None:
            return False
        connection.execute("DELETE FROM recipients WHERE queue_id = ?", (queue_id,))
        connection.execute("DELETE FROM messages WHERE queue_id = ?", (queue_id,))
        if row[0] is not None:
            # After the commit: a crash before it must leave the body in place.
            path = self._spool_dir / row[0]
            effects.after_commit.append(lambda: _unlink_if_present(path))
        return True

    # ------------------------------------------------------------ in the writer thread: open

    def _connect(self) -> sqlite3.Connection:
        _refuse_foreign_data_dir(self._data_dir)
        if self._role == "server":
            for directory in (self._data_dir, self._spool_dir, self._tmp_dir):
                make_directories(directory)
            self._lock_fd = _lock_exclusively(self._data_dir / LOCK_NAME)
            try:
                _no_acceptors_left(self._data_dir / ACCEPTORS_LOCK_NAME)
            except BaseException:
                self._unlock()
                raise
            # Created private here: SQLite gives the -wal and -shm files the same mode.
            os.close(_open_regular_file(self._database, os.O_RDWR | os.O_CREAT))
            mode = "rwc"
        else:
            # acceptor, admin: the server made the queue, its directories and did the
            # recovery; these roles create nothing and take no queue.lock.
            try:
                os.close(_open_regular_file(self._database, os.O_RDONLY))
            except FileNotFoundError:
                raise StorageError(
                    f"no queue in {self._data_dir} (has the server run there?)"
                ) from None
            if self._role == "acceptor":
                self._acceptor_fd = _hold_shared(self._data_dir / ACCEPTORS_LOCK_NAME)
            mode = "rw"
        try:
            connection = self._open_connection(mode)
            try:
                journal = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(journal).lower() != "wal":
                    raise StorageError(
                        f"SQLite refused WAL mode in {self._data_dir} (got {journal})"
                    )
                connection.execute("PRAGMA synchronous=FULL")
                connection.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
                if self._role == "server":
                    fsync_directory(self._data_dir)  # the database file's own entry
                self._write_lock.open()
            except BaseException:
                connection.close()
                raise
        except BaseException:
            self._unlock()
            raise
        return connection

    def _open_connection(self, mode: str) -> sqlite3.Connection:
        """A connection for one thread, in autocommit (transactions are explicit)."""
        return sqlite3.connect(
            f"file:{quote(str(self._database))}?mode={mode}",
            uri=True,
            timeout=self._busy_timeout,
            isolation_level=None,
            check_same_thread=True,
        )

    def _checkpoint_connection(self) -> sqlite3.Connection:
        """The checkpointer's connection: read-write, synchronous=FULL (the database's
        fsync after copying belongs to the checkpoint)."""
        connection = self._open_connection("rw")
        connection.execute("PRAGMA synchronous=FULL")
        return connection

    def _reader(self) -> sqlite3.Connection:
        """This thread's read-only connection, made on first use and closed with the store."""
        connection: sqlite3.Connection | None = getattr(self._local, "reader", None)
        if connection is None:
            connection = sqlite3.connect(
                f"file:{quote(str(self._database))}?mode=ro",
                uri=True,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,  # closed by close() from another thread
            )
            self._local.reader = connection
            with self._readers_lock:
                self._readers.append(connection)
        return connection

    def _disconnect(self, connection: sqlite3.Connection) -> None:
        try:
            connection.close()
        finally:
            self._unlock()

    def _unlock(self) -> None:
        """Close this store's lock files: the write lock, and queue.lock (server role)."""
        try:
            self._write_lock.close()
        finally:
            for name in ("_lock_fd", "_acceptor_fd"):
                fd = getattr(self, name)
                if fd is not None:
                    os.close(fd)
                    setattr(self, name, None)

    def _prepare(self, connection: sqlite3.Connection, effects: _Effects) -> None:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"the queue in {self._data_dir} has schema {version}, newer than this"
                f" mailwright understands ({SCHEMA_VERSION})"
            )
        _run_script(connection, _SCHEMA)
        if version < 2:
            # Schema 1's index of due recipients left out 'bouncing': claims could not use it.
            connection.execute("DROP INDEX IF EXISTS recipients_due")
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        if self._role == "server":
            self._recover(connection, effects)

    def _recover(self, connection: sqlite3.Connection, effects: _Effects) -> None:
        """Start-up recovery of the server role; see the module docstring."""
        unfinished = _remove_files_in(self._tmp_dir)
        if unfinished:
            logger.info("queue: removed %d unfinished spool files (never acknowledged)", unfinished)
        released = connection.execute(
            "UPDATE recipients SET lease_until = 0 WHERE lease_until != 0"
        ).rowcount
        if released:
            logger.info(
                "queue: released %d claims of the previous run; they are due again", released
            )

        referenced: set[str] = set()
        rows = connection.execute(
            "SELECT queue_id, spool_name, size, body IS NOT NULL, length(body) FROM messages"
        ).fetchall()
        for queue_id, spool_name, size, has_blob, blob_length in rows:
            problem: str | None
            if spool_name is None:
                if not has_blob:
                    problem = "has no stored body"
                elif blob_length != size:
                    problem = f"stored body has {blob_length} octets, expected {size}"
                else:
                    continue
            else:
                referenced.add(spool_name)
                problem = _check_spool_file(self._spool_dir / spool_name, size)
                if problem is None:
                    continue
            self._quarantine(connection, effects, queue_id, spool_name, problem)

        orphans = [
            Path(entry.path)
            for entry in os.scandir(self._spool_dir)
            if entry.name not in referenced and not entry.is_dir(follow_symlinks=False)
        ]
        if orphans:
            logger.info("queue: removing %d spool files no message refers to", len(orphans))
            effects.after_commit.extend(partial(_unlink_if_present, path) for path in orphans)

    def _quarantine(
        self,
        connection: sqlite3.Connection,
        effects: _Effects,
        queue_id: str,
        spool_name: str | None,
        problem: str,
    ) -> None:
        """Move a damaged message aside: its rows to ``quarantine``, its file to spool/corrupt/."""
        message = _load(connection, queue_id)
        assert message is not None
        where = "the quarantine table"
        if spool_name is not None and os.path.lexists(self._spool_dir / spool_name):
            try:
                make_directories(self._corrupt_dir, SPOOL_DIRECTORY_MODE)
                os.rename(self._spool_dir / spool_name, self._corrupt_dir / spool_name)
                effects.sync_spool_dir = True
                where += f" and {self._corrupt_dir / spool_name}"
            except OSError as exc:
                logger.warning("queue %s: cannot move %s aside: %s", queue_id, spool_name, exc)
        blob = connection.execute(
            "SELECT body FROM messages WHERE queue_id = ?", (queue_id,)
        ).fetchone()[0]
        connection.execute(
            "INSERT OR REPLACE INTO quarantine (queue_id, quarantined_at, reason, envelope,"
            " spool_name, body) VALUES (?, ?, ?, ?, ?, ?)",
            (queue_id, self._clock(), problem, json.dumps(_describe(message)), spool_name, blob),
        )
        connection.execute("DELETE FROM recipients WHERE queue_id = ?", (queue_id,))
        connection.execute("DELETE FROM messages WHERE queue_id = ?", (queue_id,))
        pending = [str(r.target.address) for r in message.recipients if r.state.value in _PENDING]
        logger.warning(
            "queue %s: %s; moved aside to %s, not delivered to %s; the rest of the queue goes on",
            queue_id,
            problem,
            where,
            ", ".join(pending) or "anyone",
        )

    # Last, so that the name ``list`` in annotations above means the builtin.
    async def list(self) -> list[QueuedMessage]:
        """Every message still in the queue, oldest first, with all its recipients."""

        def load_all(connection: sqlite3.Connection, effects: _Effects) -> list[QueuedMessage]:
            messages = connection.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages ORDER BY queue_id"
            ).fetchall()
            by_message: dict[str, list[tuple[Any, ...]]] = {}
            for row in connection.execute(
                f"SELECT {_RECIPIENT_COLUMNS} FROM recipients ORDER BY queue_id, idx"
            ):
                by_message.setdefault(row[0], []).append(row)
            return [_message(row, by_message.get(row[0], [])) for row in messages]

        return await self._call(load_all, "cannot list the queue", writes=False)


# ====================================================================== helpers


def _split(address: Address | None) -> tuple[str | None, str | None]:
    """An address as two columns, so a quoted local part round-trips exactly."""
    if address is None:
        return None, None
    return address.local_part, address.domain


def _message(row: Sequence[Any], recipients: Iterable[Sequence[Any]]) -> QueuedMessage:
    queue_id, sender_local, sender_domain, received_at, size = row
    sender = None if sender_local is None else Address(sender_local, sender_domain)
    return QueuedMessage(
        queue_id=queue_id,
        sender=sender,
        received_at=received_at,
        size=size,
        recipients=tuple(_recipient(r) for r in recipients),
    )


def _recipient(row: Sequence[Any]) -> QueuedRecipient:
    queue_id, index, address_local, address_domain = row[:4]
    original_local, original_domain, local, state, attempts, next_attempt, last_reply = row[4:]
    return QueuedRecipient(
        queue_id=queue_id,
        index=index,
        target=Target(
            address=Address(address_local, address_domain),
            original=Address(original_local, original_domain),
            local=bool(local),
        ),
        state=RecipientState(state),
        attempts=attempts,
        next_attempt=next_attempt,
        last_reply=last_reply,
    )


def _load(connection: sqlite3.Connection, queue_id: str) -> QueuedMessage | None:
    row = connection.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE queue_id = ?", (queue_id,)
    ).fetchone()
    if row is None:
        return None
    recipients = connection.execute(
        f"SELECT {_RECIPIENT_COLUMNS} FROM recipients WHERE queue_id = ? ORDER BY idx", (queue_id,)
    ).fetchall()
    return _message(row, recipients)


def _describe(message: QueuedMessage) -> dict[str, Any]:
    """The envelope of a quarantined message, for the operator (JSON)."""
    return {
        "sender": None if message.sender is None else str(message.sender),
        "received_at": message.received_at,
        "size": message.size,
        "recipients": [
            {
                "address": str(r.target.address),
                "original": str(r.target.original),
                "local": r.target.local,
                "state": r.state.value,
                "attempts": r.attempts,
                "last_reply": r.last_reply,
            }
            for r in message.recipients
        ],
    }


def _run_script(connection: sqlite3.Connection, script: str) -> None:
    """Run DDL statement by statement (executescript would COMMIT the open transaction)."""
    for statement in script.split(";"):
        if statement.strip():
            connection.execute(statement)


def _check_spool_file(path: Path, size: int) -> str | None:
    """What is wrong with a spool file, or None: it exists, is a file of the right size, reads."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return "spool file is missing"
    except OSError as exc:
        return f"spool file cannot be examined: {exc}"
    if not stat.S_ISREG(info.st_mode):
        return "spool file is not a regular file"
    if info.st_size != size:
        return f"spool file has {info.st_size} octets, expected {size}"
    try:
        with open(_open_regular_file(path, os.O_RDONLY), "rb") as body:
            body.read(1)
            if size:
                body.seek(size - 1)
                body.read(1)
    except (OSError, StorageError) as exc:
        return f"spool file cannot be read: {exc}"
    return None


def _remove_files_in(directory: Path) -> int:
    removed = 0
    for entry in os.scandir(directory):
        if not entry.is_dir(follow_symlinks=False):
            _unlink_if_present(Path(entry.path))
            removed += 1
    return removed


def _unlink_if_present(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _open_regular_file(path: Path, flags: int) -> int:
    """Open ``path`` (``flags``: access mode, maybe O_CREAT) as a regular file, never a link.

    Every file of data_dir that mailwright opens itself goes through here.
    Whoever owns data_dir can put anything at these names; with O_NOFOLLOW a
    symbolic link fails the open instead of sending us (maybe as root) to its
    target, and fstat checks what was opened, not what a name pointed to a
    moment earlier.  A FileNotFoundError is passed on as it is; a link or
    another kind of file is a StorageError that names it.
    """
    try:
        fd = os.open(path, flags | _SAFE_OPEN, PRIVATE_FILE_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StorageError(f"refusing to open {path}: it is a symbolic link") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StorageError(f"refusing to open {path}: it is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _refuse_foreign_data_dir(data_dir: Path) -> None:
    """As root, refuse a data_dir that belongs to another user.

    That user controls every name in it, and not only mailwright opens files
    there: SQLite opens (and, as root, chowns) the -wal and -shm files by
    name.  Run as the owner instead; ``mailwright queue`` switches to the
    owner by itself before it opens the queue (cli/queue.py).  A data_dir that
    does not exist yet is fine: the server role creates it as root's.
    """
    if os.geteuid() != 0:
        return
    try:
        owner = os.stat(data_dir).st_uid
    except FileNotFoundError:
        return
    if owner != 0:
        raise StorageError(
            f"refusing to open the queue in {data_dir} as root: it belongs to uid {owner};"
            " run mailwright as that user"
        )


def _no_acceptors_left(path: Path) -> None:
    """Refuse to open as the server while acceptors of an earlier server still run.

    The server's recovery removes spool files that no committed row names yet;
    an acceptor still receiving has such a file between sealing its body and
    committing its row.  Acceptors hold this file locked shared (``_hold_shared``)
    for their lifetime, so an exclusive try-lock fails while any is alive, e.g.
    when a killed supervisor's children are still finishing their sessions.
    """
    fd = _open_regular_file(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise StorageError(
            f"acceptor processes of an earlier server still use the queue in {path.parent};"
            " start again when they have stopped"
        ) from None
    finally:
        os.close(fd)


def _hold_shared(path: Path) -> int:
    """An acceptor's shared lock on ``queue.acceptors``, held until its store closes."""
    fd = _open_regular_file(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _lock_exclusively(path: Path) -> int:
    """Take the server lock of a data_dir; StorageError when another server holds it."""
    fd = _open_regular_file(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StorageError(
            f"another mailwright server is using the queue in {path.parent}"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    return fd
