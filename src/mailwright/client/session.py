"""SmtpClient: one SMTP session in the client role, over asyncio, one step at a time.

A thin transport around ``ClientConnection`` (the sans-I/O core decides what
may be sent and parses what comes back); this module moves bytes, keeps time
and hands back replies.  Each method is one step of the protocol: ``connect``
(and the greeting), ``ehlo`` (HELO when EHLO is unknown), ``starttls``,
``login`` (AUTH), ``mail``, ``rcpt``, ``data`` and ``send_body`` (or
``send_chunks``, BDAT), ``rset``,
``quit``.  ``envelope`` sends MAIL, the RCPTs and DATA in one write when the
server allows it (RFC 2920), and ``send_transaction`` runs a whole
transaction.  A session under a TLS policy is opened by ``open_session``
(client/connect.py), which delivery, ``mailwright send`` and ``probe`` share.

Refusals inside a transaction are replies, not exceptions: a caller acts per
recipient.  Exceptions are kept for sessions that cannot go on: the
connection failed or timed out (client/errors.py), the server refused a
command the session needs (``CommandRefused``: the greeting, EHLO, STARTTLS,
AUTH), or broke the reply grammar (``MalformedReply``, mapped from the core's
``RemoteProtocolError`` in ``next_reply``).  All of them are ``SmtpClientError``.

Every command line written and every reply line read goes to the transcript,
when one is given, and the latest command is ``last_command``: that is how
``mailwright send -v`` prints a session and ``probe`` shows each exchange.
"""

from __future__ import annotations

import base64
import socket
import ssl
from collections.abc import Sequence

from mailwright.client.channel import Channel
from mailwright.client.errors import CommandRefused, ExtensionNotOffered
from mailwright.client.tls import TlsInfo, verifying_context
from mailwright.client.transaction import (
    DsnRequest,
    Envelope,
    MailParameters,
    MessageBody,
    RecipientReply,
    TransactionResult,
    as_address,
    chunks,
    run_transaction,
)
from mailwright.model import Address
from mailwright.protocol.reply import Reply
from mailwright.syntax import SMTP_PORT, is_valid_domain

DEFAULT_PORT = SMTP_PORT


