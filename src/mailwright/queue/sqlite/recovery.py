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
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from mailwright.errors import StorageError
from mailwright.queue.base import QueuedMessage
from mailwright.queue.spool import SPOOL_DIRECTORY_MODE, make_directories
from mailwright.queue.sqlite.files import QueueLayout, open_regular_file, unlink_if_present
from mailwright.queue.sqlite.rows import load
from mailwright.queue.sqlite.schema import UNFINISHED
from mailwright.queue.sqlite.writer import Effects

logger = logging.getLogger("mailwright.queue.sqlite")


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

    referenced: set[str] = set()
    rows = connection.execute(
        "SELECT queue_id, spool_name, size, body IS NOT NULL, length(body) FROM messages"
    ).fetchall()
    for queue_id, spool_name, size, has_blob, blob_length in rows:
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
            problem = _check_spool_file(layout.spool_dir / spool_name, size)
            if problem is None:
                continue
        _quarantine(connection, effects, layout, clock(), queue_id, spool_name, problem)

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


def _check_spool_file(path: Path, size: int) -> str | None:
    """What is wrong with a spool file, or None: it exists, is a file of the right size, reads."""
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
