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
#: 3: recipients.folder, the Maildir++ folder of a local copy (DMARC quarantine), and
#: the DSN parameters (RFC 3461) of the message and of each recipient; an older
#: mailwright would deliver quarantined mail to the inbox and ignore NOTIFY.  Also the
#: state 'held' (``queue hold``) and the table of attempts (the history the admin API
#: shows), which an older mailwright would ignore.
#: 4: messages.body_offset and spool_crc: the spool file of a message with one local
#: recipient starts with that copy's trace lines (write once); an older mailwright would
#: deliver them twice and relay them.
SCHEMA_VERSION = 4

#: Columns added since schema 2 (ALTER TABLE ADD COLUMN, so a queue keeps its rows):
#: table -> (column, its declaration).  The CREATE TABLE below has them too.
_ADDED_COLUMNS = {
    "messages": (
        ("ret", "TEXT"),
        ("envid", "TEXT"),
        ("body_type", "TEXT"),
        ("smtputf8", "INTEGER NOT NULL DEFAULT 0"),
        ("body_offset", "INTEGER NOT NULL DEFAULT 0"),
        ("spool_crc", "INTEGER"),
    ),
    "recipients": (
        ("folder", "TEXT"),
        ("notify", "TEXT"),
        ("orcpt", "TEXT"),
        ("delay_reported", "INTEGER NOT NULL DEFAULT 0"),
    ),
}

#: The states of a recipient that still waits for something (queue/base.py).
PENDING = (
    RecipientState.QUEUED.value,
    RecipientState.DEFERRED.value,
    RecipientState.BOUNCING.value,
)
PENDING_SQL = "state IN ('queued', 'deferred', 'bouncing')"
#: Not final: pending, or held.  A message stays while any recipient is.
UNFINISHED = (*PENDING, RecipientState.HELD.value)
UNFINISHED_SQL = "state IN ('queued', 'deferred', 'bouncing', 'held')"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS messages (
    queue_id      TEXT PRIMARY KEY,
    sender_local  TEXT,             -- NULL for the null reverse-path <>
    sender_domain TEXT,
    received_at   REAL NOT NULL,
    size          INTEGER NOT NULL,
    spool_name    TEXT,             -- file in spool/ when the body is not in this row
    ret           TEXT,             -- RFC 3461 RET: FULL, HDRS or NULL
    envid         TEXT,             -- RFC 3461 ENVID, xtext decoded
    body_type     TEXT,             -- BODY: 7BIT, 8BITMIME, BINARYMIME or NULL
    smtputf8      INTEGER NOT NULL DEFAULT 0,
    body_offset   INTEGER NOT NULL DEFAULT 0,  -- octets of trace lines before the body
    spool_crc     INTEGER,          -- CRC-32 of a spool file synced after its commit
    -- Last in a new queue: reading the columns before it never walks its overflow
    -- pages.  (A queue upgraded from schema 2 has the four above after it.)
    body          BLOB
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
    notify          TEXT,             -- RFC 3461 NOTIFY as given, NULL when not given
    orcpt           TEXT,             -- RFC 3461 ORCPT as addr-type and decoded address
    delay_reported  INTEGER NOT NULL DEFAULT 0,   -- a "delayed" DSN was made for it
    PRIMARY KEY (queue_id, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS recipients_pending ON recipients (next_attempt) WHERE {PENDING_SQL};
CREATE TABLE IF NOT EXISTS attempts (
    queue_id  TEXT NOT NULL,
    idx       INTEGER NOT NULL,   -- the recipient's
    at        REAL NOT NULL,      -- unix time the result was recorded
    relay     TEXT NOT NULL,      -- the host that answered, '' when none did
    reply     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_of_message ON attempts (queue_id, at);
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
    for table, added in _ADDED_COLUMNS.items():
        columns = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
        for name, declaration in added:
            if name not in columns:  # a queue made by schema 1 or 2
                connection.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _run_script(connection: sqlite3.Connection, script: str) -> None:
    """Run DDL statement by statement (executescript would COMMIT the open transaction)."""
    for statement in script.split(";"):
        if statement.strip():
            connection.execute(statement)
