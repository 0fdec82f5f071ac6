"""The store's SQLite connections, and the lock files each role holds while it is open.

Three kinds of connection, each used by one thread: the writer's (the only one
that writes; it holds the role's locks), the checkpointer's (server role), and
a read-only one per thread that reads bodies (WAL lets readers run beside the
writer, so reading a body never waits for a group commit).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from urllib.parse import quote

from mailwright.errors import StorageError
from mailwright.queue.spool import fsync_directory, make_directories
from mailwright.queue.sqlite.checkpoint import WAL_AUTOCHECKPOINT_PAGES
from mailwright.queue.sqlite.files import QueueLayout, open_regular_file, refuse_foreign_data_dir
from mailwright.queue.sqlite.locks import (
    WriteLock,
    hold_shared,
    lock_exclusively,
    no_acceptors_left,
)


class Database:
    """Opens the connections of one store; ``server`` creates, the other roles only open."""

    def __init__(
        self, layout: QueueLayout, *, server: bool, acceptor: bool, busy_timeout: float
    ) -> None:
        self._layout = layout
        self._server = server
        self._acceptor = acceptor
        self._busy_timeout = busy_timeout
        self._lock_fd: int | None = None
        self._acceptor_fd: int | None = None
        #: The writer's turn among processes; opened by connect, closed by disconnect.
        self.write_lock = WriteLock(layout.write_lock)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()

    # ------------------------------------------------------------ the writer's connection

    def connect(self) -> sqlite3.Connection:
        """The writer's connection, with the role's locks taken (in the writer thread)."""
        layout = self._layout
        refuse_foreign_data_dir(layout.data_dir)
        if self._server:
            for directory in (layout.data_dir, layout.spool_dir, layout.tmp_dir):
                make_directories(directory)
            self._lock_fd = lock_exclusively(layout.lock)
            try:
                no_acceptors_left(layout.acceptors_lock)
            except BaseException:
                self._unlock()
                raise
            # Created private here: SQLite gives the -wal and -shm files the same mode.
            os.close(open_regular_file(layout.database, os.O_RDWR | os.O_CREAT))
            mode = "rwc"
        else:
            # acceptor, admin: the server made the queue, its directories and did the
            # recovery; these roles create nothing and take no queue.lock.
            try:
                os.close(open_regular_file(layout.database, os.O_RDONLY))
            except FileNotFoundError:
                raise StorageError(
                    f"no queue in {layout.data_dir} (has the server run there?)"
                ) from None
            if self._acceptor:
                self._acceptor_fd = hold_shared(layout.acceptors_lock)
            mode = "rw"
        try:
            connection = self._open_connection(mode)
            try:
                journal = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(journal).lower() != "wal":
                    raise StorageError(
                        f"SQLite refused WAL mode in {layout.data_dir} (got {journal})"
                    )
                connection.execute("PRAGMA synchronous=FULL")
                connection.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
                if self._server:
                    fsync_directory(layout.data_dir)  # the database file's own entry
                self.write_lock.open()
            except BaseException:
                connection.close()
                raise
        except BaseException:
            self._unlock()
            raise
        return connection

    def disconnect(self, connection: sqlite3.Connection) -> None:
        try:
            connection.close()
        finally:
            self._unlock()

    def _unlock(self) -> None:
        """Close this store's lock files: the write lock, and queue.lock (server role)."""
        try:
            self.write_lock.close()
        finally:
            for name in ("_lock_fd", "_acceptor_fd"):
                fd = getattr(self, name)
                if fd is not None:
                    os.close(fd)
                    setattr(self, name, None)

    def _open_connection(self, mode: str) -> sqlite3.Connection:
        """A connection for one thread, in autocommit (transactions are explicit)."""
        return sqlite3.connect(
            f"file:{quote(str(self._layout.database))}?mode={mode}",
            uri=True,
            timeout=self._busy_timeout,
            isolation_level=None,
            check_same_thread=True,
        )

    # ------------------------------------------------------------ the other connections

    def checkpoint_connection(self) -> sqlite3.Connection:
        """The checkpointer's connection: read-write, synchronous=FULL (the database's
        fsync after copying belongs to the checkpoint)."""
        connection = self._open_connection("rw")
        connection.execute("PRAGMA synchronous=FULL")
        return connection

    def reader(self) -> sqlite3.Connection:
        """This thread's read-only connection, made on first use and closed with the store."""
        connection: sqlite3.Connection | None = getattr(self._local, "reader", None)
        if connection is None:
            connection = sqlite3.connect(
                f"file:{quote(str(self._layout.database))}?mode=ro",
                uri=True,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,  # closed by close_readers() from another thread
            )
            self._local.reader = connection
            with self._readers_lock:
                self._readers.append(connection)
        return connection

    def close_readers(self) -> None:
        """Close every thread's read-only connection (the store is closing)."""
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for connection in readers:
            connection.close()
        self._local = threading.local()
