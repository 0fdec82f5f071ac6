"""SmtpClient: one SMTP session in the client role, over asyncio.

A thin transport around ``ClientConnection`` (the sans-I/O core decides what
may be sent and parses what comes back); this module moves bytes, keeps time
and turns replies into results.

Refusals inside a transaction are results, not exceptions: ``send_transaction``
returns the reply to MAIL, to every RCPT, to DATA and to the end of data, so a
caller (the delivery worker, ``mailwright send``) can act per recipient.
Exceptions are kept for sessions that cannot go on: the connection failed or
timed out (client/errors.py), the server refused a command the session needs
(``CommandRefused``), or broke the protocol (``RemoteProtocolError``).
"""

from __future__ import annotations

import asyncio
import base64
import io
import socket
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO, Literal

from mailwright.client.errors import (
    CommandRefused,
    ConnectionLost,
    ExtensionNotOffered,
)
from mailwright.client.stream import Stream, TcpStream
from mailwright.errors import MailwrightError
from mailwright.model import Address
from mailwright.protocol.client import (
    DEFAULT_MAX_REPLY_LINE,
    DEFAULT_MAX_REPLY_LINES,
    Capabilities,
    ClientConnection,
    ReplyReceived,
)
from mailwright.protocol.commands import is_valid_domain
from mailwright.protocol.events import ConnectionClosed
from mailwright.protocol.reply import Reply

DEFAULT_PORT = 25
#: The body is read and written in pieces of this size, never whole.
BODY_CHUNK_SIZE = 64 * 1024
READ_SIZE = 64 * 1024

#: ("C", line) for what we sent, ("S", line) for what the server answered.
Transcript = list[tuple[Literal["C", "S"], str]]
MessageBody = bytes | BinaryIO | AsyncIterable[bytes]


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds each step may take.  The defaults are RFC 5321 4.5.3.2's minimums."""

    connect: float = 30.0
    greeting: float = 300.0  # 4.5.3.2.1: initial 220 message, 5 minutes
    command: float = 300.0  # 4.5.3.2.2-3: MAIL and RCPT, 5 minutes (DATA's 354 gets as long)
    data_block: float = 180.0  # 4.5.3.2.5: each write of the body, 3 minutes
    end_of_data: float = 600.0  # 4.5.3.2.6: the reply to the final dot, 10 minutes

    @classmethod
    def uniform(cls, seconds: float) -> Timeouts:
        """The same limit for every step (``mailwright send --timeout``)."""
        return cls(seconds, seconds, seconds, seconds, seconds)


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
class TransactionResult:
    """Every reply of one mail transaction (RFC 5321 3.3).

    ``data`` is the reply to DATA and ``end_of_data`` the reply after the
    body; both None when DATA was not sent (no recipient accepted, without
    pipelining).  The message is delivered to the accepted recipients only
    when ``end_of_data`` is positive.
    """

    mail: Reply
    recipients: tuple[RecipientReply, ...]
    data: Reply | None
    end_of_data: Reply | None

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


