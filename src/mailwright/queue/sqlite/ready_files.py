"""Empty files made ahead in spool/, so that storing a local copy creates no file.

Why: the local copy of a message for one local recipient (write once,
bodies.py) must be on disk before its 250.  Creating a file is the dearest part
of that on ext4: an inode and a directory entry to allocate and, after many
deletions, a scan past recently freed inodes (docs/performance.md); measured
here, 20 files created and written cost 1.2-1.8 ms before their sync, 20 made
ahead and only written 0.7 ms.  So a thread of the store's sync pool keeps a
few empty files ready, and the writer thread only writes into one.  Nothing
here syncs: a file made ahead is made durable by the same ``syncfs`` as the
copy written into it (writer.py), and one left over (a crash) is a spool file
no row names, which the server's recovery removes.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import itertools
import logging
import os
import secrets
import threading
import time
from pathlib import Path

from mailwright.queue.sqlite.files import open_regular_file

logger = logging.getLogger("mailwright.queue.sqlite")

#: Files kept ready: about the messages of one group commit under a heavy load.
READY_FILES = 64
#: Seconds without trying again after making files failed (a full disk): one warning
#: then, not one per message.
RETRY_AFTER_FAILURE = 30.0


class ReadyFiles:
    """A few empty files in ``directory``, made by ``executor``; thread-safe."""

    def __init__(
        self, directory: str, executor: concurrent.futures.Executor, *, keep: int = READY_FILES
    ) -> None:
        self._directory = directory
        self._executor = executor
        self._keep = keep
        self._paths: collections.deque[str] = collections.deque()
        self._lock = threading.Lock()
        self._refilling = False
        self._closed = False
        self._failed_at = -RETRY_AFTER_FAILURE
        # Unique among the processes sharing spool/ and across restarts: pid and random.
        self._prefix = os.path.join(directory, f"ready.{os.getpid()}.{secrets.token_hex(4)}.")
        self._numbers = itertools.count()

    def take(self) -> str | None:
        """The path of an empty file made ahead, now the caller's; None when none is ready
        (the caller creates its own).  Asks for more when few are left."""
        try:
            path = self._paths.popleft()
        except IndexError:
            path = None
        if len(self._paths) < self._keep // 2:
            self._refill_soon()
        return path

    def close(self) -> None:
        """Remove the files still ready; no more are made."""
        with self._lock:
            self._closed = True
        while self._paths:
            with contextlib.suppress(OSError, IndexError):
                os.unlink(self._paths.popleft())

    def _refill_soon(self) -> None:
        with self._lock:
            if self._refilling or self._closed:
                return
            if time.monotonic() - self._failed_at < RETRY_AFTER_FAILURE:
                return  # copies are created one by one meanwhile
            self._refilling = True
        try:
            self._executor.submit(self._refill)
        except RuntimeError:  # the executor is shut down: the store is closing
            with self._lock:
                self._refilling = False

    def _refill(self) -> None:
        try:
            while len(self._paths) < self._keep and not self._closed:
                path = f"{self._prefix}{next(self._numbers)}"
                os.close(open_regular_file(Path(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL))
                self._paths.append(path)
        except OSError as exc:  # a full disk, say: copies are created one by one meanwhile
            self._failed_at = time.monotonic()
            logger.warning(
                "queue: cannot make spool files ahead (tried again in %.0f s): %s",
                RETRY_AFTER_FAILURE,
                exc,
            )
        finally:
            with self._lock:
                self._refilling = False
            if self._closed:
                self.close()
