"""The queue's file locks: which process may recover, and whose turn it is to write.

``queue.lock`` (exclusive, ``lock_exclusively``) is held by the one server of a
data_dir; ``queue.acceptors`` (shared, ``hold_shared``) by every acceptor, so a
new server will not recover under them (``no_acceptors_left``); and
``queue.write-lock`` (``WriteLock``) orders the write transactions of every
process.  All are ``flock`` locks, which the kernel releases when a process dies.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from mailwright.errors import StorageError
from mailwright.queue.sqlite.files import open_regular_file


class WriteLock:
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
        """Open the lock file, creating it private (0600) if missing (``open_regular_file``).

        No chown: a store never runs as root on a data_dir of another user
        (``files.refuse_foreign_data_dir``), so what it creates has the right owner.
        """
        if self._fd is not None:
            raise StorageError("the write lock is already open")
        self._fd = open_regular_file(self._path, os.O_RDWR | os.O_CREAT)

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


def no_acceptors_left(path: Path) -> None:
    """Refuse to open as the server while acceptors of an earlier server still run.

    The server's recovery removes spool files that no committed row names yet;
    an acceptor still receiving has such a file between sealing its body and
    committing its row.  Acceptors hold this file locked shared (``hold_shared``)
    for their lifetime, so an exclusive try-lock fails while any is alive, e.g.
    when a killed supervisor's children are still finishing their sessions.
    """
    fd = open_regular_file(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise StorageError(
            f"acceptor processes of an earlier server still use the queue in {path.parent};"
            " start again when they have stopped"
        ) from None
    finally:
        os.close(fd)


def hold_shared(path: Path) -> int:
    """An acceptor's shared lock on ``queue.acceptors``, held until its store closes."""
    fd = open_regular_file(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except BaseException:
        os.close(fd)
        raise
    return fd


def lock_exclusively(path: Path) -> int:
    """Take the server lock of a data_dir; StorageError when another server holds it."""
    fd = open_regular_file(path, os.O_RDWR | os.O_CREAT)
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
