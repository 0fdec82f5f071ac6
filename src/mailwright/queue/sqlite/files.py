"""The files of a queue's data_dir, and the one way the store opens them.

Layout under ``data_dir``::

    queue.sqlite3 (+ -wal, -shm)   messages, recipients, quarantine
    queue.closed-cleanly           the last server closed the queue cleanly (recovery.py)
    queue.lock                     held (flock) by the one server using this queue
    queue.write-lock               flock taken around every write transaction, all roles
    queue.acceptors                held shared by each acceptor; a server will not recover under it
    spool/<queue_id>               bodies larger than the memory limit, and local copies
                                   of messages with one local recipient (write once)
    spool/tmp/                     bodies being received (never acknowledged)
    spool/corrupt/                 spool files found damaged at start-up

Whoever owns data_dir controls every name in it.  Every file the store opens
there itself is opened with O_NOFOLLOW and checked with fstat to be a regular
file (``open_regular_file``): a link planted in place of a lock file or a spool
file is refused, never followed.  Nothing is chowned, and root refuses a
data_dir that belongs to another user (``refuse_foreign_data_dir``;
``mailwright queue`` first becomes that user), so whatever the store and SQLite
create has the owner of data_dir.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from mailwright.errors import StorageError

DATABASE_NAME = "queue.sqlite3"
LOCK_NAME = "queue.lock"
#: Made by a server that closed the queue cleanly; see recovery.py.
CLEAN_MARK_NAME = "queue.closed-cleanly"
WRITE_LOCK_NAME = "queue.write-lock"
#: Held shared by every acceptor for its lifetime; see locks.no_acceptors_left.
ACCEPTORS_LOCK_NAME = "queue.acceptors"
SPOOL_DIR_NAME = "spool"
SPOOL_TMP_NAME = "tmp"
SPOOL_CORRUPT_NAME = "corrupt"
#: Mode of the files the queue creates itself (the database, lock files): private.
PRIVATE_FILE_MODE = 0o600
#: Added to every open of a file in data_dir: a symbolic link planted there is refused,
#: never followed (it could name /etc/shadow), and a FIFO or terminal put in place of a
#: file neither blocks the open nor becomes our terminal; fstat then refuses it.
_SAFE_OPEN = os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK


@dataclass(frozen=True, slots=True)
class QueueLayout:
    """Where each part of one queue lives under ``data_dir`` (see the module docstring)."""

    data_dir: Path
    #: Joined once: every enqueue and every read of a spooled body names these.
    spool_dir: Path = field(init=False)
    tmp_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        spool_dir = self.data_dir / SPOOL_DIR_NAME
        object.__setattr__(self, "spool_dir", spool_dir)
        object.__setattr__(self, "tmp_dir", spool_dir / SPOOL_TMP_NAME)

    @property
    def database(self) -> Path:
        return self.data_dir / DATABASE_NAME

    @property
    def wal(self) -> Path:
        """SQLite's write-ahead log of ``database``."""
        return self.data_dir / (DATABASE_NAME + "-wal")

    @property
    def clean_mark(self) -> Path:
        """Present while no server has the queue open, made by a server that closed it cleanly."""
        return self.data_dir / CLEAN_MARK_NAME

    @property
    def lock(self) -> Path:
        return self.data_dir / LOCK_NAME

    @property
    def write_lock(self) -> Path:
        return self.data_dir / WRITE_LOCK_NAME

    @property
    def acceptors_lock(self) -> Path:
        return self.data_dir / ACCEPTORS_LOCK_NAME

    @property
    def corrupt_dir(self) -> Path:
        return self.spool_dir / SPOOL_CORRUPT_NAME


def open_regular_file(path: Path, flags: int) -> int:
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


def refuse_foreign_data_dir(data_dir: Path) -> None:
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


def unlink_if_present(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
