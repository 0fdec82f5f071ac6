"""One mail transaction in the client role, built from the session's single steps.

``run_transaction`` (``SmtpClient.send_transaction``) sends MAIL, the RCPTs,
and the body (after DATA, or in BDAT chunks when the server offers CHUNKING,
RFC 3030) and returns a ``TransactionResult`` holding every reply, so
a caller (the delivery worker, ``mailwright send``) can act per recipient.
This module holds that procedure, the values it returns, what a transaction
must know before it starts (which MAIL parameters the message calls for) and
the body in pieces.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, BinaryIO

from mailwright.client.errors import ExtensionNotOffered
from mailwright.model import Address
from mailwright.protocol.client import Capabilities
from mailwright.protocol.reply import Reply

if TYPE_CHECKING:
    from mailwright.client.session import SmtpClient

#: The body is read and written in pieces of this size, never whole.
BODY_CHUNK_SIZE = 64 * 1024

MessageBody = bytes | BinaryIO | AsyncIterable[bytes]


@dataclass(frozen=True, slots=True)
class RecipientReply:
    """The reply to one RCPT; None when it was never sent (MAIL refused, without pipelining)."""

    address: Address
    reply: Reply | None

    @property
    def accepted(self) -> bool:
        """250 and 251 (will forward, RFC 5321 3.4) both accept the recipient."""
        return self.reply is not None and self.reply.code in (250, 251)


@dataclass(frozen=True, slots=True)
class DsnRequest:
    """RFC 3461 parameters passed on: RET and ENVID on MAIL; NOTIFY and ORCPT on each RCPT,
    ``recipients`` in the order of the transaction's recipients (None: not given)."""

    ret: str | None = None
    envid: str | None = None
    recipients: tuple[tuple[str | None, str | None], ...] = ()

    def of(self, index: int) -> tuple[str | None, str | None]:
        """(NOTIFY, ORCPT) of the ``index``th recipient."""
        return self.recipients[index] if index < len(self.recipients) else (None, None)


@dataclass(frozen=True, slots=True)
class MailParameters:
    """What MAIL declares: SIZE (RFC 1870), BODY=8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531),
    BODY=BINARYMIME (RFC 3030), and the DSN parameters (RFC 3461) of MAIL and of each RCPT."""

    size: int | None = None
    body_8bit: bool = False
    smtputf8: bool = False
    binarymime: bool = False
    dsn: DsnRequest | None = None

    def check(self, capabilities: Capabilities) -> None:
        """SMTPUTF8 or BINARYMIME missing is ExtensionNotOffered: the message needs it
        (RFC 6531 3.2; RFC 3030 3, a binary body is not converted).

        The other two are the core's to refuse (``LocalProtocolError``), since
        ``offered`` below drops them when the server lacks them.
        """
        if self.smtputf8 and not capabilities.smtputf8:
            raise ExtensionNotOffered("SMTPUTF8", "an address or the message needs it (RFC 6531)")
        if self.binarymime and not capabilities.binary_mime:
            raise ExtensionNotOffered("BINARYMIME", "the message body is binary (RFC 3030 3)")

    def chunked(self, capabilities: Capabilities) -> bool:
        """BDAT rather than DATA: whenever CHUNKING is offered (RFC 3030), always for
        BINARYMIME, which DATA cannot carry."""
        return self.binarymime or capabilities.chunking

    def offered(self, capabilities: Capabilities) -> MailParameters:
        """SIZE and BODY=8BITMIME only where offered: an 8-bit body goes as it is
        otherwise, as most MTAs do rather than refuse.  The DSN parameters only to a
        server that offers DSN (RFC 3461 5.2.2: one that does not is relayed to
        without them, and the reports become ours to make)."""
        return replace(
            self,
            size=self.size if capabilities.has("SIZE") else None,
            body_8bit=self.body_8bit and capabilities.eight_bit_mime,
            dsn=self.dsn if capabilities.has("DSN") else None,
        )


@dataclass(frozen=True, slots=True)
class Envelope:
    """The replies to MAIL, to each RCPT and to DATA (None when DATA was not sent, or the
    body goes in BDAT chunks)."""

    mail: Reply
    recipients: tuple[RecipientReply, ...]
    data: Reply | None

    @property
    def any_accepted(self) -> bool:
        return any(r.accepted for r in self.recipients)


@dataclass(frozen=True, slots=True)
class TransactionResult:
    """Every reply of one mail transaction (RFC 5321 3.3).

    ``data`` is the reply to DATA and ``end_of_data`` the reply after the
    body; both None when DATA was not sent (no recipient accepted, without
    pipelining).  In BDAT chunks (RFC 3030) ``data`` is None and
    ``end_of_data`` the reply to the LAST chunk, or to the first refused one;
    ``chunked`` says so.  The message is delivered to the accepted recipients
    only when ``end_of_data`` is positive.
    """

    mail: Reply
    recipients: tuple[RecipientReply, ...]
    data: Reply | None
    end_of_data: Reply | None
    #: The server offered DSN: the RFC 3461 parameters, if any, went with the commands.
    dsn_passed_on: bool = False
    chunked: bool = False

    @property
    def accepted(self) -> tuple[Address, ...]:
        return tuple(r.address for r in self.recipients if r.accepted)

    @property
    def refused(self) -> tuple[RecipientReply, ...]:
        return tuple(r for r in self.recipients if not r.accepted)

    @property
    def delivered(self) -> bool:
        """The server took responsibility for the message for ``accepted`` (RFC 5321 6.1)."""
        end = self.end_of_data
        return end is not None and 200 <= end.code < 300 and bool(self.accepted)