class SmtpClient(Channel):
    """One connection to an SMTP server, as an async context manager.

    ::

        async with SmtpClient() as client:
            await client.connect("mx.example.net", 25, local_hostname="me.example")
            await client.ehlo()
            result = await client.send_transaction(sender, [rcpt], body)

    Leaving the block sends QUIT when all went well, then closes.  The
    constructor (``timeouts``, ``transcript``, the reply limits), the bytes and
    the end of the connection (``quit``, ``close``) are the Channel's
    (client/channel.py).
    """

    # What the session has learnt so far; each instance sets its own as it goes.
    local_hostname = ""
    greeting: Reply | None = None
    ehlo_reply: Reply | None = None  # the latest EHLO or HELO reply
    tls_info: TlsInfo | None = None  # what STARTTLS negotiated; kept after close
    _needs_rset = False  # a transaction is open (MAIL accepted, no end of data yet)

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
        connect_timeout = self.timeouts.connect if timeout is None else timeout
        stream = await self._open_stream(host, port, connect_timeout)
        self.local_hostname = local_hostname or default_local_hostname(stream.local_address[0])
        greeting_timeout = self.timeouts.greeting if timeout is None else timeout
        self.greeting = await self._read_reply(greeting_timeout)
        if self.greeting.code != 220:
            await self.quit()
            raise CommandRefused("connection", self.greeting)
        return self.greeting

    async def ehlo(self, name: str | None = None) -> Reply:
        """EHLO, or HELO when the server does not know EHLO (500/502, RFC 5321 3.2)."""
        name = name or self.local_hostname
        command, reply = "EHLO", await self._command(self._conn.ehlo(name))
        if reply.code in (500, 502):
            command, reply = "HELO", await self._command(self._conn.helo(name))
        self.ehlo_reply = reply
        if reply.code != 250:
            raise CommandRefused(command, reply)
        return reply

    async def starttls(
        self,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        *,
        ehlo: bool = True,
    ) -> Reply:
        """STARTTLS, the handshake, then EHLO again (RFC 3207 4.2); returns the 220.

        The context defaults to ``verifying_context()``: the certificate must
        be valid for ``server_hostname`` (default: the host connected to).
        ``tls_info`` says what was negotiated; the new EHLO reply is in
        ``ehlo_reply``.  ``ehlo=False`` leaves that EHLO to the caller, which
        must send it before anything else.
        """
        if not self._conn.capabilities.starttls:
            raise ExtensionNotOffered("STARTTLS", "it was not in the EHLO reply")
        reply = await self._command(self._conn.starttls())
        if reply.code != 220:
            raise CommandRefused("STARTTLS", reply)
        stream = self._require_stream()
        context = ssl_context or verifying_context()
        await stream.start_tls(
            context, server_hostname or self.host, self._within_deadline(self.timeouts.command)
        )
        self.tls_info = stream.tls_info
        if ehlo:
            await self.ehlo()
        return reply

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
            reply = await self._command(self._conn.auth("PLAIN", token), shown="AUTH PLAIN ***")
        elif mechanism == "LOGIN":
            reply = await self._command(self._conn.auth("LOGIN"))
            for secret in (username, password):
                if reply.code != 334:
                    break
                reply = await self._command(self._conn.auth_continue(_b64(secret)), shown="***")
        else:
            raise ExtensionNotOffered(f"AUTH {mechanism}", "this client speaks PLAIN and LOGIN")
        if reply.code != 235:
            raise CommandRefused("AUTH", reply)
        return reply

    async def mail(
        self,
        sender: Address | str | None,
        *,
        size: int | None = None,
        body_8bit: bool = False,
        smtputf8: bool = False,
        binarymime: bool = False,
    ) -> Reply:
        """MAIL FROM (RFC 5321 4.1.1.2); ``sender`` None is the null reverse-path ``<>``.

        Each parameter needs its extension in the EHLO reply (the core refuses
        it otherwise); SMTPUTF8 or BINARYMIME missing is ExtensionNotOffered,
        before anything is sent, since it is the message that needs it (RFC
        6531 3.2, RFC 3030 3).
        """
        mail = MailParameters(size, body_8bit, smtputf8, binarymime)
        reply = await self._command(self._mail_command(_sender(sender), mail))
        self._needs_rset = reply.is_positive
        return reply

    async def rcpt(self, recipient: Address | str) -> Reply:
        """RCPT TO (RFC 5321 4.1.1.3); the reply, whatever it says."""
        return await self._command(self._conn.rcpt(as_address(recipient)))

    async def mail_with(self, sender: Address | None, mail: MailParameters) -> Reply:
        """MAIL FROM with every parameter of ``mail`` (a transaction's step)."""
        reply = await self._command(self._mail_command(sender, mail))
        self._needs_rset = reply.is_positive
        return reply

    async def rcpt_with(self, recipient: Address, index: int, mail: MailParameters) -> Reply:
        """RCPT TO for the ``index``th recipient of a transaction, with its DSN parameters."""
        return await self._command(self._rcpt_command(recipient, index, mail))

    async def data(self) -> Reply:
        """DATA; after its 354, ``send_body`` must come next."""
        return await self._command(self._conn.data())

    async def send_body(self, body: MessageBody) -> Reply:
        """The message after DATA's 354, then the end marker; the reply to it.

        The body (bytes, a binary file, or an async iterator of bytes) is
        streamed in BODY_CHUNK_SIZE pieces, line endings made CRLF and dots
        stuffed by the core.  The end of data ends the transaction, whatever
        the reply.
        """
        conn, total = self._conn, 0
        # The last piece leaves in one write with the final dot: a small message
        # costs one write() instead of two.
        held = b""
        async for chunk in chunks(body):
            total += len(chunk)
            if held:
                await self._write(held, self.timeouts.data_block)
            held = conn.body(chunk)
        if total:
            self._note("C", f"[message body, {total} octets]")
        self._note("C", ".")
        await self._write(held + conn.end_body(), self.timeouts.data_block)
        end = await self._read_reply(self.timeouts.end_of_data)
        self._needs_rset = False
        return end

    async def send_chunks(self, body: MessageBody, *, binary: bool = False) -> Reply:
        """The message in BDAT chunks (RFC 3030 2), the last with LAST; the reply to it.

        Each BODY_CHUNK_SIZE piece is one chunk.  With PIPELINING a chunk goes
        out before the reply to the one before it is read (one in flight, so
        neither side's buffers fill); without, each waits for its reply.  The
        first refusal ends the message: no more chunks are sent (RFC 3030 2)
        and that reply is returned.  ``binary``: BODY=BINARYMIME, the octets as
        they are; otherwise line endings are made CRLF as for DATA.
        """
        in_flight = 1 if self._conn.capabilities.pipelining else 0
        unanswered = 0
        refusal: Reply | None = None
        held: bytes | None = None
        async for piece in chunks(body):
            if held is not None:
                unanswered += await self._send_chunk(held, last=False, binary=binary)
                while unanswered > in_flight and refusal is None:
                    unanswered -= 1
                    reply = await self._read_reply(self.timeouts.command)
                    refusal = None if _chunk_taken(reply) else reply
                if refusal is not None:
                    break
            held = piece
        if refusal is None:
            unanswered += await self._send_chunk(held or b"", last=True, binary=binary)
        end = refusal
        while unanswered:  # the chunk in flight, then the LAST
            unanswered -= 1
            reply = await self._read_reply(
                self.timeouts.command if unanswered else self.timeouts.end_of_data
            )
            if end is None and (not _chunk_taken(reply) or not unanswered):
                end = reply
        assert end is not None
        # A server may keep the transaction open after a refused chunk, whether the refusal
        # came before the LAST was sent or after it: RSET before the next.
        self._needs_rset = refusal is not None or not _chunk_taken(end)
        return end

    async def _send_chunk(self, chunk: bytes, *, last: bool, binary: bool) -> int:
        """Write one BDAT with its chunk; how many replies that makes due (0 or 1)."""
        out = self._conn.bdat(chunk, last=last, binary=binary)
        if not out:
            return 0
        self._note("C", str(self._conn.unanswered[-1]))
        await self._write(out, self.timeouts.data_block)
        return 1

    async def pipelined_envelope(
        self,
        sender: Address | None,
        recipients: Sequence[Address],
        mail: MailParameters,
        *,
        data: bool = True,
    ) -> Envelope:
        """RFC 2920: [RSET,] MAIL, every RCPT and DATA in one write; every reply read in order.

        The RSET goes first when one is due (``pending_rset``).  Needs PIPELINING.
        ``data`` False leaves DATA out: the body goes in BDAT chunks (``send_chunks``).
        """
        conn = self._conn
        rset_first = self._needs_rset
        out = [conn.rset()] if rset_first else []
        out.append(self._mail_command(sender, mail))
        out.extend(self._rcpt_command(a, i, mail) for i, a in enumerate(recipients))
        if data:
            out.append(conn.data())
        await self._send_commands(b"".join(out))
        if rset_first:
            await self._read_reply(self.timeouts.command)
        mail_reply = await self._read_reply(self.timeouts.command)
        self._needs_rset = mail_reply.is_positive
        rcpts = [
            RecipientReply(a, await self._read_reply(self.timeouts.command)) for a in recipients
        ]
        data_reply = await self._read_reply(self.timeouts.command) if data else None
        return Envelope(mail_reply, tuple(rcpts), data_reply)

    async def send_transaction(
        self,
        sender: Address | str | None,
        recipients: Sequence[Address | str],
        body: MessageBody,
        *,
        size: int | None = None,
        body_8bit: bool = False,
        smtputf8: bool = False,
        binarymime: bool = False,
        dsn: DsnRequest | None = None,
    ) -> TransactionResult:
        """One mail transaction: MAIL, RCPT for each recipient, DATA or BDAT, the body.

        ``dsn``: RFC 3461 parameters, sent only when the server offers DSN.

        Pipelined when the server allows it; see ``run_transaction``
        (client/transaction.py) for how SIZE, BODY=8BITMIME, BODY=BINARYMIME
        and SMTPUTF8 are declared.  ExtensionNotOffered, before anything is
        sent, when the addresses need SMTPUTF8 or a binary body BINARYMIME
        and the server lacks it.
        """
        rcpt_addresses = [as_address(r) for r in recipients]
        if not rcpt_addresses:
            raise ValueError("a transaction needs at least one recipient")
        return await run_transaction(
            self,
            _sender(sender),
            rcpt_addresses,
            body,
            MailParameters(size, body_8bit, smtputf8, binarymime, dsn),
        )

    @property
    def pending_rset(self) -> bool:
        """RSET is due before the next MAIL: a transaction was left open, or it was asked for."""
        return self._needs_rset

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

    # -------------------------------------------------------- internals

    def _mail_command(self, sender: Address | None, mail: MailParameters) -> bytes:
        mail.check(self._conn.capabilities)
        dsn = mail.dsn
        return self._conn.mail(
            sender,
            size=mail.size,
            body_8bit=mail.body_8bit,
            smtputf8=mail.smtputf8,
            binarymime=mail.binarymime,
            ret=dsn.ret if dsn is not None else None,
            envid=dsn.envid if dsn is not None else None,
        )

    def _rcpt_command(self, recipient: Address, index: int, mail: MailParameters) -> bytes:
        if mail.dsn is None:
            return self._conn.rcpt(recipient)
        notify, orcpt = mail.dsn.of(index)
        return self._conn.rcpt(recipient, notify=notify, orcpt=orcpt)


def _chunk_taken(reply: Reply) -> bool:
    """A chunk other than the LAST was taken: RFC 3030 2 answers it with 250, and any 2xx
    is read so (never as the end of the message: only the LAST chunk's reply says whether
    the message was taken).  Anything else ends the message and is its result."""
    return 200 <= reply.code < 300


def _sender(sender: Address | str | None) -> Address | None:
    return as_address(sender) if sender is not None else None


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def default_local_hostname(local_ip: str) -> str:
    """Our name for EHLO when none is given: the host name if it is a full domain
    name (RFC 5321 4.1.1.1), else an address literal of our end of the connection.

    No DNS lookup: ``socket.getfqdn`` can block for seconds.
    """
    name = socket.gethostname()
    if "." in name and is_valid_domain(name, helo=True):
        return name
    return f"[IPv6:{local_ip}]" if ":" in local_ip else f"[{local_ip}]"
