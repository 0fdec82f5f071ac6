"""Message bodies on their way into the queue: memory first, a file once they grow.

A body arrives in chunks while the SMTP client sends DATA (or BDAT).  Small
bodies stay in memory and end up as a BLOB in the queue database; a body larger
than the store's memory limit moves to a file in ``spool/tmp`` so a 100 MB
message never needs 100 MB of RAM.  Writing never syncs: the queue store makes
the body durable (fsync, rename into ``spool/``, sync the directory) before the
transaction that references it commits.

Ownership is explicit.  Until ``enqueue`` takes it, the receiver owns a spool
and must ``discard()`` it when the transaction is abandoned.  Once ``enqueue``
has taken it, ``discard()`` does nothing: the store alone decides whether the
file becomes part of the queue or is removed, even if the enqueuing task was
cancelled half-way.
"""

from __future__ import annotations

import contextlib
import enum
import os
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO

from mailwright.durable import fsync_directory
from mailwright.durable import make_directories as _make_directories
from mailwright.errors import StorageError

__all__ = ["DEFAULT_SPOOL_WRITE_BUFFER", "SpillingSpool", "fsync_directory", "make_directories"]

#: Write buffer of a spool file: large writes, few system calls, bounded memory.
DEFAULT_SPOOL_WRITE_BUFFER = 256 * 1024
#: Mode of spool directories and files: message bodies are private.
SPOOL_DIRECTORY_MODE = 0o700


class _SpoolState(enum.Enum):
    OPEN = "open"  # the receiver writes; discard() removes
    OWNED = "owned"  # enqueue took it; only the store may remove it
    REMOVED = "removed"  # discarded or removed: nothing left on disk


class SpillingSpool:
    """A ``BodySpool`` (queue/base.py) that spills from memory to ``tmp_dir``.

    Not thread-safe for writing (one receiver writes it); the state change
    between the receiver and the store is guarded by a lock because the store
    may finish with a spool on its own threads.
    """

    def __init__(
        self,
        tmp_dir: Path,
        memory_limit: int,
        *,
        write_buffer: int = DEFAULT_SPOOL_WRITE_BUFFER,
        prefix: bytes = b"",
    ) -> None:
        """``prefix``: octets a file starts with, before the body (write once: the trace
        lines of the message's one local copy, so that the file is that copy).  Never part
        of the body: not counted in ``size``, not in ``take_bytes``."""
        if memory_limit < 0:
            raise ValueError(f"memory_limit must not be negative: {memory_limit}")
        self.prefix = prefix
        self._tmp_dir = tmp_dir
        self._memory_limit = memory_limit
        self._write_buffer = write_buffer
        self._buffer = bytearray()
        self._file: BinaryIO | None = None
        self._path: Path | None = None
        self._size = 0
        self._state = _SpoolState.OPEN
        self._lock = threading.Lock()

    # ------------------------------------------------------------ the receiver's side

    def write(self, data: bytes) -> None:
        """Append ``data``; raises StorageError (and discards the spool) when the disk fails."""
        if self._state is not _SpoolState.OPEN:
            raise ValueError(f"cannot write to a spool that is {self._state.value}")
        try:
            if self._file is None:
                if len(self._buffer) + len(data) <= self._memory_limit:
                    self._buffer += data
                    self._size += len(data)
                    return
                self._spill()
            assert self._file is not None
            self._file.write(data)
        except OSError as exc:
            self.discard()
            raise StorageError(f"cannot spool the message body: {exc}") from exc
        self._size += len(data)

    @property
    def size(self) -> int:
        """Octets written so far."""
        return self._size

    @property
    def on_disk(self) -> bool:
        """True once the body moved from memory to a file."""
        return self._path is not None

    def discard(self) -> None:
        """Drop the body and any file it made; does nothing once ``enqueue`` owns the spool."""
        with self._lock:
            if self._state is not _SpoolState.OPEN:
                return
            self._state = _SpoolState.REMOVED
        self._release()

    # ------------------------------------------------------------ the store's side

    def take_ownership(self) -> None:
        """Called by ``enqueue``: from now on only the store removes this spool."""
        with self._lock:
            if self._state is not _SpoolState.OPEN:
                raise ValueError(f"cannot enqueue a spool that is {self._state.value}")
            self._state = _SpoolState.OWNED

    def take_bytes(self) -> bytes:
        """The in-memory body (for a BLOB), releasing the buffer."""
        if self._path is not None:
            raise ValueError("the body is in a file, not in memory")
        body = bytes(self._buffer)
        self._buffer = bytearray()
        return body

    def seal(self, final_path: Path) -> None:
        """Flush, fsync and close the spool file, then rename it to ``final_path``.

        Blocking; the store runs it off the event loop.  The caller syncs the
        directory of ``final_path`` before it commits a reference to the file.
        """
        if self._file is None or self._path is None:
            raise ValueError("the body is in memory, there is no file to seal")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.rename(self._path, final_path)
        self._path = final_path

    def remove(self) -> None:
        """Called by the store when the enqueue failed or was cancelled: delete what exists."""
        with self._lock:
            if self._state is _SpoolState.REMOVED:
                return
            self._state = _SpoolState.REMOVED
        self._release()

    # ------------------------------------------------------------ internals

    def _spill(self) -> None:
        fd, name = tempfile.mkstemp(prefix="body-", dir=self._tmp_dir)
        self._path = Path(name)
        self._file = open(fd, "wb", buffering=self._write_buffer)  # noqa: SIM115 - kept open across writes
        self._file.write(self.prefix)
        self._file.write(self._buffer)
        self._buffer = bytearray()

    def _release(self) -> None:
        self._buffer = bytearray()
        if self._file is not None:
            with contextlib.suppress(OSError, ValueError):
                self._file.close()
        if self._path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._path)


def make_directories(path: Path, mode: int = SPOOL_DIRECTORY_MODE) -> None:
    """Create ``path`` and missing ancestors, syncing each parent that gained an entry."""
    _make_directories(path, mode)