class SmtpClient:
    """One connection to an SMTP server, as an async context manager.

    ::

        async with SmtpClient() as client:
            await client.connect("mx.example.net", 25, local_hostname="me.example")
            await client.ehlo()
            result = await client.send_transaction(sender, [rcpt], body)

    Leaving the block sends QUIT when all went well, then closes.
    """

    def __init__(
        self,
        *,
        timeouts: Timeouts | None = None,
        transcript: Transcript | None = None,
        max_reply_line: int = DEFAULT_MAX_REPLY_LINE,
        max_reply_lines: int = DEFAULT_MAX_REPLY_LINES,
        deadline: float | None = None,
    ) -> None:
        self.timeouts = timeouts or Timeouts()
        #: The event loop's time (``loop.time()``) by which every step must be over, whatever
        #: its own timeout: one delivery attempt as a whole is bounded (``[delivery]
        #: attempt_timeout``).  A step cut short by it raises SmtpTimeout like any timeout.
        self.deadline = deadline
        self.transcript = transcript
        self._conn = ClientConnection(
            max_reply_line=max_reply_line, max_reply_lines=max_reply_lines
        )
        self._stream: Stream | None = None
        self.host = ""
        self.port = 0
        self.local_hostname = ""
        self.greeting: Reply | None = None
        self.ehlo_reply: Reply | None = None  # the latest EHLO or HELO reply
        self._last_reply: Reply | None = None
        self._needs_rset = False  # the last transaction ended without its end-of-data reply
        #: Replies read on this connection so far; unchanged across a failed transaction
        #: means the server answered none of it (so it accepted nothing of it).
        self.replies_read = 0

    async def __aenter__(self) -> SmtpClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            await self.quit()
        await self.close()

    # ------------------------------------------------------------ state

    @property
    def capabilities(self) -> Capabilities:
        return self._conn.capabilities

    @property
    def tls(self) -> bool:
        return self._stream is not None and self._stream.tls

    @property
    def connected(self) -> bool:
        return self._stream is not None and not self._conn.closed

    # --------------------------------------------------------- commands

    async def connect(
        self,
        host: str,
        port: int = DEFAULT_PORT,
        *,
        timeout: float | None = None,
        local_hostname: str | None = None,
    ) -> Reply:
        """Connect and read the greeting; ``timeout`` overrides both steps' limits.

        A greeting other than 220 (554: no service here; 421: try later) is
        answered with QUIT as RFC 5321 3.1 asks, and raised as CommandRefused.
        """
        if self._stream is not None:
            raise RuntimeError("this SmtpClient is already connected")
        self.host, self.port = host, port
        connect_timeout = self.timeouts.connect if timeout is None else timeout
        self._stream = await TcpStream.connect(host, port, self._within_deadline(connect_timeout))
        self.local_hostname = local_hostname or default_local_hostname(
            self._stream.local_address[0]
        )
        greeting_timeout = self.timeouts.greeting if timeout is None else timeout
        self.greeting = (await self._read_reply(greeting_timeout)).reply
        if self.greeting.code != 220:
            await self.quit()
            raise CommandRefused("connection", self.greeting)
        return self.greeting

    async def ehlo(self, name: str | None = None) -> Reply:
        """EHLO, or HELO when the server does not know EHLO (500/502, RFC 5321 3.2)."""
        name = name or self.local_hostname
        reply = await self._command(self._conn.ehlo(name))
        if reply.code in (500, 502):
            reply = await self._command(self._conn.helo(name))
            command = "HELO"
        else:
            command = "EHLO"
        self.ehlo_reply = reply
        if reply.code != 250:
            raise CommandRefused(command, reply)
        return reply

    async def starttls(
        self, ssl_context: ssl.SSLContext | None = None, server_hostname: str | None = None
    ) -> Reply:
        """STARTTLS, the handshake, then EHLO again (RFC 3207 4.2); returns the 220.

        The context defaults to ``ssl.create_default_context()``: the
        certificate must be valid for ``server_hostname`` (default: the host
        connected to).  The new EHLO reply is in ``ehlo_reply``.
        """
        if not self._conn.capabilities.starttls:
            raise ExtensionNotOffered("STARTTLS", "it was not in the EHLO reply")
        reply = await self._command(self._conn.starttls())
        if reply.code != 220:
            raise CommandRefused("STARTTLS", reply)
        context = ssl_context or ssl.create_default_context()
        await self._require_stream().start_tls(
            context, server_hostname or self.host, self._within_deadline(self.timeouts.command)
        )
        await self.ehlo()
        return reply

    async def send_transaction(
        self,
        sender: Address | str | None,
        recipients: Sequence[Address | str],
        body: MessageBody,
        *,
        size: int | None = None,
        body_8bit: bool = False,
        smtputf8: bool = False,
    ) -> TransactionResult:
        """One mail transaction: MAIL, RCPT for each recipient, DATA, the body.

        With PIPELINING (RFC 2920) MAIL, the RCPTs and DATA go in one write;
        otherwise each waits for its reply, and DATA is sent only when a
        recipient was accepted.  The body (bytes, a binary file, or an async
        iterator of bytes) is streamed in BODY_CHUNK_SIZE pieces, line endings
        made CRLF and dots stuffed by the core.

        ``size`` is declared with SIZE when offered (RFC 1870; a bytes body is
        measured as it will go on the wire).  An 8-bit body (``body_8bit``, or found in a bytes
        body) is declared BODY=8BITMIME when offered, and sent as it is
        otherwise, as most MTAs do rather than refuse.  Non-ASCII addresses
        (or ``smtputf8``) need SMTPUTF8 (RFC 6531 3.2): ExtensionNotOffered if
        the server lacks it, before anything is sent.
        """
        conn = self._conn
        sender_address = as_address(sender) if sender is not None else None
        rcpt_addresses = [as_address(r) for r in recipients]
        if not rcpt_addresses:
            raise ValueError("a transaction needs at least one recipient")
        caps = conn.capabilities
        addresses = [str(a) for a in rcpt_addresses] + [str(sender_address or "")]
        smtputf8 = smtputf8 or not all(a.isascii() for a in addresses)
        if smtputf8 and not caps.smtputf8:
            raise ExtensionNotOffered("SMTPUTF8", "an address or the message needs it (RFC 6531)")
        if isinstance(body, bytes | bytearray | memoryview):
            body = bytes(body)
            size = wire_size(body) if size is None else size
            body_8bit = body_8bit or not body.isascii()
        options = _MailOptions(
            size=size if caps.has("SIZE") else None,
            body_8bit=body_8bit and caps.eight_bit_mime,
            smtputf8=smtputf8,
        )
        if caps.pipelining:
            return await self._pipelined(sender_address, rcpt_addresses, body, options)
        if self._needs_rset:
            await self.rset()
        mail = await self._command(options.command(conn, sender_address))
        if not mail.is_positive:
            return TransactionResult(
                mail, tuple(RecipientReply(a, None) for a in rcpt_addresses), None, None
            )
        self._needs_rset = True
        rcpts = []
        for address in rcpt_addresses:
            rcpts.append(RecipientReply(address, await self._command(conn.rcpt(address))))
        if not any(r.accepted for r in rcpts):
            return TransactionResult(mail, tuple(rcpts), None, None)
        data = await self._command(conn.data())
        return await self._finish(mail, tuple(rcpts), data, body)

    async def login(self, username: str, password: str, mechanism: str | None = None) -> Reply:
        """AUTH with ``mechanism``, by default PLAIN, else LOGIN, as offered (RFC 4954, 4616).

        Only over TLS unless the caller knows better: the password goes in the
        clear inside base64.  Returns the 235; CommandRefused otherwise.  The
        transcript never holds the credentials.
        """
        offered = self._conn.capabilities.auth_mechanisms
        if mechanism is None:
            mechanism = next((m for m in ("PLAIN", "LOGIN") if m in offered), None)
        if mechanism is None or mechanism.upper() not in offered:
            raise ExtensionNotOffered(f"AUTH {mechanism or 'PLAIN or LOGIN'}", "not offered")
        mechanism = mechanism.upper()
        if mechanism == "PLAIN":
            token = _b64(f"\0{username}\0{password}")
            reply = await self._secret_command(self._conn.auth("PLAIN", token), "AUTH PLAIN ***")
        elif mechanism == "LOGIN":
            reply = await self._command(self._conn.auth("LOGIN"))
            for secret in (username, password):
                if reply.code != 334:
                    break
                reply = await self._secret_command(self._conn.auth_continue(_b64(secret)), "***")
        else:
            raise ExtensionNotOffered(f"AUTH {mechanism}", "this client speaks PLAIN and LOGIN")
        if reply.code != 235:
            raise CommandRefused("AUTH", reply)
        return reply

    async def _secret_command(self, line: bytes, shown: str) -> Reply:
        self._note("C", shown)
        await self._write(line, self.timeouts.command)
        return (await self._read_reply(self.timeouts.command)).reply

    def reset_before_next(self) -> None:
        """Send RSET before the next transaction: in the same write when PIPELINING.

        For a connection kept for reuse: the RSET costs no round trip of its
        own, and if the server closed the connection meanwhile, the next
        transaction fails before any reply (see ``replies_read``).
        """
        self._needs_rset = True

    async def rset(self) -> Reply:
        reply = await self._command(self._conn.rset())
        if reply.code == 250:
            self._needs_rset = False
        return reply

    async def noop(self) -> Reply:
        return await self._command(self._conn.noop())

    async def quit(self) -> Reply | None:
        """QUIT and its 221; None when the session is already over or the QUIT got lost.

        A failed QUIT is not an error: every transaction already has its final
        reply (RFC 5321 4.1.1.10), and reporting a failure now could make a
        caller send a delivered message again.
        """
        conn = self._conn
        if self._stream is None or conn.closed or conn.sending_body or conn.unanswered:
            return None
        try:
            return await self._command(conn.quit())
        except MailwrightError:
            return None

    async def close(self) -> None:
        """Close the connection without QUIT (see ``quit``)."""
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.close()

    # -------------------------------------------------------- internals

    async def _pipelined(
        self,
        sender: Address | None,
        recipients: list[Address],
        body: MessageBody,
        options: _MailOptions,
    ) -> TransactionResult:
        """RFC 2920: MAIL, RCPT* and DATA in one write; every reply checked in order."""
        conn = self._conn
        rset_first = self._needs_rset
        out = [conn.rset()] if rset_first else []
        out.append(options.command(conn, sender))
        out.extend(conn.rcpt(address) for address in recipients)
        out.append(conn.data())
        await self._send_commands(b"".join(out))
        if rset_first:
            await self._read_reply(self.timeouts.command)
            self._needs_rset = False
        mail = (await self._read_reply(self.timeouts.command)).reply
        self._needs_rset = mail.is_positive
        rcpts = []
        for address in recipients:
            reply = (await self._read_reply(self.timeouts.command)).reply
            rcpts.append(RecipientReply(address, reply))
        data = (await self._read_reply(self.timeouts.command)).reply
        if data.code == 354 and not any(r.accepted for r in rcpts):
            # RFC 2920 3.1: DATA accepted although no RCPT was: end it with a lone dot.
            self._note("C", ".")
            await self._write(conn.end_body(), self.timeouts.data_block)
            end = (await self._read_reply(self.timeouts.end_of_data)).reply
            return TransactionResult(mail, tuple(rcpts), data, end)
        return await self._finish(mail, tuple(rcpts), data, body)

    async def _finish(
        self,
        mail: Reply,
        rcpts: tuple[RecipientReply, ...],
        data: Reply,
        body: MessageBody,
    ) -> TransactionResult:
        if data.code != 354:
            return TransactionResult(mail, rcpts, data, None)
        conn = self._conn
        total = 0
        # The last piece of the body leaves in one write with the final dot: a small
        # message costs one write() instead of two.
        held = b""
        async for chunk in _chunks(body, BODY_CHUNK_SIZE):
            total += len(chunk)
            if held:
                await self._write(held, self.timeouts.data_block)
            held = conn.body(chunk)
        self._note("C", f"[message body, {total} octets]")
        self._note("C", ".")
        await self._write(held + conn.end_body(), self.timeouts.data_block)
        end = (await self._read_reply(self.timeouts.end_of_data)).reply
        self._needs_rset = False  # the end of data ends the transaction, whatever the reply
        return TransactionResult(mail, rcpts, data, end)

    def _require_stream(self) -> Stream:
        if self._stream is None:
            raise ConnectionLost("not connected")
        return self._stream

    async def _command(self, line: bytes) -> Reply:
        """Write one command (already accepted by the core) and read its reply."""
        await self._send_commands(line)
        return (await self._read_reply(self.timeouts.command)).reply

    async def _send_commands(self, data: bytes) -> None:
        for line in data.decode("utf-8").split("\r\n")[:-1]:
            self._note("C", line)
        await self._write(data, self.timeouts.command)

    async def _write(self, data: bytes, timeout: float) -> None:
        await self._require_stream().write(data, self._within_deadline(timeout))

    def _within_deadline(self, timeout: float) -> float:
        """``timeout``, or less when ``deadline`` comes first."""
        if self.deadline is None:
            return timeout
        return max(0.0, min(timeout, self.deadline - asyncio.get_running_loop().time()))

    async def _read_reply(self, timeout: float) -> ReplyReceived:
        """The next reply; the whole of it must arrive within ``timeout``."""
        stream = self._require_stream()
        conn = self._conn
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._within_deadline(timeout)
        while True:
            event = conn.next_event()
            if isinstance(event, ReplyReceived):
                for line in event.lines:
                    self._note("S", line)
                self._last_reply = event.reply
                self.replies_read += 1
                return event
            if isinstance(event, ConnectionClosed):
                raise ConnectionLost(
                    f"{self.host}:{self.port} closed the connection"
                    + (f" after {self._last_reply}" if self._last_reply else ""),
                    reply=self._last_reply,
                )
            conn.receive_data(await stream.read(READ_SIZE, max(0.0, deadline - loop.time())))

    def _note(self, side: Literal["C", "S"], line: str) -> None:
        if self.transcript is not None:
            self.transcript.append((side, line))


