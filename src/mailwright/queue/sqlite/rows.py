"""Rows to values and back: the columns read, and the SQL shared by several operations."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mailwright.model import Address, MailOptions, Notify
from mailwright.protocol.reply import Reply, printable_text
from mailwright.queue.base import QueuedMessage, QueuedRecipient, RecipientState, Target
from mailwright.queue.sqlite.files import unlink_if_present
from mailwright.queue.sqlite.writer import Effects

RECIPIENT_COLUMNS = (
    "queue_id, idx, address_local, address_domain, original_local, original_domain, "
    "local, state, attempts, next_attempt, last_reply, folder, notify, orcpt, delay_reported"
)
#: The columns of a message both stores have (PostgreSQL's too).
MESSAGE_COLUMNS = (
    "queue_id, sender_local, sender_domain, received_at, size, ret, envid, body_type, smtputf8"
)
#: With where SQLite keeps a local copy (write once), for ``local_copy``.
CLAIM_COLUMNS = MESSAGE_COLUMNS + ", spool_name, body_offset"


def split(address: Address | None) -> tuple[str | None, str | None]:
    """An address as two columns, so a quoted local part round-trips exactly."""
    if address is None:
        return None, None
    return address.local_part, address.domain


def message_of(
    row: Sequence[Any], recipients: Iterable[Sequence[Any]], spool_dir: str | None = None
) -> QueuedMessage:
    """A message of MESSAGE_COLUMNS, or of CLAIM_COLUMNS with ``spool_dir`` to fill
    ``local_copy``."""
    queue_id, sender_local, sender_domain, received_at, size, ret, envid, body, utf8 = row[:9]
    spool_name, body_offset = row[9:11] if spool_dir is not None else (None, 0)
    sender = None if sender_local is None else Address(sender_local, sender_domain)
    return QueuedMessage(
        queue_id=queue_id,
        sender=sender,
        received_at=received_at,
        size=size,
        recipients=tuple(recipient_of(r) for r in recipients),
        options=MailOptions(ret=ret, envid=envid, body=body, smtputf8=bool(utf8)),
        local_copy=(
            os.path.join(spool_dir, spool_name)
            if body_offset and spool_dir is not None and spool_name is not None
            else None
        ),
    )


def recipient_of(row: Sequence[Any]) -> QueuedRecipient:
    queue_id, index, address_local, address_domain = row[:4]
    original_local, original_domain, local, state, attempts, next_attempt, last_reply = row[4:11]
    return QueuedRecipient(
        queue_id=queue_id,
        index=index,
        target=Target(
            address=Address(address_local, address_domain),
            original=Address(original_local, original_domain),
            local=bool(local),
            folder=row[11],
            notify=Notify.parse(row[12]),
            orcpt=row[13],
        ),
        delay_reported=bool(row[14]),
        state=RecipientState(state),
        attempts=attempts,
        next_attempt=next_attempt,
        last_reply=stored_reply(last_reply),
    )


def load(connection: sqlite3.Connection, queue_id: str) -> QueuedMessage | None:
    row = connection.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE queue_id = ?", (queue_id,)
    ).fetchone()
    if row is None:
        return None
    recipients = connection.execute(
        f"SELECT {RECIPIENT_COLUMNS} FROM recipients WHERE queue_id = ? ORDER BY idx", (queue_id,)
    ).fetchall()
    return message_of(row, recipients)


def delete(
    connection: sqlite3.Connection, effects: Effects, spool_dir: Path, queue_id: str
) -> bool:
    """Delete a message's rows, and its spool file once that commits; False: no such message."""
    row = connection.execute(
        "SELECT spool_name FROM messages WHERE queue_id = ?", (queue_id,)
    ).fetchone()
    if row is None:
        return False
    connection.execute("DELETE FROM recipients WHERE queue_id = ?", (queue_id,))
    connection.execute("DELETE FROM attempts WHERE queue_id = ?", (queue_id,))
    connection.execute("DELETE FROM messages WHERE queue_id = ?", (queue_id,))
    if row[0] is not None:
        # After the commit: a crash before it must leave the body in place.
        path = spool_dir / row[0]
        effects.after_commit.append(lambda: unlink_if_present(path))
    return True


def stored_reply(text: str | None) -> Reply | None:
    """A reply as the table keeps it (its one-line text form), a Reply again.

    Text that is not a reply (written by hand, or by a mailwright that stored
    free text) is kept as the text of a 451, so it is still shown and reported.
    """
    if not text:
        return None
    try:
        return Reply.parse(text)
    except ValueError:
        return Reply(451, None, printable_text(text))
