"""The outcome of one delivery attempt: one value from the hop that answered to the queue
and the DSN.

As maddy's ``SMTPError`` travels from the remote server to the bounce, an
``Outcome`` carries the ``Reply`` itself (code, enhanced code, text), never a
string to be parsed again: success, a temporary or a permanent failure is the
reply's class (RFC 5321 4.2.1), and the DSN's Status is its enhanced code.
The fixed replies delivery makes itself are named here, so the same situation
always gets the same words.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mailwright.protocol.reply import Reply, printable_text

__all__ = [
    "DELIVERED_TO_MAILDIR",
    "INTERNAL_ERROR",
    "NO_END_OF_DATA_REPLY",
    "NO_WRITER_IN_TIME",
    "REMOTE_NOT_AVAILABLE",
    "DeliveryStatus",
    "Outcome",
]


class DeliveryStatus(enum.StrEnum):
    """What became of one recipient after an attempt, as the log says it."""

    SENT = "sent"
    DEFERRED = "deferred"
    BOUNCED = "bounced"  # refused for good
    EXPIRED = "expired"  # still failing when the message reached max_age


@dataclass(frozen=True, slots=True)
class Outcome:
    """The reply one attempt ended with, and the host that gave it (``relay``, "" when
    no host answered: local delivery, or no host reached)."""

    reply: Reply
    relay: str = ""
    #: The next hop offered DSN and was given the recipient's NOTIFY, ORCPT, RET and
    #: ENVID: reports are its business from here on, so no "relayed" report is made
    #: (RFC 3461 5.2.2).  False for local delivery and for a next hop without DSN.
    passed_dsn_on: bool = False

    @property
    def success(self) -> bool:
        return self.reply.is_positive

    @property
    def permanent(self) -> bool:
        return self.reply.is_permanent


DELIVERED_TO_MAILDIR = Reply(250, "2.0.0", "delivered to Maildir")
INTERNAL_ERROR = Reply(451, "4.3.0", "Internal error during delivery; tried again later")
REMOTE_NOT_AVAILABLE = Reply(451, "4.4.0", "Remote delivery is not available in this process")
NO_WRITER_IN_TIME = Reply(
    451, "4.3.0", "No Maildir writer became free within the attempt's time; tried again later"
)
NO_END_OF_DATA_REPLY = Reply(451, "4.4.2", "No reply to the end of data")


def bad_mailbox(problem: object) -> Reply:
    return Reply(550, "5.1.3", printable_text(f"Bad mailbox name ({problem})"))


def maildir_failed(problem: object) -> Reply:
    return Reply(451, "4.3.0", printable_text(f"Maildir delivery failed: {problem}"))


def out_of_time(doing: str) -> Reply:
    """The attempt's time (``[delivery] attempt_timeout``) ran out while ``doing``."""
    return Reply(451, "4.4.1", f"Delivery attempt out of time while {doing}; tried again later")


def no_exchanger_reached(domain: str) -> Reply:
    return Reply(451, "4.4.1", f"No mail exchanger of {domain} could be reached")