@dataclass(frozen=True, slots=True)
class _MailOptions:
    """The MAIL parameters of one transaction, already checked against the EHLO reply."""

    size: int | None
    body_8bit: bool
    smtputf8: bool

    def command(self, conn: ClientConnection, sender: Address | None) -> bytes:
        return conn.mail(sender, size=self.size, body_8bit=self.body_8bit, smtputf8=self.smtputf8)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def wire_size(body: bytes) -> int:
    """The size RFC 1870 3 asks to declare: octets with every line ending a CRLF,
    without the end marker or stuffed dots.  Counted, not copied."""
    crlf = body.count(b"\r\n")
    bare = body.count(b"\n") - crlf + body.count(b"\r") - crlf
    unterminated = bool(body) and not body.endswith((b"\n", b"\r"))
    return len(body) + bare + (2 if unterminated else 0)


def as_address(value: Address | str) -> Address:
    """An Address from an Address or a plain ``local@domain``."""
    return value if isinstance(value, Address) else Address.from_text(value)


async def _chunks(body: MessageBody, size: int) -> AsyncIterator[bytes]:
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


def default_local_hostname(local_ip: str) -> str:
    """Our name for EHLO when none is given: the host name if it is a full domain
    name (RFC 5321 4.1.1.1), else an address literal of our end of the connection.

    No DNS lookup: ``socket.getfqdn`` can block for seconds.
    """
    name = socket.gethostname()
    if "." in name and is_valid_domain(name, helo=True):
        return name
    return f"[IPv6:{local_ip}]" if ":" in local_ip else f"[{local_ip}]"
