"""The queue's tables in PostgreSQL, their version, and the upgrade of an older queue.

``prepare`` runs at every open, in one transaction under a transaction-level
advisory lock, so nodes starting together do not both create or upgrade: it
refuses a schema newer than this code, creates what is missing, runs the
upgrades from the stored version, and records SCHEMA_VERSION in
``mailwright_schema``.

Give mailwright a database of its own: the table names are plain.
"""

from __future__ import annotations

from typing import Any

import psycopg

from mailwright.errors import StorageError

#: 1: messages, recipients (with the DSN columns, folder, leases by node, the state 'held'),
#: body_chunks, attempts (the history), nodes.
SCHEMA_VERSION = 1
#: The statements that take a queue of version N to N + 1: ``UPGRADES[N]``.
UPGRADES: dict[int, tuple[str, ...]] = {}
#: Classes (first key) of our advisory locks, so they never meet another application's.
SCHEMA_LOCK = 0x6D77_0001  # "mw" 1: held while the schema is prepared
NODE_LOCK = 0x6D77_0002  # "mw" 2: held by a live node, keyed by its nodes.id

PENDING = ("queued", "deferred", "bouncing")
PENDING_SQL = "state IN ('queued', 'deferred', 'bouncing')"
#: Not final: pending, or held (``queue hold``).  A message stays while any recipient is.
UNFINISHED_SQL = "state IN ('queued', 'deferred', 'bouncing', 'held')"

#: Body pieces are rows of this many octets: a reader holds one at a time.
CHUNK_SIZE = 256 * 1024

_TABLES = (
    """CREATE TABLE IF NOT EXISTS messages (
        queue_id      text PRIMARY KEY,
        sender_local  text,                 -- NULL for the null reverse-path <>
        sender_domain text,
        received_at   double precision NOT NULL,
        size          bigint NOT NULL,
        chunks        integer NOT NULL,     -- rows in body_chunks
        ret           text,                 -- RFC 3461 RET: FULL, HDRS or NULL
        envid         text,                 -- RFC 3461 ENVID, xtext decoded
        body_type     text,                 -- BODY: 7BIT, 8BITMIME, BINARYMIME or NULL
        smtputf8      boolean NOT NULL DEFAULT false,
        accepted_by   text NOT NULL         -- the node that answered 250
    )""",
    """CREATE TABLE IF NOT EXISTS recipients (
        queue_id        text NOT NULL REFERENCES messages ON DELETE CASCADE,
        idx             integer NOT NULL,
        address_local   text NOT NULL,
        address_domain  text NOT NULL,
        original_local  text NOT NULL,
        original_domain text NOT NULL,
        local           boolean NOT NULL,
        state           text NOT NULL CHECK (state IN
                            ('queued', 'deferred', 'delivered', 'bounced', 'bouncing', 'held')),
        attempts        integer NOT NULL DEFAULT 0,
        next_attempt    double precision NOT NULL,
        last_reply      text,
        lease_until     double precision NOT NULL DEFAULT 0,  -- 0: not claimed
        lease_node      text,                 -- the node holding the claim
        folder          text,                 -- Maildir++ folder of a local copy
        notify          text,                 -- RFC 3461 NOTIFY as given
        orcpt           text,                 -- RFC 3461 ORCPT, addr-type;decoded address
        delay_reported  boolean NOT NULL DEFAULT false,
        PRIMARY KEY (queue_id, idx)
    )""",
    f"CREATE INDEX IF NOT EXISTS recipients_due ON recipients (next_attempt) WHERE {PENDING_SQL}",
    "CREATE INDEX IF NOT EXISTS recipients_leased ON recipients (lease_node)"
    " WHERE lease_node IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS body_chunks (
        queue_id text NOT NULL REFERENCES messages ON DELETE CASCADE,
        seq      integer NOT NULL,
        data     bytea NOT NULL,
        PRIMARY KEY (queue_id, seq)
    )""",
    # Mail is mostly compressed or base64 already: spare the CPU of compressing it again.
    "ALTER TABLE body_chunks ALTER COLUMN data SET STORAGE EXTERNAL",
    """CREATE TABLE IF NOT EXISTS attempts (
        queue_id text NOT NULL REFERENCES messages ON DELETE CASCADE,
        idx      integer NOT NULL,              -- the recipient's
        at       double precision NOT NULL,     -- unix time the result was recorded
        relay    text NOT NULL,                 -- the host that answered, '' when none did
        reply    text NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS attempts_of_message ON attempts (queue_id, at)",
    """CREATE TABLE IF NOT EXISTS nodes (
        id         serial PRIMARY KEY,
        name       text NOT NULL UNIQUE,
        started_at timestamptz
    )""",
)


async def prepare(connection: psycopg.AsyncConnection[Any], shown: str) -> None:
    """Create or upgrade the tables to SCHEMA_VERSION; StorageError for a newer queue."""
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(%s, 0)", (SCHEMA_LOCK,))
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS mailwright_schema (version integer NOT NULL)"
        )
        row = await (await connection.execute("SELECT version FROM mailwright_schema")).fetchone()
        version = None if row is None else int(row[0])
        if version is not None and version > SCHEMA_VERSION:
            raise StorageError(
                f"the queue in {shown} has schema {version}, newer than this"
                f" mailwright understands ({SCHEMA_VERSION})"
            )
        for statement in _TABLES:
            await connection.execute(statement)
        for step in range(version or SCHEMA_VERSION, SCHEMA_VERSION):
            for statement in UPGRADES[step]:
                await connection.execute(statement)
        if version is None:
            await connection.execute(
                "INSERT INTO mailwright_schema (version) VALUES (%s)", (SCHEMA_VERSION,)
            )
        elif version != SCHEMA_VERSION:
            await connection.execute("UPDATE mailwright_schema SET version = %s", (SCHEMA_VERSION,))
