"""The client role of SMTP over asyncio: connect, EHLO, STARTTLS, send, per-recipient replies.

``send()`` delivers one message in one call; ``SmtpClient`` is the session for
callers that need more (several transactions on one connection, probes).
Both sit on the sans-I/O core ``mailwright.protocol.client.ClientConnection``.
"""

from mailwright.client.errors import (
    CommandRefused,
    ConnectError,
    ConnectionLost,
    ExtensionNotOffered,
    MalformedReply,
    SmtpClientError,
    SmtpTimeout,
    TlsError,
)
from mailwright.client.send import SendResult, opportunistic_tls_context, send
from mailwright.client.session import (
    BODY_CHUNK_SIZE,
    DEFAULT_PORT,
    MessageBody,
    RecipientReply,
    SmtpClient,
    Timeouts,
    TransactionResult,
    Transcript,
)
from mailwright.client.stream import Stream, TcpStream
from mailwright.protocol.client import Capabilities

__all__ = [
    "BODY_CHUNK_SIZE",
    "DEFAULT_PORT",
    "Capabilities",
    "CommandRefused",
    "ConnectError",
    "ConnectionLost",
    "ExtensionNotOffered",
    "MalformedReply",
    "MessageBody",
    "RecipientReply",
    "SendResult",
    "SmtpClient",
    "SmtpClientError",
    "SmtpTimeout",
    "Stream",
    "TcpStream",
    "Timeouts",
    "TlsError",
    "TransactionResult",
    "Transcript",
    "opportunistic_tls_context",
    "send",
]
