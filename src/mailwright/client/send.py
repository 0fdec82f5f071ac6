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

from mailwright.client.errors import CommandRefused, ExtensionNotOffered, TlsError
from mailwright.client.session import (
    DEFAULT_PORT,
    RecipientReply,
    SmtpClient,
    Timeouts,
    TransactionResult,
    Transcript,
    as_address,
)
from mailwright.model import Address
from mailwright.protocol.reply import Reply


@dataclass(frozen=True, slots=True)
class SendResult:
    """The replies of a whole session.

    ``ehlo`` answered the first EHLO (or HELO); with STARTTLS, ``starttls``
    is its 220 and ``tls_ehlo`` the reply to the EHLO sent inside TLS.
    ``quit`` is None when the QUIT went unanswered, which changes nothing:
    the transaction was over.
    """

    greeting: Reply
    ehlo: Reply
    starttls: Reply | None
    tls_ehlo: Reply | None
    transaction: TransactionResult
    quit: Reply | None

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


def opportunistic_tls_context() -> ssl.SSLContext:
    """A context that encrypts without checking the certificate.

    For opportunistic STARTTLS only (RFC 7435, RFC 3207 4.1): the alternative
    to an unauthenticated TLS session is plain text, not a verified one.
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


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
    body = _message_bytes(message, _needs_smtputf8(sender_address, rcpt_addresses))
    options = _Options(starttls, ssl_context, server_hostname or host, login)
    use_tls = starttls is not False
    while True:
        client = SmtpClient(timeouts=Timeouts.uniform(timeout), transcript=transcript)
        try:
            await client.connect(host, port, local_hostname=local_hostname)
            result = await _session(client, options, use_tls, sender_address, rcpt_addresses, body)
        finally:
            await client.close()
        if result is not None:
            return result
        use_tls = False  # the handshake failed and spoilt the connection: again, in plain text


@dataclass(frozen=True, slots=True)
class _Options:
    """The TLS choices of one send(), carried into each session attempt."""

    starttls: bool | None
    ssl_context: ssl.SSLContext | None
    server_hostname: str
    login: tuple[str, str] | None = None


async def _session(
    client: SmtpClient,
    options: _Options,
    use_tls: bool,
    sender: Address | None,
    recipients: list[Address],
    body: bytes,
) -> SendResult | None:
    """One connected session; None when opportunistic TLS failed and a retry is due."""
    assert client.greeting is not None
    ehlo = await client.ehlo()
    starttls_reply = tls_ehlo = None
    required = options.starttls is True
    if use_tls and client.capabilities.starttls:
        context = options.ssl_context or (
            ssl.create_default_context() if required else opportunistic_tls_context()
        )
        try:
            starttls_reply = await client.starttls(context, options.server_hostname)
            tls_ehlo = client.ehlo_reply
        except TlsError:
            if required:
                raise
            return None
        except CommandRefused as exc:
            # A 454 leaves the plain-text session usable (RFC 3207 4); a 421 does not.
            if required or not client.connected or exc.command != "STARTTLS":
                raise
            starttls_reply = exc.reply
    elif required:
        raise ExtensionNotOffered("STARTTLS", "starttls=True requires it")
    if options.login is not None:
        await client.login(*options.login)
    transaction = await client.send_transaction(sender, recipients, body)
    quit_reply = await client.quit()
    return SendResult(client.greeting, ehlo, starttls_reply, tls_ehlo, transaction, quit_reply)


def _message_bytes(message: bytes | str | Message, smtputf8: bool) -> bytes:
    """The message as it goes on the wire (the core still makes every line end CRLF)."""
    if isinstance(message, Message):
        policy = email.policy.SMTPUTF8 if smtputf8 else email.policy.SMTP
        return message.as_bytes(policy=policy)
    if isinstance(message, str):
        return message.encode("utf-8")
    return bytes(message)


def _needs_smtputf8(sender: Address | None, recipients: list[Address]) -> bool:
    return not all(str(a).isascii() for a in [*recipients, sender or ""])
