"""CheckClient: a client session that may break the rules on purpose, to see what a server does.

``SmtpClient`` (client/session.py) refuses to send what a correct client
never would: a command before EHLO, a 2,000-octet line, ``STARTTLS`` and
``NOOP`` in one write, a body with bare line endings.  Those are exactly what
a conformance check has to send, so this subclass adds a way around the
refusals, and only that: lines still go through the sans-I/O core's ``raw``
(which keeps the order of the commands whose replies are awaited), every
reply is read by the core's reply parser under the same timeouts and limits,
and everything is noted in the transcript like any other command.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence

from mailwright.client import ConnectionLost, SmtpClient
from mailwright.client.session import default_local_hostname
from mailwright.protocol.reply import Reply


class CheckClient(SmtpClient):
    """An ``SmtpClient`` with raw writes for the checks; see the module docstring.

    ``abandoned`` is set by a check that leaves the session where a QUIT
    would be misread (inside a DATA body the core does not know about): the
    connection is then closed without one.
    """

    abandoned = False

    async def open(
        self,
        host: str,
        port: int,
        *,
        implicit_tls: ssl.SSLContext | None,
        local_hostname: str | None,
    ) -> Reply:
        """Connect (TLS from the first byte with ``implicit_tls``); the greeting, any code."""
        stream = await self._open_stream(host, port, self.timeouts.connect)
        if implicit_tls is not None:
            await stream.start_tls(implicit_tls, host, self._within_deadline(self.timeouts.connect))
            self.tls_info = stream.tls_info
        self.local_hostname = local_hostname or default_local_hostname(stream.local_address[0])
        self.greeting = await self._read_reply(self.timeouts.greeting)
        return self.greeting

    async def send_line(self, line: str) -> Reply:
        """One command line exactly as given (CRLF added) and its reply."""
        self._require_open()
        await self._send_commands(self._conn.raw(line))
        return await self._read_reply(self.timeouts.command)

    async def write_lines(self, lines: Sequence[str]) -> None:
        """Several command lines in one write; their replies are read with ``read_reply``."""
        self._require_open()
        await self._send_commands(b"".join(self._conn.raw(line) for line in lines))

    async def write_raw(self, data: bytes, shown: str) -> None:
        """Bytes written as they are (a body with odd line endings); ``shown`` in the transcript."""
        self._note("C", shown)
        await self._write(data, self.timeouts.data_block)

    def expect_reply(self, line: str) -> bytes:
        """Count on a reply to ``line`` (not yet written): its bytes, to write when it is time."""
        return self._conn.raw(line)

    async def read_reply(self, timeout: float | None = None) -> Reply:
        """The next reply, within ``timeout`` (default: the command timeout) and the deadline."""
        return await self._read_reply(self.timeouts.command if timeout is None else timeout)

    async def start_tls_now(self, context: ssl.SSLContext, server_hostname: str) -> None:
        """The TLS handshake on this connection, after a 220 to a STARTTLS sent raw."""
        stream = self._require_stream()
        await stream.start_tls(
            context, server_hostname, self._within_deadline(self.timeouts.command)
        )
        self.tls_info = stream.tls_info

    def _require_open(self) -> None:
        """After a 421 (RFC 5321 3.8) the server is gone: say so as a lost connection."""
        if self._conn.closed:
            raise ConnectionLost(
                f"{self.host}:{self.port} ended the session"
                + (f" with {self._last_reply}" if self._last_reply else "")
            )
