"""Local delivery into a Maildir: write to tmp/, fsync, rename into new/.

The Maildir protocol (https://cr.yp.to/proto/maildir.html) makes delivery safe
without locks: a message is written under a unique name in ``tmp/``, synced,
then renamed into ``new/``.  A rename is atomic, so a reader (or a crash, even
kill -9 or a power cut) sees either the whole message in ``new/`` or nothing
there; a leftover in ``tmp/`` is garbage that a mail reader may clean up after
36 hours.

Everything here blocks; the delivery worker runs it in a thread so the event
loop never waits on the disk.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from mailwright.durable import DirectorySyncer, fsync_directory, make_directories, sync_file_data
from mailwright.errors import StorageError
from mailwright.model import Address
from mailwright.syntax import is_domain_name, is_safe_local_part

__all__ = [
    "DEFAULT_COPY_CHUNK_SIZE",
    "deliver_to_maildir",
    "link_into_maildir",
    "linked_name",
    "mailbox_in",
    "maildir_unique_name",
    "sync_new_messages",
    "write_to_maildir",
]

#: Bytes read from the queued body per copy step: memory stays bounded whatever the size.
DEFAULT_COPY_CHUNK_SIZE = 256 * 1024
#: Mode of the directories this module creates (mail is private to its owner).
DIRECTORY_MODE = 0o700
#: Mode of a delivered message file.
MESSAGE_MODE = 0o600
#: How many names to try in tmp/ when one already exists (O_EXCL), before giving up.
MAX_NAME_ATTEMPTS = 8

_SUBDIRECTORIES = ("tmp", "new", "cur")
#: A Maildir++ folder: a dot, then a plain name (no further dots: no sub-folders here).
_FOLDER = re.compile(r"\.[A-Za-z0-9_-]{1,64}")


def mailbox_path(data_dir: Path | str, address: Address, folder: str | None = None) -> Path:
    """The Maildir of a local ``address`` under the default mailboxes folder, data_dir/mailboxes
    (``mailbox_in``)."""
    return mailbox_in(Path(data_dir) / "mailboxes", address, folder)


def mailbox_in(mailboxes_dir: Path | str, address: Address, folder: str | None = None) -> Path:
    """The Maildir of a local ``address``: <mailboxes_dir>/<domain>/<local part, lower case>,
    or its Maildir++ sub-folder ``folder`` (``.Junk``: <mailbox>/.Junk).  ``mailboxes_dir`` is
    ``[delivery] mailboxes_dir``, data_dir/mailboxes unless set.

    Raises ValueError when either part could step outside its directory or is
    not a plain name (``..``, ``/``, ``%``, quotes, a leading dot ...).  Delivery
    calls this rather than joining paths itself, so a hostile address can never
    reach the filesystem.
    """
    local_part = address.local_part.lower()  # the name on disk: checked as it will be used
    domain = address.domain_key
    if not is_safe_local_part(local_part):
        raise ValueError(f"local part is not safe as a mailbox name: {local_part!r}")
    if not is_domain_name(domain):
        raise ValueError(f"domain is not safe as a directory name: {domain!r}")
    path = Path(mailboxes_dir) / domain / local_part
    if folder is None:
        return path
    if not _FOLDER.fullmatch(folder):
        raise ValueError(f"not a Maildir++ folder name: {folder!r}")
    return path / folder


def mark_maildir_folder(folder_dir: str) -> None:
    """Create a Maildir++ sub-folder's directory and its empty ``maildirfolder`` file.

    The file is Courier's Maildir++ convention (Dovecot makes it too): mail
    readers that see it treat the directory as a folder of the mailbox, not as
    a mailbox of its own.
    """
    try:
        make_directories(Path(folder_dir), DIRECTORY_MODE)
        marker = os.open(os.path.join(folder_dir, "maildirfolder"), os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(marker)
    except OSError as exc:
        raise StorageError(f"cannot mark {folder_dir} as a Maildir++ folder: {exc}") from exc


def maildir_unique_name(
    hostname: str, *, now: float, pid: int, random_hex: str, sequence: int | None = None
) -> str:
    """A Maildir file name: ``<seconds>.M<usec>P<pid>[Q<sequence>]R<random>.<host>``.

    The middle part follows the "modern delivery identifier" of the Maildir
    spec: microseconds, process id, the caller's count of deliveries (Q, when it
    keeps one) and random bits (R) so two deliveries in the same microsecond by
    the same process still differ without any process-wide counter.  In the
    host name, "/" becomes ``\\057`` and ":" becomes ``\\072`` as the spec
    requires ("/" would split the path; ":" starts the info suffix in cur/).
    """
    seconds = int(now)
    usec = int((now - seconds) * 1_000_000)
    host = _maildir_host(hostname)
    queued = "" if sequence is None else f"Q{sequence}"
    return f"{seconds}.M{usec}P{pid}{queued}R{random_hex}.{host}"


def deliver_to_maildir(
    mailbox_dir: Path,
    body: BinaryIO,
    *,
    prefix: bytes,
    hostname: str,
    sequence: int | None = None,
    chunk_size: int = DEFAULT_COPY_CHUNK_SIZE,
    syncer: DirectorySyncer | None = None,
) -> Path:
    """Deliver ``prefix`` followed by ``body`` as one new message; return its path in new/.

    ``prefix`` holds the header lines the caller composed (Return-Path:,
    RFC 5321 4.4, and Delivered-To:), already CRLF-terminated.  ``body`` is
    read in ``chunk_size`` pieces from its current position to its end, never
    whole.  ``mailbox_dir`` and its tmp/, new/ and cur/ are created when
    missing, each creation made durable by syncing the parent directory.

    The file is synced before the rename and new/ after it, so when this
    returns the message survives a crash.  On any error the partial file is
    removed and StorageError is raised (the worker then defers the recipient).
    """
    new_path = write_to_maildir(
        mailbox_dir,
        body,
        prefix=prefix,
        hostname=hostname,
        sequence=sequence,
        chunk_size=chunk_size,
    )
    sync_new_messages(os.path.dirname(new_path), [new_path], syncer)
    return Path(new_path)


def write_to_maildir(
    mailbox_dir: Path | str,
    body: BinaryIO,
    *,
    prefix: bytes,
    hostname: str,
    sequence: int | None = None,
    chunk_size: int = DEFAULT_COPY_CHUNK_SIZE,
    directories_exist: bool = False,
) -> str:
    """deliver_to_maildir without its last step: new/ is not synced yet.  Returns the new path.

    The message is complete and synced, and renamed into new/, but the rename
    itself is durable only once the caller has called sync_new_messages(): a
    batch of deliveries into one Maildir then shares one directory fsync.
    ``directories_exist`` skips checking for tmp/, new/ and cur/ (a caller that
    delivered there before); if tmp/ is gone after all, they are made again.
    Paths are strings here: pathlib's objects cost more than the syscalls.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive: {chunk_size}")
    mailbox_dir = os.fspath(mailbox_dir)
    if not directories_exist:
        _make_maildir(mailbox_dir)
    tmp_dir = os.path.join(mailbox_dir, "tmp")
    tmp_path, fd = _create_unique(
        tmp_dir, hostname, sequence, remake=mailbox_dir if directories_exist else None
    )
    new_path = os.path.join(mailbox_dir, "new", os.path.basename(tmp_path))
    try:
        with open(fd, "wb", closefd=True) as out:
            out.write(prefix)
            while chunk := body.read(chunk_size):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.rename(tmp_path, new_path)
        except FileNotFoundError:
            if not directories_exist:
                raise
            _make_maildir(mailbox_dir)  # new/ was removed since the caller last looked
            os.rename(tmp_path, new_path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp_path)
        if isinstance(exc, StorageError) or not isinstance(exc, Exception):
            raise
        raise StorageError(f"cannot deliver into {mailbox_dir}: {exc}") from exc
    return new_path


