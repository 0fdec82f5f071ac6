"""The one thread that owns the queue's SQLite connection: group commit.

Each time the writer thread wakes it takes every job waiting (enqueues,
claims, results ...), runs each in its own savepoint inside one transaction,
and commits once: many concurrent messages share one fsync, so durability does
not cost throughput.  The event loop only submits jobs and awaits their
futures (``JobRunner``).  Write transactions take ``queue.write-lock``
(locks.WriteLock) for exactly as long as they last, so the processes sharing
a queue take turns.

Write once.  A job may write a file before its transaction (``prepare``: the
spool file of a small message with one local recipient, which local delivery
later links into the Maildir) without syncing it.  A batch with such files
commits with ``synchronous=NORMAL`` (the WAL is written, not synced) and then,
after the write lock is released, makes the files and the WAL durable together
with one ``syncfs`` of the file system (durable.sync_file_system): one flush of
the disk for the whole batch where a sync of each file before the commit and
then the commit's own would be two in a row, each waited for before the 250.
A crash before that sync returns may leave a committed row whose file is short
or damaged; its 250 was never sent, and recovery moves it aside (``spool_crc``).
The row is visible to other connections from its commit, before that sync:
a delivery that claims it in between syncs the file itself before linking it
(delivery/maildir.py ``link_into_maildir``), so no Maildir ever shows a copy
that is not on disk.  NORMAL is safe for the database itself: in WAL mode it only skips the sync at
commit, and checkpoints (made by the server's checkpointer, synchronous FULL)
still sync the WAL before copying it and the database before the WAL restarts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from mailwright.durable import has_syncfs, sync_file_data, sync_file_system
from mailwright.errors import StorageError
from mailwright.queue.spool import fsync_directory
from mailwright.queue.sqlite.locks import WriteLock

logger = logging.getLogger("mailwright.queue.sqlite")

T = TypeVar("T")


@dataclass(slots=True)
class Effects:
    """File-system work a job needs around the commit of its transaction."""

    sync_spool_dir: bool = False  # a spool file was renamed in: sync spool/ before COMMIT
    after_commit: list[Callable[[], None]] = field(default_factory=list)


@dataclass(eq=False, slots=True)
class Job(Generic[T]):
    """One unit of work for the writer thread, run in its own savepoint.

    ``on_failure`` runs (in the writer thread) when the job failed, was
    cancelled before it started, or its transaction did not commit.
    """

    apply: Callable[[sqlite3.Connection, Effects], T]
    writes: bool = True
    #: False for bookkeeping whose loss in an OS crash only repeats work (claims,
    #: attempt results): a batch of such jobs commits without fsync (WAL with
    #: synchronous=NORMAL still survives a crash of the process, kill -9 included).
    durable: bool = True
    on_failure: Callable[[], None] | None = None
    #: Runs in the writer thread before the transaction, outside the write lock; a job
    #: whose ``prepare`` raises fails without running.
    prepare: Callable[[], None] | None = None
    #: A file ``prepare`` wrote and did not sync: the commit is made durable together
    #: with it (see the module docstring).
    unsynced_file: str | None = None
    future: concurrent.futures.Future[T] = field(default_factory=concurrent.futures.Future)


@dataclass(slots=True)
class CommitStats:
    """Instrumentation: how well group commit batches (read it in tests and benchmarks)."""

    commits: int = 0  # write transactions committed (each one WAL fsync)
    jobs: int = 0  # jobs that were part of those commits


@dataclass(slots=True)
class _Outcome:
    """How a transaction ended for each job; settled once the write lock is released.

    ``sync_after``: the commit was made without a sync and these unsynced files
    (possibly none) must be made durable with it before any job is settled.
    """

    committed: list[tuple[Job[Any], Any, Effects]] = field(default_factory=list)
    failed: list[tuple[Job[Any], BaseException]] = field(default_factory=list)
    sync_after: list[str] | None = None


class Writer:
    """The one thread that owns the SQLite connection and does every fsync of the queue."""

    def __init__(
        self,
        *,
        connect: Callable[[], sqlite3.Connection],
        disconnect: Callable[[sqlite3.Connection], None],
        spool_dir: Path,
        wal_path: Path,
        write_lock: WriteLock,
        max_batch: int,
        stats: CommitStats,
        use_syncfs: bool | None = None,
        on_clean_close: Callable[[], None] | None = None,
    ) -> None:
        """``use_syncfs``: sync a batch's unsynced files with one syncfs (None: where the
        system has it) or, False, file by file (fdatasync of each, of spool/, of the WAL)."""
        self._connect = connect
        self._disconnect = disconnect
        self._spool_dir = spool_dir
        self._wal_path = wal_path
        if use_syncfs is None:
            # One syncfs covers the WAL too only when spool/ is on data_dir's file system.
            use_syncfs = has_syncfs() and _same_file_system(spool_dir, wal_path.parent)
        self._use_syncfs = use_syncfs
        #: Runs in the thread after the last job when every commit was made durable,
        #: before the connection and its locks are closed (the clean-close mark).
        self._on_clean_close = on_clean_close
        self._sync_failed = False
        self._write_lock = write_lock  # opened by connect, closed by disconnect
        self._max_batch = max_batch
        self._stats = stats
        self._sync = "FULL"  # the connection opens with synchronous=FULL
        self._jobs: deque[Job[Any]] = deque()
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

    def submit(self, job: Job[Any]) -> None:
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
        ended = False
        try:
            while True:
                with self._wakeup:
                    while not self._jobs and self._accepting:
                        self._wakeup.wait()
                    if not self._jobs:
                        ended = True
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
                if ended and not self._sync_failed:
                    _run_quietly(self._on_clean_close)
                self._disconnect(connection)
            finally:
                self._stopped.set_result(None)

    def _execute(self, connection: sqlite3.Connection, batch: list[Job[Any]]) -> None:
        live: list[Job[Any]] = []
        for job in batch:
            if job.future.set_running_or_notify_cancel():
                live.append(job)
            else:
                _run_quietly(job.on_failure)
        if any(job.prepare is not None for job in live):
            live = self._prepare(live)
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
        if outcome.sync_after is not None and outcome.committed:
            try:
                self._sync_after_commit(outcome.sync_after)
            except OSError as exc:
                # Committed but perhaps not durable: no 250.  The rows stay (recovery
                # checks their files after a crash), so no job's clean-up runs either.
                logger.error("queue: cannot sync the commit: %s", exc)
                self._sync_failed = True
                for job, _, _ in outcome.committed:
                    job.future.set_exception(exc)
                outcome.committed = []
        self._settle(outcome)

    def _prepare(self, live: list[Job[Any]]) -> list[Job[Any]]:
        """Run each job's ``prepare``; the jobs whose prepare failed fail here."""
        ready: list[Job[Any]] = []
        for job in live:
            if job.prepare is not None:
                try:
                    job.prepare()
                except Exception as exc:
                    self._fail([job], exc)
                    continue
            ready.append(job)
        return ready

    def _sync_after_commit(self, files: list[str]) -> None:
        """Make a commit made with synchronous=NORMAL durable, with ``files`` written before it."""
        if self._use_syncfs:
            sync_file_system(self._spool_dir)
            return
        for path in files:
            sync_file_data(path)
        if files:
            fsync_directory(self._spool_dir)
        sync_file_data(self._wal_path)

    def _transaction(
        self, connection: sqlite3.Connection, live: list[Job[Any]], *, writes: bool
    ) -> _Outcome:
        """Run the jobs in one transaction, each in a savepoint, and end it: COMMIT or ROLLBACK.

        Touches no future and runs no clean-up: the caller settles the outcome
        after releasing the write lock, which is held no longer than the
        transaction itself.
        """
        durable = any(job.writes and job.durable for job in live)
        unsynced = [job.unsynced_file for job in live if job.unsynced_file is not None]
        # With unsynced files the sync comes after the commit (the module docstring).
        sync = "FULL" if durable and not unsynced else "NORMAL"
        try:
            if writes and sync != self._sync:
                connection.execute(f"PRAGMA synchronous={sync}")
                self._sync = sync
            connection.execute("BEGIN IMMEDIATE" if writes else "BEGIN")
        except sqlite3.Error as exc:
            return _Outcome(failed=[(job, exc) for job in live])
        done: list[tuple[Job[Any], Any, Effects]] = []
        failed: list[tuple[Job[Any], BaseException]] = []
        try:
            for position, job in enumerate(live):
                effects = Effects()
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
        return _Outcome(committed=done, failed=failed, sync_after=unsynced if unsynced else None)

    def _settle(self, outcome: _Outcome) -> None:
        """After the transaction: clean-up of committed jobs, then every job's future."""
        for job, result, effects in outcome.committed:
            for action in effects.after_commit:
                _run_quietly(action)
            job.future.set_result(result)
        for job, exc in outcome.failed:
            self._fail([job], exc)

    @staticmethod
    def _fail(jobs: Iterable[Job[Any]], exc: BaseException) -> None:
        for job in jobs:
            _run_quietly(job.on_failure)
            job.future.set_exception(exc)


def _same_file_system(first: Path, second: Path) -> bool:
    try:
        return os.stat(first).st_dev == os.stat(second).st_dev
    except OSError:  # not made yet: the queue makes spool/ inside data_dir
        return True


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


class JobRunner:
    """The event loop's side of the writer thread: submit a job and await its result.

    Shared by the store and its collaborators; ``writer`` is set while the store is open.
    A job that failed in SQLite or on the disk raises StorageError saying ``what`` failed.
    """

    def __init__(self) -> None:
        self.writer: Writer | None = None

    def require_open(self) -> Writer:
        if self.writer is None:
            raise StorageError("the queue store is not open")
        return self.writer

    async def call(
        self,
        apply: Callable[[sqlite3.Connection, Effects], T],
        what: str,
        *,
        writes: bool = True,
        durable: bool = True,
    ) -> T:
        job = Job(apply, writes=writes, durable=durable)
        self.require_open().submit(job)
        return await self.result(job, what)

    @staticmethod
    async def result(job: Job[T], what: str) -> T:
        try:
            return await asyncio.wrap_future(job.future)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"{what}: {exc}") from exc
