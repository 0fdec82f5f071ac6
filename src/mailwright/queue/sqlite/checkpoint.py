"""The server's WAL checkpointer: a thread of its own, so that commits never checkpoint."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from mailwright.queue.sqlite.locks import WriteLock

logger = logging.getLogger("mailwright.queue.sqlite")

#: WAL pages after which a commit also checkpoints (SQLite's default is 1000, 4 MB).
#: An automatic checkpoint copies the WAL into the database and fsyncs it inside
#: the commit that crossed the mark, with the write lock held, so every process
#: waits for it: measured with 64 KiB messages, checkpoints took a quarter of
#: the receiving rate.  The server's Checkpointer thread does the work instead;
#: this mark is only the safety net should it fall behind (64 MB of WAL).
WAL_AUTOCHECKPOINT_PAGES = 16384
#: How often the server's checkpointer copies the WAL into the database.
CHECKPOINT_INTERVAL = 0.5
#: WAL pages (16 MB) above which the checkpointer restarts the WAL from its beginning.
WAL_RESTART_PAGES = 4096


class Checkpointer:
    """The server's thread that checkpoints the WAL, so that commits never have to.

    ``PRAGMA wal_checkpoint(PASSIVE)`` on a connection of its own, every
    CHECKPOINT_INTERVAL: it copies committed pages into the database (and
    fsyncs it) without taking the write lock or waiting for readers, beside
    the writers of every process.  A failure is logged and tried again.
    """

    def __init__(
        self, connect: Callable[[], sqlite3.Connection], write_lock: WriteLock, database: Path
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
