"""One small hierarchy of errors for the whole package.

Errors say whose fault it was (as in h11): a *local* protocol error means our own
caller misused an API; a *remote* one means the peer broke the protocol and the
session cannot continue.  Recoverable mistakes of an SMTP client are not
exceptions at all: the protocol core reports them as events carrying the reply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailwright.protocol.reply import Reply


class MailwrightError(Exception):
    """Base class of every error raised by mailwright."""


class ProtocolError(MailwrightError):
    """The SMTP conversation cannot go on as it is."""

    def __init__(self, message: str, reply: Reply | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class LocalProtocolError(ProtocolError):
    """Our own code broke the protocol (a bug in the caller of the core)."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol in a way the session cannot recover from."""


class DeliveryError(MailwrightError):
    """A delivery attempt failed; ``temporary`` says whether to retry.

    ``reply`` is what the peer (or we) answered; ``reason`` is kept for the log
    only and is never sent to a client.  Errors are temporary unless proven
    permanent.
    """

    def __init__(self, reply: Reply, *, temporary: bool = True, reason: str = "") -> None:
        super().__init__(str(reply) if not reason else f"{reply} ({reason})")
        self.reply = reply
        self.temporary = temporary
        self.reason = reason


class StorageError(MailwrightError):
    """The queue or a mailbox could not durably store a message."""


class QueueUnavailable(StorageError):
    """The queue's database cannot be reached now (PostgreSQL down, a connection cut).

    Temporary by nature: new mail gets 451 4.3.0, deliveries pause, and at
    start-up ``mailwright serve`` exits 75 (EX_TEMPFAIL) so a service manager
    tries again.
    """


class ConfigError(MailwrightError):
    """A configuration key has a problem; the message names both."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem
