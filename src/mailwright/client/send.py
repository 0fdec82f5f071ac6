"""send(): one message to one server, start to finish (the library form of ``mailwright send``).

Connect, EHLO, STARTTLS when asked for or offered, one transaction, QUIT; the
result holds the reply to every command.
"""

from __future__ import annotations

import email.policy
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import Message

from mailwright.client.channel import Timeouts, Transcript
from mailwright.client.connect import open_session
from mailwright.client.errors import TlsError
from mailwright.client.session import DEFAULT_PORT
from mailwright.client.tls import TlsInfo, TlsMode, TlsPolicy
from mailwright.client.transaction import (
    RecipientReply,
    TransactionResult,
    as_address,
    needs_smtputf8,
)
from mailwright.model import Address
from mailwright.protocol.reply import Reply


@dataclass(frozen=True, slots=True)
class SendResult:
    """The replies of a whole session.

    ``ehlo`` answered the first EHLO (or HELO); with STARTTLS, ``starttls``
    is its reply and ``tls_ehlo`` the reply to the EHLO sent inside TLS,
    whose handshake ``tls_info`` describes.  ``tls_failure`` is the failed
    opportunistic handshake after which the message went in plain text on a
    new connection.  ``quit`` is None when the QUIT went unanswered, which
    changes nothing: the transaction was over.
    """

    greeting: Reply
    ehlo: Reply
    starttls: Reply | None
    tls_ehlo: Reply | None
    transaction: TransactionResult
    quit: Reply | None
    tls_info: TlsInfo | None = None
    tls_failure: TlsError | None = None

    @property
    def tls(self) -> bool:
        return self.tls_ehlo is not None

    @property
    def accepted(self) -> tuple[Address, ...]:
        return self.transaction.accepted

    @property
    def refused(self) -> tuple[RecipientReply, ...]:
        return self.transaction.refused

    @property
    def delivered(self) -> bool:
        return self.transaction.delivered


async def send(
    message: bytes | str | Message,
    *,
    sender: Address | str | None,
    recipients: Iterable[Address | str] | Address | str,
    host: str,
    port: int = DEFAULT_PORT,
    starttls: bool | None = None,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    local_hostname: str | None = None,
    timeout: float = 30.0,
    transcript: Transcript | None = None,
    login: tuple[str, str] | None = None,
) -> SendResult:
    """Send ``message`` from ``sender`` (None: the null path ``<>``) to ``recipients``.

    ``starttls``: True requires it (ExtensionNotOffered if not offered,
    TlsError if the handshake fails; the certificate is verified against
    ``server_hostname``, default ``host``, unless ``ssl_context`` says
    otherwise); False never uses it; None (the default) uses it when offered,
    without checking the certificate, and goes on in plain text on a new
    connection if the handshake fails (RFC 7435 opportunistic security).

    A refused transaction is a result (see ``SendResult.delivered``);
    failures to connect or to keep a session going are SmtpClientError.
    ``timeout`` bounds every step separately.  ``login=(user, password)``
    authenticates (AUTH PLAIN or LOGIN, RFC 4954) after STARTTLS.
    """
    sender_address = as_address(sender) if sender is not None else None
    if isinstance(recipients, Address | str):
        recipients = [recipients]
    rcpt_addresses = [as_address(r) for r in recipients]
    if not rcpt_addresses:
        raise ValueError("send() needs at least one recipient")
    body = _message_bytes(message, needs_smtputf8(sender_address, rcpt_addresses))
    opened = await open_session(
        host,
        port,
        _policy(starttls, ssl_context, server_hostname),
        timeouts=Timeouts.uniform(timeout),
        local_hostname=local_hostname,
        transcript=transcript,
    )
    client = opened.client
    try:
        if login is not None:
            await client.login(*login)
        transaction = await client.send_transaction(sender_address, rcpt_addresses, body)
        quit_reply = await client.quit()
    finally:
        await client.close()
    return SendResult(
        opened.greeting,
        opened.ehlo,
        opened.starttls,
        opened.tls_ehlo,
        transaction,
        quit_reply,
        client.tls_info,
        opened.tls_failure,
    )


def _policy(
    starttls: bool | None, ssl_context: ssl.SSLContext | None, server_hostname: str | None
) -> TlsPolicy:
    """``starttls`` True: VERIFY (or REQUIRED with the caller's context); None: OPPORTUNISTIC."""
    if starttls is False:
        return TlsPolicy(TlsMode.NEVER)
    if ssl_context is None:
        mode = TlsMode.OPPORTUNISTIC if starttls is None else TlsMode.VERIFY
        return TlsPolicy(mode, server_hostname=server_hostname)
    # The caller's context decides what is checked.
    mode = TlsMode.OPPORTUNISTIC if starttls is None else TlsMode.REQUIRED
    return TlsPolicy(mode, (lambda: ssl_context,), server_hostname)


def _message_bytes(message: bytes | str | Message, smtputf8: bool) -> bytes:
    """The message as it goes on the wire (the core still makes every line end CRLF)."""
    if isinstance(message, Message):
        policy = email.policy.SMTPUTF8 if smtputf8 else email.policy.SMTP
        return message.as_bytes(policy=policy)
    if isinstance(message, str):
        return message.encode("utf-8")
    return bytes(message)
