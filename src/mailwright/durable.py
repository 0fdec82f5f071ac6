"""Filesystem steps that make creations and renames survive a crash (queue and Maildir)."""

from __future__ import annotations

import errno
import os
from pathlib import Path


def fsync_directory(path: Path) -> None:
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
