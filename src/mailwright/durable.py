"""Filesystem steps that make creations and renames survive a crash (queue and Maildir)."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import cast


def fsync_directory(path: Path | str) -> None:
    """Make a directory's entries (creations, renames) durable: fsync the directory itself."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_directories(path: Path, mode: int) -> None:
    """Create ``path`` and missing ancestors, syncing each parent that gained an entry."""
    missing: list[Path] = []
    probe = path
    while not probe.is_dir():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            if not directory.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(directory)) from None
        fsync_directory(directory.parent)


class DirectorySyncer:
    """fsync of directories shared by concurrent callers (group commit for renames).

    A caller that renamed a file into a directory calls ``sync(path)`` and
    returns once an fsync of that directory has *started after* its call: that
    fsync covers its rename.  Callers arriving while one fsync runs share the
    next one, so N concurrent Maildir deliveries cost about one directory fsync
    instead of N.  Thread-safe; one instance per worker, no globals.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, _SyncState] = {}

    def sync(self, path: Path | str) -> None:
        with self._lock:
            state = self._states.setdefault(os.fspath(path), _SyncState())
        with state.condition:
            state.requested += 1
            mine = state.requested
            while state.completed < mine:
                if state.running:
                    state.condition.wait()
                    continue
                state.running = True
                covers = state.requested  # every rename requested so far is on disk already
                state.condition.release()
                try:
                    self._fsync(path)
                except BaseException:
                    state.condition.acquire()
                    state.running = False
                    state.condition.notify_all()
                    raise
                state.condition.acquire()
                state.running = False
                state.completed = max(state.completed, covers)
                state.condition.notify_all()

    def _fsync(self, path: Path | str) -> None:
        fsync_directory(path)


class _SyncState:
    __slots__ = ("completed", "condition", "requested", "running")

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.requested = 0
        self.completed = 0
        self.running = False


def _load_syncfs() -> Callable[[int], int] | None:
    """libc's ``syncfs(2)`` (Linux), or None.

    Python has no ``os.syncfs``, so it is called through ctypes: one system call
    that writes back every dirty file of one file system and flushes the disk's
    cache, where the alternative is an fsync per file.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        function = libc.syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return cast("Callable[[int], int]", function)


_SYNCFS = _load_syncfs()


def has_syncfs() -> bool:
    """True where ``sync_file_system`` is one ``syncfs`` call (Linux)."""
    return _SYNCFS is not None


def sync_file_data(path: Path | str) -> None:
    """Make a file's data durable (``fdatasync``), opened read-only and never through a link."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def sync_file_system(directory: Path | str) -> None:
    """Make everything written on ``directory``'s file system durable: one ``syncfs``.

    Raises OSError when the write-back failed (syncfs reports a write-back error
    of the file system since the last call, Linux 5.8 and later).  Where there is
    no syncfs, ``os.sync()`` (every file system): callers on a hot path check
    ``has_syncfs`` and sync file by file instead.
    """
    if _SYNCFS is None:
        os.sync()
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _SYNCFS(fd) != 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error), os.fspath(directory))
    finally:
        os.close(fd)
