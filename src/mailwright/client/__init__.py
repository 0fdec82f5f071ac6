"""The client role of SMTP over asyncio: connect, EHLO, STARTTLS, send, per-recipient replies.

``SmtpClient`` is one session, driven a step at a time (client/session.py);
``open_session`` opens one under a TLS policy (client/connect.py), the way
delivery, ``mailwright send`` and ``probe`` all do; ``send()`` delivers one
message in one call.  All sit on the sans-I/O core
``mailwright.protocol.client.ClientConnection``.
"""

from mailwright.client.channel import Timeouts, Transcript
from mailwright.client.connect import OpenedSession, SessionObserver, open_session
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
from mailwright.client.send import SendResult, send
from mailwright.client.session import DEFAULT_PORT, SmtpClient
from mailwright.client.stream import Stream, TcpStream
from mailwright.client.tls import (
    TlsInfo,
    TlsMode,
    TlsPolicy,
    opportunistic_tls_context,
    verifying_context,
)
from mailwright.client.transaction import (
    BODY_CHUNK_SIZE,
    DsnRequest,
    MessageBody,
    RecipientReply,
    TransactionResult,
    needs_smtputf8,
)
from mailwright.protocol.client import Capabilities

__all__ = [
    "BODY_CHUNK_SIZE",
    "DEFAULT_PORT",
    "Capabilities",
    "CommandRefused",
    "ConnectError",
    "ConnectionLost",
    "DsnRequest",
    "ExtensionNotOffered",
    "MalformedReply",
    "MessageBody",
    "OpenedSession",
    "RecipientReply",
    "SendResult",
    "SessionObserver",
    "SmtpClient",
    "SmtpClientError",
    "SmtpTimeout",
    "Stream",
    "TcpStream",
    "Timeouts",
    "TlsError",
    "TlsInfo",
    "TlsMode",
    "TlsPolicy",
    "TransactionResult",
    "Transcript",
    "needs_smtputf8",
    "open_session",
    "opportunistic_tls_context",
    "send",
    "verifying_context",
]