def link_into_maildir(
    mailbox_dir: Path | str,
    local_copy: str,
    name: str,
    *,
    directories_exist: bool = False,
) -> str | None:
    """Deliver the queue's finished copy by a hard link into new/ under ``name``; its path.

    Write once: ``local_copy`` is already the whole message (trace lines
    included), synced before the 250, so nothing is copied here, and nothing
    written but the entry in new/ (``sync_new_messages``, by the caller, as for
    a written copy).
    A link appears whole, so it goes straight into new/ (tmp/ exists to hide a
    file being written; this one is not).  ``name`` is the same at every
    attempt (``linked_name``): when an attempt is repeated after a crash that
    came after the link, the name exists and is the same file, and that is
    the delivery, not a second copy.

    None when this file system will not link it (another file system, a
    file system without hard links, a full link count): the caller writes a
    copy instead.  StorageError for the failures a copy would have too.
    """
    mailbox_dir = os.fspath(mailbox_dir)
    if not directories_exist or not os.path.isdir(os.path.join(mailbox_dir, "tmp")):
        _make_maildir(mailbox_dir)  # tmp/ too: the mail reader writes there
    # The queue syncs the copy just after making its row visible (queue/sqlite/writer.py),
    # so a delivery may come first: only what is on disk may appear in new/.  When the
    # queue's sync has been, this costs about 40 us and no write.
    try:
        sync_file_data(local_copy)
    except OSError as exc:
        raise StorageError(f"cannot sync the queued copy {local_copy}: {exc}") from exc
    new_path = os.path.join(mailbox_dir, "new", name)
    for attempt in range(2):
        try:
            os.link(local_copy, new_path, follow_symlinks=False)
            return new_path
        except FileExistsError:
            try:
                if os.path.samestat(os.lstat(new_path), os.lstat(local_copy)):
                    return new_path  # linked by an attempt a crash cut short
            except OSError as exc:
                raise StorageError(f"cannot deliver into {mailbox_dir}: {exc}") from exc
            return None  # another file has this name: write a copy under a fresh one
        except FileNotFoundError as exc:
            if attempt or not os.path.exists(local_copy):
                raise StorageError(f"cannot deliver into {mailbox_dir}: {exc}") from exc
            _make_maildir(mailbox_dir)  # new/ was removed since the caller last looked
        except OSError as exc:
            if exc.errno in _CANNOT_LINK:
                return None
            raise StorageError(f"cannot deliver into {mailbox_dir}: {exc}") from exc
    return None


def linked_name(queue_id: str, received_at: float, hostname: str) -> str:
    """The Maildir name of a linked copy: ``<seconds>.M<usec>Q<queue id>.<host>``, the same at
    every attempt (queue ids are unique, so the name is)."""
    seconds = int(received_at)
    usec = int((received_at - seconds) * 1_000_000)
    host = _maildir_host(hostname)
    return f"{seconds}.M{usec}Q{queue_id}.{host}"


def _maildir_host(hostname: str) -> str:
    """The host part of a Maildir name: "/" would split the path, ":" starts the info suffix
    in cur/, so they become ``\\057`` and ``\\072`` as the Maildir spec says."""
    return hostname.replace("/", "\\057").replace(":", "\\072")


#: errno values of link(2) that mean "not here", not "broken": copy instead.
_CANNOT_LINK = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP})


def _make_maildir(mailbox_dir: str) -> None:
    try:
        for name in _SUBDIRECTORIES:
            make_directories(Path(mailbox_dir, name), DIRECTORY_MODE)
    except OSError as exc:
        raise StorageError(f"cannot create Maildir {mailbox_dir}: {exc}") from exc


def sync_new_messages(
    new_dir: Path | str, new_paths: Sequence[Path | str], syncer: DirectorySyncer | None = None
) -> None:
    """Make the renames of ``new_paths`` into ``new_dir`` durable with one directory fsync.

    When the fsync fails the renames may not be durable: the messages are taken
    back (unlinked) so that the retry this error causes leaves no duplicate,
    and StorageError is raised.
    """
    try:
        if syncer is not None:
            syncer.sync(new_dir)  # shared with concurrent deliveries
        else:
            fsync_directory(new_dir)
    except OSError as exc:
        for path in new_paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise StorageError(f"cannot sync {new_dir}: {exc}") from exc


def _create_unique(
    tmp_dir: str, hostname: str, sequence: int | None, *, remake: str | None = None
) -> tuple[str, int]:
    """Open a new file in tmp/ under a fresh Maildir name (O_EXCL: never reuse one).

    ``remake``: the Maildir to make again, once, if tmp/ turns out to be missing
    (a caller that skipped checking for it because it delivered there before).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    last_error: OSError | None = None
    for _ in range(MAX_NAME_ATTEMPTS):
        name = maildir_unique_name(
            hostname,
            now=time.time(),
            pid=os.getpid(),
            random_hex=os.urandom(8).hex(),
            sequence=sequence,
        )
        path = os.path.join(tmp_dir, name)
        try:
            return path, os.open(path, flags, MESSAGE_MODE)
        except FileExistsError as exc:
            last_error = exc
        except FileNotFoundError as exc:
            if remake is None:
                raise StorageError(f"cannot create a file in {tmp_dir}: {exc}") from exc
            _make_maildir(remake)  # tmp/ was removed since the caller last looked
            remake = None
        except OSError as exc:
            raise StorageError(f"cannot create a file in {tmp_dir}: {exc}") from exc
    raise StorageError(f"no unused file name in {tmp_dir}: {last_error}")
