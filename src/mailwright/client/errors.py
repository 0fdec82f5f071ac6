"""Errors of the client transport: what can go wrong between us and a server.

Everything the layers below raise is mapped to one of these, each at one
boundary, so a caller catches ``SmtpClientError`` and never a socket error or
a bare protocol error: ``OSError``, ``ssl.SSLError`` and ``TimeoutError`` in
stream.py (``_boundary``), and the protocol core's ``RemoteProtocolError`` (a
reply that breaks the grammar or a limit) in channel.py (``next_reply``), as
``MalformedReply``.

A refused *transaction* is not an error: it is a result carrying the replies
(``TransactionResult``).  These errors are for sessions that could not get to,
or through, a transaction.
"""

from __future__ import annotations

from mailwright.errors import MailwrightError, RemoteProtocolError
from mailwright.protocol.reply import Reply


class SmtpClientError(MailwrightError):
    """Base class of the client's errors.

    ``reply`` is the server's last word when there was one (e.g. the 421 it
    sent before closing), so the reason reaches logs and bounces.
    """

    def __init__(self, message: str, *, reply: Reply | None = None) -> None:
        super().__init__(message)
        self.reply = reply


class ConnectError(SmtpClientError):
    """No connection could be opened (name not found, refused, unreachable)."""


class SmtpTimeout(SmtpClientError):
    """An operation took longer than its timeout; ``operation`` says which."""

    def __init__(self, operation: str, seconds: float | None) -> None:
        super().__init__(f"timed out after {seconds}s: {operation}")
        self.operation = operation
        self.seconds = seconds


class ConnectionLost(SmtpClientError):
    """The server closed or reset the connection while we still needed it."""


class TlsError(SmtpClientError):
    """The TLS handshake failed (certificate not trusted, no common protocol ...)."""


class CommandRefused(SmtpClientError):
    """The server refused a command the session cannot go on without (greeting, EHLO, STARTTLS)."""

    def __init__(self, command: str, reply: Reply) -> None:
        super().__init__(f"{command} refused: {reply}", reply=reply)
        self.command = command


class ExtensionNotOffered(SmtpClientError):
    """The message or the caller needs an extension the server did not offer."""

    def __init__(self, keyword: str, why: str) -> None:
        super().__init__(f"the server does not offer {keyword}: {why}")
        self.keyword = keyword


class MalformedReply(SmtpClientError, RemoteProtocolError):
    """The server sent something that is not an SMTP reply, or a reply past a limit.

    A line without a three-digit code, a line longer than ``max_reply_line``,
    more than ``max_reply_lines`` lines (protocol/client.py).  The connection
    is unusable after it.  It is a ``RemoteProtocolError`` too (whose fault it
    was); the message quotes the start of what arrived, escaped.
    """

    def __init__(self, message: str) -> None:
        SmtpClientError.__init__(self, message)
