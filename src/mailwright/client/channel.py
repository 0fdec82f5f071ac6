"""Channel: one client connection's bytes and replies, below the SMTP commands.

The layer between the stream (client/stream.py) and the commands of a
session (client/session.py, ``SmtpClient``, which is a Channel): it opens
and ends the connection (QUIT, close), writes command lines the sans-I/O
core made, reads the core's replies under a timeout, and notes both in the
transcript.  ``next_reply`` is where the
client transport meets the core, so it is the one place the core's
``RemoteProtocolError`` becomes a client error, ``MalformedReply``, as
stream.py maps socket errors.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self

from mailwright.client.errors import ConnectionLost, MalformedReply
from mailwright.client.stream import Stream, TcpStream
from mailwright.errors import MailwrightError, RemoteProtocolError
from mailwright.protocol.client import (
    DEFAULT_MAX_REPLY_LINE,
    DEFAULT_MAX_REPLY_LINES,
    Capabilities,
    ClientConnection,
    ReplyReceived,
)
from mailwright.protocol.events import ConnectionClosed
from mailwright.protocol.reply import Reply

READ_SIZE = 64 * 1024

#: ("C", line) for what we sent, ("S", line) for what the server answered.
Transcript = list[tuple[Literal["C", "S"], str]]


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


class Channel:
    """The stream, the core that frames what goes over it, and the record of both.

    ``transcript`` (when given) receives every command line written and every
    reply line read; ``last_command`` is the latest command line, credentials
    hidden (``shown``).  Together they are the observer hook: ``mailwright
    send -v`` prints the transcript, ``probe`` shows each exchange as it goes,
    and both say after which command a session broke.
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
        self.last_command = ""
        self._last_reply: Reply | None = None
        #: Replies read on this connection so far; unchanged across a failed transaction
        #: means the server answered none of it (so it accepted nothing of it).
        self.replies_read = 0

    @property
    def capabilities(self) -> Capabilities:
        return self._conn.capabilities

    @property
    def tls(self) -> bool:
        return self._stream is not None and self._stream.tls

    @property
    def connected(self) -> bool:
        return self._stream is not None and not self._conn.closed

    async def _open_stream(self, host: str, port: int, timeout: float | None) -> Stream:
        if self._stream is not None:
            raise RuntimeError(f"this {type(self).__name__} is already connected")
        self.host, self.port = host, port
        if timeout is not None:
            timeout = self._within_deadline(timeout)
        self._stream = await TcpStream.connect(host, port, timeout)
        return self._stream

    async def __aenter__(self) -> Self:
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

    def _require_stream(self) -> Stream:
        if self._stream is None:
            raise ConnectionLost("not connected")
        return self._stream

    async def _command(self, line: bytes, *, shown: str | None = None) -> Reply:
        """Write one command (already accepted by the core) and read its reply.

        ``shown`` stands for the line in the transcript when it carries a secret.
        """
        await self._send_commands(line, shown=shown)
        return await self._read_reply(self.timeouts.command)

    async def _send_commands(self, data: bytes, *, shown: str | None = None) -> None:
        """Write one command or a pipelined group (RFC 2920) in one write."""
        lines = data.decode("utf-8").split("\r\n")[:-1] if shown is None else [shown]
        for line in lines:
            self._note("C", line)
        await self._write(data, self.timeouts.command)

    async def _write(self, data: bytes, timeout: float) -> None:
        await self._require_stream().write(data, self._within_deadline(timeout))

    def _within_deadline(self, timeout: float) -> float:
        """``timeout``, or less when ``deadline`` comes first."""
        if self.deadline is None:
            return timeout
        return max(0.0, min(timeout, self.deadline - asyncio.get_running_loop().time()))

    async def _read_reply(self, timeout: float) -> Reply:
        """The next reply; the whole of it must arrive within ``timeout`` (and the deadline)."""
        event = await next_reply(
            self._conn,
            self._require_stream(),
            self._within_deadline(timeout),
            f"{self.host}:{self.port}",
        )
        if isinstance(event, ConnectionClosed):
            raise ConnectionLost(
                f"{self.host}:{self.port} closed the connection"
                + (f" after {self._last_reply}" if self._last_reply else ""),
                reply=self._last_reply,
            )
        for line in event.lines:
            self._note("S", line)
        self._last_reply = event.reply
        self.replies_read += 1
        return event.reply

    def _note(self, side: Literal["C", "S"], line: str) -> None:
        if side == "C":
            self.last_command = line
        if self.transcript is not None:
            self.transcript.append((side, line))


async def next_reply(
    conn: ClientConnection, stream: Stream, timeout: float, peer: str
) -> ReplyReceived | ConnectionClosed:
    """The core's next reply (or the end of the connection), read from ``stream``.

    The whole reply must arrive within ``timeout``.  The core's
    ``RemoteProtocolError`` becomes ``MalformedReply`` here, so every caller
    (delivery, ``mailwright send``, ``probe``) handles one family,
    ``SmtpClientError``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            event = conn.next_event()
        except RemoteProtocolError as exc:
            raise MalformedReply(f"reply from {peer}: {exc}") from exc
        if isinstance(event, ReplyReceived | ConnectionClosed):
            return event
        conn.receive_data(await stream.read(READ_SIZE, max(0.0, deadline - loop.time())))
