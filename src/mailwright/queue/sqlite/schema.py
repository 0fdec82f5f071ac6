"""The queue's tables, their version, and the upgrade of an older queue.

``prepare`` runs in the writer thread at every open, inside the open's
transaction: it refuses a queue made by a newer mailwright, creates what is
missing and upgrades what an older one made, then records the version.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mailwright.errors import StorageError
from mailwright.queue.base import RecipientState

#: 2: the state 'bouncing' (failed for good, its DSN still to be made); an older
#: mailwright would not understand it, so it refuses the queue.
#: 3: recipients.folder, the Maildir++ folder of a local copy (DMARC quarantine);
#: an older mailwright would deliver quarantined mail to the inbox.
SCHEMA_VERSION = 3

#: The states of a recipient that still waits for something (queue/base.py).
PENDING = (
    RecipientState.QUEUED.value,
    RecipientState.DEFERRED.value,
    RecipientState.BOUNCING.value,
)
PENDING_SQL = "state IN ('queued', 'deferred', 'bouncing')"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS messages (
    queue_id      TEXT PRIMARY KEY,
    sender_local  TEXT,             -- NULL for the null reverse-path <>
    sender_domain TEXT,
    received_at   REAL NOT NULL,
    size          INTEGER NOT NULL,
    spool_name    TEXT,             -- file in spool/ when the body is not in this row
    body          BLOB              -- last column: reading the others skips it
);
CREATE TABLE IF NOT EXISTS recipients (
    queue_id        TEXT NOT NULL,
    idx             INTEGER NOT NULL,
    address_local   TEXT NOT NULL,
    address_domain  TEXT NOT NULL,
    original_local  TEXT NOT NULL,
    original_domain TEXT NOT NULL,
    local           INTEGER NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt    REAL NOT NULL,
    last_reply      TEXT,
    lease_until     REAL NOT NULL DEFAULT 0,
    folder          TEXT,             -- Maildir++ folder of a local copy, NULL for the inbox
    PRIMARY KEY (queue_id, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS recipients_pending ON recipients (next_attempt) WHERE {PENDING_SQL};
CREATE TABLE IF NOT EXISTS quarantine (
    queue_id       TEXT PRIMARY KEY,
    quarantined_at REAL NOT NULL,
    reason         TEXT NOT NULL,
    envelope       TEXT NOT NULL,   -- JSON: sender, recipients and their states
    spool_name     TEXT,            -- moved to spool/corrupt/
    body           BLOB
);
"""


def prepare(connection: sqlite3.Connection, data_dir: Path) -> None:
    """Create or upgrade the tables to SCHEMA_VERSION; StorageError for a newer queue."""
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"the queue in {data_dir} has schema {version}, newer than this"
            f" mailwright understands ({SCHEMA_VERSION})"
        )
    _run_script(connection, _SCHEMA)
    if version < 2:
        # Schema 1's index of due recipients left out 'bouncing': claims could not use it.
        connection.execute("DROP INDEX IF EXISTS recipients_due")
    columns = {row[1] for row in connection.execute("PRAGMA table_info(recipients)")}
    if "folder" not in columns:  # made by schema 1 or 2
        connection.execute("ALTER TABLE recipients ADD COLUMN folder TEXT")
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _run_script(connection: sqlite3.Connection, script: str) -> None:
    """Run DDL statement by statement (executescript would COMMIT the open transaction)."""
    for statement in script.split(";"):
        if statement.strip():
            connection.execute(statement)
