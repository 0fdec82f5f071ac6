"""ProbeSession: one SMTP connection driven a command at a time, for ``probe``.

``SmtpClient`` offers whole transactions (MAIL, RCPT, DATA, body), and a probe
must stop before DATA; so this drives the same public parts the client is
made of, the sans-I/O core ``ClientConnection`` over the client's
``TcpStream``, one command and one reply at a time.  It is deliberately small:
no pipelining, no body.  Errors are the client's own (``SmtpClientError``
subclasses; ``MalformedReply`` for replies that break the grammar), from the
client's own boundary, ``next_reply``.
"""

from __future__ import annotations

import ssl

from mailwright.client import Capabilities, ConnectionLost, TcpStream
from mailwright.client.session import default_local_hostname, next_reply
from mailwright.errors import MailwrightError
from mailwright.model import Address
from mailwright.protocol.client import ClientConnection
from mailwright.protocol.events import ConnectionClosed
from mailwright.protocol.reply import Reply


class ProbeSession:
    """Connect, then one command at a time; every reply is returned, whatever its code."""

    def __init__(self, host: str, port: int, *, timeout: float, helo_name: str | None) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.helo_name = helo_name
        self._conn = ClientConnection()
        self._stream: TcpStream | None = None
        self.last_command = ""  # for "closed the connection after ..."

    @property
    def capabilities(self) -> Capabilities:
        return self._conn.capabilities

    @property
    def closed(self) -> bool:
        return self._stream is None or self._conn.closed

    async def connect(self) -> Reply:
        """Open the connection and return the greeting, 220 or not (RFC 5321 3.1)."""
        self._stream = await TcpStream.connect(self.host, self.port, self.timeout)
        if self.helo_name is None:
            self.helo_name = default_local_hostname(self._stream.local_address[0])
        self.last_command = "connecting"
        return await self._read_reply()

    async def ehlo(self) -> tuple[str, Reply]:
        """EHLO, or HELO when EHLO is not known (500/502, RFC 5321 3.2); the command and reply."""
        assert self.helo_name is not None
        line, reply = await self._command(self._conn.ehlo(self.helo_name))
        if reply.code in (500, 502):
            line, reply = await self._command(self._conn.helo(self.helo_name))
        return line, reply

    async def starttls(self, context: ssl.SSLContext, server_hostname: str) -> Reply:
        """STARTTLS and, after a 220, the handshake (TlsError when it fails).

        The caller sends EHLO again (RFC 3207 4.2), so it can show both lists.
        """
        _, reply = await self._command(self._conn.starttls())
        if reply.code == 220:
            assert self._stream is not None
            await self._stream.start_tls(context, server_hostname, self.timeout)
        return reply

    async def mail(self, sender: Address | None, *, smtputf8: bool = False) -> tuple[str, Reply]:
        """MAIL FROM; ``smtputf8`` when any address of the transaction is not ASCII (RFC 6531)."""
        return await self._command(self._conn.mail(sender, smtputf8=smtputf8))

    async def rcpt(self, recipient: Address) -> tuple[str, Reply]:
        return await self._command(self._conn.rcpt(recipient))

    async def rset(self) -> tuple[str, Reply]:
        return await self._command(self._conn.rset())

    async def quit(self) -> Reply | None:
        """QUIT; None when the session is already over.  Failures are not reported:
        nothing depends on the 221."""
        if self.closed:
            return None
        try:
            _, reply = await self._command(self._conn.quit())
        except MailwrightError:  # the probe's findings are complete without it
            return None
        return reply

    async def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.close()

    # ------------------------------------------------------------ internals

    async def _command(self, data: bytes) -> tuple[str, Reply]:
        if self._stream is None:
            raise ConnectionLost("not connected")
        line = data.decode("utf-8").removesuffix("\r\n")
        self.last_command = line
        await self._stream.write(data, self.timeout)
        return line, await self._read_reply()

    async def _read_reply(self) -> Reply:
        """The next reply; all of it must arrive within the timeout."""
        assert self._stream is not None
        peer = f"{self.host}:{self.port}"
        event = await next_reply(self._conn, self._stream, self.timeout, peer)
        if isinstance(event, ConnectionClosed):
            raise ConnectionLost(f"{peer} closed the connection")
        return event.reply