async def run_transaction(
    client: SmtpClient,
    sender: Address | None,
    recipients: Sequence[Address],
    body: MessageBody,
    mail: MailParameters,
) -> TransactionResult:
    """MAIL, RCPT for each recipient, DATA, and the body after a 354; or, when the server
    offers CHUNKING (always for BINARYMIME), the body in BDAT chunks once a recipient
    was accepted.

    With PIPELINING (RFC 2920) MAIL, the RCPTs and DATA go in one write;
    otherwise each waits for its reply, and DATA is sent only when a
    recipient was accepted.  A bytes body is measured as it will go on the
    wire for SIZE and looked at for 8-bit octets; non-ASCII addresses add
    SMTPUTF8, refused with ExtensionNotOffered, before anything is sent, when
    the server lacks it.
    """
    if isinstance(body, bytes | bytearray | memoryview):
        body = bytes(body)
        size = wire_size(body) if mail.size is None else mail.size
        mail = replace(mail, size=size, body_8bit=mail.body_8bit or not body.isascii())
    mail = replace(mail, smtputf8=mail.smtputf8 or needs_smtputf8(sender, recipients))
    mail = mail.offered(client.capabilities)
    mail.check(client.capabilities)
    dsn = client.capabilities.has("DSN")
    chunked = mail.chunked(client.capabilities)
    if client.capabilities.pipelining:
        envelope = await client.pipelined_envelope(sender, recipients, mail, data=not chunked)
    else:
        envelope = await _one_by_one(client, sender, recipients, mail, data=not chunked)
    if chunked:
        end = None
        if envelope.any_accepted:
            end = await client.send_chunks(body, binary=mail.binarymime)
        return TransactionResult(envelope.mail, envelope.recipients, None, end, dsn, True)
    data = envelope.data
    if data is None or data.code != 354:
        return TransactionResult(envelope.mail, envelope.recipients, data, None, dsn)
    # RFC 2920 3.1: DATA accepted although no RCPT was: end it with a lone dot.
    end = await client.send_body(body if envelope.any_accepted else b"")
    return TransactionResult(envelope.mail, envelope.recipients, data, end, dsn)


async def _one_by_one(
    client: SmtpClient,
    sender: Address | None,
    recipients: Sequence[Address],
    mail: MailParameters,
    *,
    data: bool = True,
) -> Envelope:
    """Each command waits for its reply: no RCPT after a refused MAIL, no DATA unless a
    recipient was accepted (nor at all when ``data`` is False: the body goes in BDAT)."""
    if client.pending_rset:
        await client.rset()
    mail_reply = await client.mail_with(sender, mail)
    if not mail_reply.is_positive:
        return Envelope(mail_reply, tuple(RecipientReply(a, None) for a in recipients), None)
    rcpts = tuple(
        [RecipientReply(a, await client.rcpt_with(a, i, mail)) for i, a in enumerate(recipients)]
    )
    if not data or not any(r.accepted for r in rcpts):
        return Envelope(mail_reply, rcpts, None)
    return Envelope(mail_reply, rcpts, await client.data())


def as_address(value: Address | str) -> Address:
    """An Address from an Address or a plain ``local@domain``."""
    return value if isinstance(value, Address) else Address.from_text(value)


def needs_smtputf8(sender: Address | None, recipients: Iterable[Address]) -> bool:
    """Whether an address of the transaction is not ASCII, which needs SMTPUTF8 (RFC 6531 3.2).

    The one place this is decided, for ``send_transaction``, ``send()``
    (which also serialises a ``Message`` accordingly) and ``probe``.
    """
    return not all(str(a).isascii() for a in [*recipients, sender or ""])


def wire_size(body: bytes) -> int:
    """The size RFC 1870 3 asks to declare: octets with every line ending a CRLF,
    without the end marker or stuffed dots.  Counted, not copied."""
    crlf = body.count(b"\r\n")
    bare = body.count(b"\n") - crlf + body.count(b"\r") - crlf
    unterminated = bool(body) and not body.endswith((b"\n", b"\r"))
    return len(body) + bare + (2 if unterminated else 0)


async def chunks(body: MessageBody, size: int = BODY_CHUNK_SIZE) -> AsyncIterator[bytes]:
    """The body in pieces of at most ``size`` (async iterators: as they come)."""
    if isinstance(body, bytes):
        view = memoryview(body)
        for start in range(0, len(view), size):
            yield bytes(view[start : start + size])
    elif isinstance(body, AsyncIterable):
        async for chunk in body:
            if chunk:
                yield bytes(chunk)
    elif isinstance(body, io.BytesIO):
        while chunk := body.read(size):
            yield chunk
    else:
        # A file: read in a worker thread, so the event loop never waits on the disk.
        while chunk := await asyncio.to_thread(body.read, size):
            yield chunk
