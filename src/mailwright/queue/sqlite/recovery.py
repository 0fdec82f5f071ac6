"""The server's start-up recovery: what a crash (kill -9 at any moment) may have left.

Nothing is acknowledged before its commit, so at the server's open:

- files in spool/tmp were never acknowledged: removed;
- claims (leases) of the previous run are released, so recipients that were
  in flight are delivered again: at-least-once, duplicates only for
  deliveries in flight;
- a message whose body is missing or damaged (a spool file gone, truncated,
  not a regular file, or a BLOB of the wrong length) is moved aside to the
  ``quarantine`` table, its file to spool/corrupt/, with a warning, and the
  rest of the queue is delivered;
- a spool file that no committed row names (renamed in, never committed) is
  removed once the recovery commits.

Write once (writer.py) adds one case.  The local copy of a message with one
local recipient is written without a sync, committed, and then synced together
with the commit before the 250; a crash of the machine in between may leave a
committed row whose file is short, or of the right length with blocks the disk
never got (zeros, or another file's old data).  Its 250 was never sent.  So
after a start that did not follow a clean close (``queue.closed-cleanly`` is
missing: a crash, kill -9 or power cut), each such file is checked against the
CRC-32 its row holds, and one that fails goes to the quarantine with the rest.
A clean close syncs everything first, so after one the check is skipped and a
start with a long queue costs no reading.

Only the server role recovers, and only while no acceptor of an earlier server
runs (locks.no_acceptors_left): an acceptor's body in flight is exactly such an
unreferenced file.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import zlib
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from mailwright.durable import sync_file_system
from mailwright.errors import StorageError
from mailwright.queue.base import QueuedMessage
from mailwright.queue.spool import SPOOL_DIRECTORY_MODE, fsync_directory, make_directories
from mailwright.queue.sqlite.files import QueueLayout, open_regular_file, unlink_if_present
from mailwright.queue.sqlite.locks import no_acceptors_left
from mailwright.queue.sqlite.rows import load
from mailwright.queue.sqlite.schema import UNFINISHED
from mailwright.queue.sqlite.writer import Effects

logger = logging.getLogger("mailwright.queue.sqlite")

#: Octets read at a time when a local copy's CRC is checked.
CRC_READ_SIZE = 256 * 1024


def recover(
    connection: sqlite3.Connection,
    effects: Effects,
    layout: QueueLayout,
    clock: Callable[[], float],
) -> None:
    """Start-up recovery of the server role; see the module docstring."""
    unfinished = _remove_files_in(layout.tmp_dir)
    if unfinished:
        logger.info("queue: removed %d unfinished spool files (never acknowledged)", unfinished)
    released = connection.execute(
        "UPDATE recipients SET lease_until = 0 WHERE lease_until != 0"
    ).rowcount
    if released:
        logger.info("queue: released %d claims of the previous run; they are due again", released)

    closed_cleanly = _take_clean_mark(layout)
    referenced: set[str] = set()
    rows = connection.execute(
        "SELECT queue_id, spool_name, size, body IS NOT NULL, length(body), body_offset,"
        " spool_crc FROM messages"
    ).fetchall()
    checked = 0
    for queue_id, spool_name, size, has_blob, blob_length, offset, crc in rows:
        problem: str | None
        if spool_name is None:
            if not has_blob:
                problem = "has no stored body"
            elif blob_length != size:
                problem = f"stored body has {blob_length} octets, expected {size}"
            else:
                continue
        else:
            referenced.add(spool_name)
            if crc is None or closed_cleanly:
                crc = None
            else:
                checked += 1
            problem = _check_spool_file(layout.spool_dir / spool_name, offset + size, crc)
            if problem is None:
                continue
        _quarantine(connection, effects, layout, clock(), queue_id, spool_name, problem)

    if checked:
        logger.info("queue: checked %d local copies written since the last clean close", checked)
    orphans = [
        Path(entry.path)
        for entry in os.scandir(layout.spool_dir)
        if entry.name not in referenced and not entry.is_dir(follow_symlinks=False)
    ]
    if orphans:
        logger.info("queue: removing %d spool files no message refers to", len(orphans))
        effects.after_commit.extend(partial(unlink_if_present, path) for path in orphans)


def _quarantine(
    connection: sqlite3.Connection,
    effects: Effects,
    layout: QueueLayout,
    now: float,
    queue_id: str,
    spool_name: str | None,
    problem: str,
) -> None:
    """Move a damaged message aside: its rows to ``quarantine``, its file to spool/corrupt/."""
    message = load(connection, queue_id)
    assert message is not None
    where = "the quarantine table"
    if spool_name is not None and os.path.lexists(layout.spool_dir / spool_name):
        try:
            make_directories(layout.corrupt_dir, SPOOL_DIRECTORY_MODE)
            os.rename(layout.spool_dir / spool_name, layout.corrupt_dir / spool_name)
            effects.sync_spool_dir = True
            where += f" and {layout.corrupt_dir / spool_name}"
        except OSError as exc:
            logger.warning("queue %s: cannot move %s aside: %s", queue_id, spool_name, exc)
    blob = connection.execute(
        "SELECT body FROM messages WHERE queue_id = ?", (queue_id,)
    ).fetchone()[0]
    connection.execute(
        "INSERT OR REPLACE INTO quarantine (queue_id, quarantined_at, reason, envelope,"
        " spool_name, body) VALUES (?, ?, ?, ?, ?, ?)",
        (queue_id, now, problem, json.dumps(_describe(message)), spool_name, blob),
    )
    connection.execute("DELETE FROM recipients WHERE queue_id = ?", (queue_id,))
    connection.execute("DELETE FROM messages WHERE queue_id = ?", (queue_id,))
    pending = [str(r.target.address) for r in message.recipients if r.state.value in UNFINISHED]
    logger.warning(
        "queue %s: %s; moved aside to %s, not delivered to %s; the rest of the queue goes on",
        queue_id,
        problem,
        where,
        ", ".join(pending) or "anyone",
    )


def _describe(message: QueuedMessage) -> dict[str, Any]:
    """The envelope of a quarantined message, for the operator (JSON)."""
    return {
        "sender": None if message.sender is None else str(message.sender),
        "received_at": message.received_at,
        "size": message.size,
        "recipients": [
            {
                "address": str(r.target.address),
                "original": str(r.target.original),
                "local": r.target.local,
                "folder": r.target.folder,
                "notify": str(r.target.notify) if r.target.notify.given else None,
                "orcpt": r.target.orcpt,
                "state": r.state.value,
                "attempts": r.attempts,
                "last_reply": str(r.last_reply) if r.last_reply else None,
            }
            for r in message.recipients
        ],
    }


def _take_clean_mark(layout: QueueLayout) -> bool:
    """Whether the last server closed the queue cleanly; the mark is removed (durably) first,
    so a crash of this run is never taken for a clean close at the next start."""
    try:
        os.unlink(layout.clean_mark)
    except FileNotFoundError:
        return False
    fsync_directory(layout.data_dir)
    return True


def mark_closed_cleanly(layout: QueueLayout) -> None:
    """The server closed the queue and everything it committed is on disk: say so, unless an
    acceptor still runs (its commits are its own; the next start checks them).

    First everything written is synced: an acceptor killed between a commit and its
    sync left a file the mark must not vouch for before it is on disk.
    """
    try:
        no_acceptors_left(layout.acceptors_lock)
        sync_file_system(layout.spool_dir)
        os.close(open_regular_file(layout.clean_mark, os.O_WRONLY | os.O_CREAT))
        fsync_directory(layout.data_dir)
    except (OSError, StorageError) as exc:
        logger.info("queue: not marked closed cleanly (%s); the next start checks its files", exc)


def _check_spool_file(path: Path, size: int, crc: int | None = None) -> str | None:
    """What is wrong with a spool file, or None: it exists, is a file of the right size, reads,
    and (``crc`` given) its content has that CRC-32."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return "spool file is missing"
    except OSError as exc:
        return f"spool file cannot be examined: {exc}"
    if not stat.S_ISREG(info.st_mode):
        return "spool file is not a regular file"
    if info.st_size != size:
        return f"spool file has {info.st_size} octets, expected {size}"
    try:
        with open(open_regular_file(path, os.O_RDONLY), "rb") as body:
            if crc is not None:
                found = 0
                while piece := body.read(CRC_READ_SIZE):
                    found = zlib.crc32(piece, found)
                if found != crc:
                    return (
                        "local copy does not hold what was committed (CRC-32 differs): a crash"
                        " before its sync, so its 250 was not sent, or a damaged disk"
                    )
                return None
            body.read(1)
            if size:
                body.seek(size - 1)
                body.read(1)
    except (OSError, StorageError) as exc:
        return f"spool file cannot be read: {exc}"
    return None


def _remove_files_in(directory: Path) -> int:
    removed = 0
    for entry in os.scandir(directory):
        if not entry.is_dir(follow_symlinks=False):
            unlink_if_present(Path(entry.path))
            removed += 1
    return removed
