"""The message ``send`` sends: the user's bytes, plus the headers RFC 5322 requires if missing.

RFC 5322 3.6 requires Date and From; Message-ID and To are expected by every
mail reader.  A test message written by hand often has none of them, and a
server may refuse or score such mail, so they are added at the top when
absent.  The rest of the message is sent byte for byte: the email package is
used only to learn which headers the header section already has, never to
re-serialise the message (that would refold headers and re-encode bodies).
"""

from __future__ import annotations

import email.policy
from collections.abc import Sequence
from datetime import datetime
from email.parser import BytesHeaderParser
from email.utils import format_datetime, make_msgid
from typing import Final

from mailwright.model import Address
from mailwright.syntax import is_valid_domain

DEFAULT_MESSAGE: Final = (
    b"Subject: mailwright test\r\n\r\nThis is a test message sent with mailwright send.\r\n"
)
#: Message-ID's right-hand side when the sender's domain cannot be used (RFC 2606 .invalid).
FALLBACK_ID_DOMAIN: Final = "mailwright.invalid"
#: RFC 5322 2.1.1: lines SHOULD be at most 78 characters; longer To: headers are folded.
FOLD_AT: Final = 78


def complete_message(
    message: bytes,
    *,
    sender: Address | None,
    recipients: Sequence[Address],
    now: datetime,
) -> tuple[bytes, tuple[str, ...]]:
    """``message`` with Date, Message-ID, From and To prepended where missing.

    Returns the bytes to send and the names of the headers added.  ``now``
    must be timezone-aware (Date carries the offset).  A null sender adds no
    From, since there is no address to put there.
    """
    eol = _line_ending(message)
    present = _header_names(message)
    added: list[tuple[str, str]] = []
    if "date" not in present:
        added.append(("Date", format_datetime(now)))
    if "message-id" not in present:
        added.append(("Message-ID", make_msgid(domain=_id_domain(sender))))
    if "from" not in present and sender is not None:
        added.append(("From", str(sender)))
    if "to" not in present:
        added.append(("To", _address_list([str(r) for r in recipients], eol)))
    if not added:
        return message, ()
    head = b"".join(f"{name}: {value}".encode() + eol for name, value in added)
    if not present and not message.startswith((b"\r\n", b"\n")):
        head += eol  # the message had no header section: everything in it is body
    return head + message, tuple(name for name, _ in added)


def _header_names(message: bytes) -> set[str]:
    """Lower-cased names of the fields in the header section (up to the first empty line).

    Only the header section is handed to the parser, so a large body is not copied.
    """
    ends = [i + 2 for i in (message.find(b"\r\n\r\n"),) if i >= 0]
    ends += [i + 1 for i in (message.find(b"\n\n"),) if i >= 0]
    head = message[: min(ends)] if ends else message
    parsed = BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
    return {name.lower() for name in parsed}


def _line_ending(message: bytes) -> bytes:
    """The message's own line ending, so added lines match it (the client makes all CRLF anyway)."""
    newline = message.find(b"\n")
    if newline < 0:
        return b"\r\n"
    return b"\r\n" if message[newline - 1 : newline] == b"\r" else b"\n"


def _id_domain(sender: Address | None) -> str:
    """The sender's domain for Message-ID (``make_msgid`` would otherwise look up this
    host's FQDN, which can block on DNS); address literals do not fit, so fall back."""
    if sender is not None and is_valid_domain(sender.domain):
        return sender.domain
    return FALLBACK_ID_DOMAIN


def _address_list(addresses: list[str], eol: bytes) -> str:
    """Addresses separated by commas, one per folded line when they would not fit on one."""
    one_line = ", ".join(addresses)
    if len("To: ") + len(one_line) <= FOLD_AT:
        return one_line
    return ("," + eol.decode() + " ").join(addresses)
