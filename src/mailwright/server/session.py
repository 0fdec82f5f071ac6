"""One SMTP connection as transport: bytes <-> ServerConnection, flow control, time, TLS.

The protocol core decides what is valid (protocol/server.py); the handler
decides what to answer and keeps the mail transaction (server/handler.py); the
deadlines say when to give up (server/deadlines.py).  This module only moves
bytes, runs the steps that must wait, and writes the connect/disconnect log.

It is an ``asyncio.Protocol`` (not streams) so received bytes go straight into
the core.  Flow control works both ways.  Reading pauses while the core holds
more unprocessed input than ``MAX_BUFFERED_INPUT``: a client that floods us
cannot grow our memory.  While the transport holds more unsent replies than its
high-water mark (``pause_writing``), no input is processed and reading is
paused, so a client that pipelines commands and never reads what we answer
costs at most the two buffers, not 30 times what it sent.

STARTTLS is ``loop.start_tls`` on the same transport with this same protocol
object; reading is paused before the 220 is written, so no plain-text byte
reaches the core after it (RFC 3207 4.2).  On an implicit-TLS listener the
listener counts the connection when it accepts it and has the loop complete the
handshake before ``connection_made`` (server/listener.py).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from typing import cast

from mailwright.logfmt import kv
from mailwright.model import SessionInfo
from mailwright.protocol import replies
from mailwright.protocol.events import (
    Auth,
    BodyChunk,
    ConnectionClosed,
    EndOfData,
    Event,
    Mail,
    StartTls,
)
from mailwright.protocol.reply import Reply
from mailwright.protocol.server import ServerConnection
from mailwright.protocol.state import State
from mailwright.server.counting import ReplyCounter
from mailwright.server.deadlines import Deadlines, SessionTimer
from mailwright.server.handler import Peer, SessionHandler
from mailwright.server.output import ReplyOutput
from mailwright.server.services import ListenerKind, SessionServices
from mailwright.server.tls import negotiated, upgrade

__all__ = ["ListenerKind", "SessionServices", "SmtpSession"]

log = logging.getLogger("mailwright.smtpd")

MAX_BUFFERED_INPUT = 1 << 20  # pause reading above this much unprocessed input
#: The transport calls pause_writing above this many octets not yet sent.
WRITE_BUFFER_HIGH_WATER = 64 * 1024


class Phase(enum.Enum):
    """Where a session is in its life; each phase says what input may do."""

    OPENING = "opening"  # accepted, our greeting not sent yet (greet_delay)
    READY = "ready"  # input is handled as it arrives
    WAITING = "waiting"  # a step that must wait (commit, AUTH, TLS) is under way
    CLOSED = "closed"


class SmtpSession(asyncio.Protocol):
    """One connection from accept to close.

    Commands are handled synchronously in ``data_received``: parsing, policy
    and the reply happen in the callback that brought the bytes, with no task
    switch and no timer operation per command.  Only the steps that must wait
    (the queue's commit after DATA, a password check, the TLS handshake) run
    as a task; while one runs, new input waits in the core and is handled when
    it ends, so replies stay in order.  Timeouts use one lazily re-armed timer
    per session (server/deadlines.py).

    Why this class is longer than the house's 250 lines: it is one state
    machine over one transport (the Protocol callbacks, both directions of
    flow control, the phases, the pump and the steps that wait all read and
    change the same few fields).  What stands alone lives elsewhere: the
    answers (handler.py), the transaction, the output buffer, the deadlines,
    the TLS handshake.
    """

    def __init__(
        self,
        services: SessionServices,
        *,
        on_close: Callable[[SmtpSession], None],
        refuse_with: Callable[[str], Reply | None],
        kind: ListenerKind = ListenerKind.SMTP,
        on_open: Callable[[SmtpSession], None] = lambda session: None,
        admitted: bool = False,
        current: Callable[[], SessionServices] | None = None,
    ) -> None:
        """``admitted``: the listener already counted this connection against the limits
        (implicit TLS, counted at accept before its handshake).  ``services`` hold for
        the whole session (limits, greeting); ``current`` gives the handler the newest
        after a reload, for its next transaction (SessionServices)."""
        self.services = services
        self.kind = kind
        self._admitted = admitted
        self._on_open = on_open
        self._on_close = on_close
        self._refuse_with = refuse_with
        self.conn = ServerConnection(
            services.protocol_configs[kind], tls=kind is ListenerKind.IMPLICIT_TLS
        )
        self.transport: asyncio.Transport | None = None
        self.peer_host = "?"
        self.peer_port = 0
        self.handler = SessionHandler(
            services, self.conn, Peer(self.peer_host, self.peer_port), current=current
        )
        self._loop = asyncio.get_running_loop()
        #: Resolved when the session has ended (the listener waits on it at shutdown).
        self.done: asyncio.Future[None] = self._loop.create_future()
        self.phase = Phase.OPENING
        smtp = services.config.smtp
        self._deadlines = Deadlines(
            idle=smtp.idle_timeout, command=smtp.command_timeout, data=smtp.data_timeout
        )
        self._timer = SessionTimer(self._loop, self._deadlines, self._safely, self._timed_out)
        self._out = ReplyOutput()
        self._counted = ReplyCounter(services.metrics)
        #: For the log; the core knows whether TLS is on.
        self._tls_version: str | None = None
        self._tls_cipher: str | None = None
        self._stopping = False  # shutdown asked: close at the next wait for input
        self._reading_paused = False
        self._write_paused = False  # the transport's write buffer is over its high-water mark
        self._greet_handle: asyncio.TimerHandle | None = None
        self._started = time.monotonic()
        self._result = "closed"

    @property
    def authenticated_user(self) -> str | None:
        return self.handler.authenticated_user

    @property
    def info(self) -> SessionInfo:
        """Who is on the other end, for policy and logs."""
        return SessionInfo(
            peer_host=self.peer_host,
            peer_port=self.peer_port,
            helo_name=self.conn.helo_name,
            esmtp=self.conn.esmtp,
            tls=self.conn.tls,
            authenticated_user=self.authenticated_user,
        )

    # -------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        self.transport = self._out.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH_WATER)
        peer = transport.get_extra_info("peername") or ("?", 0)
        self.peer_host, self.peer_port = str(peer[0]), int(peer[1])
        self.handler.peer = Peer(self.peer_host, self.peer_port)
        if transport.get_extra_info("ssl_object") is not None:  # implicit TLS
            self._tls_started(self.transport)
        self.services.metrics.session_opened(self.kind.value)
        self._on_open(self)
        self._safely(self._open)

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        if not self._reading_paused and self.conn.buffered_bytes > MAX_BUFFERED_INPUT:
            self._pause_reading()
        self._input_arrived()

    def eof_received(self) -> bool:
        self.conn.receive_data(b"")
        self._input_arrived()
        # Keep our side open to write the last replies; TLS cannot half-close.
        return self._tls_version is None

    def connection_lost(self, exc: Exception | None) -> None:
        self._out.lost = True
        self.conn.receive_data(b"")
        self._input_arrived()

    def pause_writing(self) -> None:
        """The client is not reading our replies: stop making more until it does."""
        self._write_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._input_arrived()

    def _input_arrived(self) -> None:
        """Handle what arrived now, unless a waiting step or the client's reading comes first."""
        if self._write_paused:
            return  # resume_writing comes back here
        if self.phase is Phase.READY:
            self._safely(self._pump)
        elif self.phase is Phase.OPENING and self._greet_handle is not None:
            self._safely(self._greet)  # input before the greeting: greet now, catch the talker

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self.transport.pause_reading()
            self._reading_paused = True

    # ------------------------------------------------------------ lifecycle

    def request_stop(self) -> None:
        """Graceful shutdown: close now unless a message body is being received."""
        self._stopping = True
        self._input_arrived()

    def abort(self) -> None:
        """End the session now (shutdown grace is over): 421, nothing half-received kept,
        no 250 for a message still being committed (the client keeps it and retries)."""
        if self.phase is not Phase.CLOSED:
            self._write_close(replies.SHUTTING_DOWN)  # RFC 5321 3.8: 421 at any time
            self._result = "shutdown"
            self._finish()

    def _safely(self, step: Callable[[], None]) -> None:
        """Run a step; a bug ends this session with 451, never the server or a silent close."""
        try:
            step()
        except Exception:
            self._crashed()

    def _crashed(self) -> None:
        log.exception(kv(event="session-error", client=self._client()))
        self._write_close(replies.LOCAL_ERROR_CLOSING)
        self._finish()

    def _open(self) -> None:
        log.info(kv(event="connect", client=self._client(), listener=self.kind.value))
        if self._tls_version is not None:
            self._log_tls()
        refusal = None if self._admitted else self._refuse_with(self.peer_host)
        if refusal is not None:
            self._write(self.conn.greeting(refusal))
            self._result = f"refused ({refusal.code})"
            log.info(kv(event="refused", client=self._client(), reply=str(refusal)))
            self._finish()
            return
        greet_delay = self.services.config.smtp.greet_delay
        if greet_delay > 0:
            # Hold the greeting back to catch clients that talk first (early talkers);
            # any input or the end of the connection greets at once.
            self._greet_handle = self._loop.call_later(greet_delay, self._safely, self._greet)
        else:
            self._greet()

    def _greet(self) -> None:
        if self._greet_handle is not None:
            self._greet_handle.cancel()
            self._greet_handle = None
        self.phase = Phase.READY
        self._write(self.conn.greeting(replies.greeting(self.services.config.hostname)))
        if self.conn.early_talker:
            self._result = "early-talker"
            self.handler.refused("before greeting", replies.SYNC_ERROR)
            self._finish()
            return
        self._pump()

    def _finish(self) -> None:
        """Close once: send what is held, drop an unfinished message, log, tell the listener."""
        if self.phase is Phase.CLOSED:
            return
        self.phase = Phase.CLOSED
        self._timer.cancel()
        if self._greet_handle is not None:
            self._greet_handle.cancel()
            self._greet_handle = None
        self._out.write()  # replies still held (e.g. before a 421 close) leave first
        self.handler.drop_transaction()
        if self.transport is not None:
            if self._write_paused:
                self.transport.abort()  # close() would wait for a client that does not read
            else:
                self.transport.close()
        if self.handler.quit and self._result == "closed":
            self._result = "quit"
        log.info(
            kv(
                event="disconnect",
                client=self._client(),
                helo=self.conn.helo_name,
                tls=self._tls_version,
                user=self.authenticated_user,
                messages=self.handler.messages,
                duration=f"{time.monotonic() - self._started:.3f}",
                result=self._result,
            )
        )
        self.services.metrics.session_closed(self.kind.value)
        self._on_close(self)
        if not self.done.done():
            self.done.set_result(None)

    def _client(self) -> str:
        return f"{self.peer_host}:{self.peer_port}"

    # ------------------------------------------------------------ writing

    def _write(self, data: bytes) -> None:
        if data:  # b"": only send what is held (counted when it was held)
            self._counted.sent(data)
        self._out.write(data)

    def _reply(self, data: bytes) -> None:
        self._counted.sent(data)
        self._out.reply(
            data, more_input=self.conn.buffered_bytes > 0 and self.conn.state is not State.CLOSED
        )

    def _write_close(self, reply: Reply) -> None:
        if self.conn.state is not State.CLOSED:
            self._counted.unsolicited()
            if reply.code == 421:
                self._write(self.conn.close_with(reply))
            else:
                self._write(reply.format())
                self.conn.close_with(replies.SHUTTING_DOWN)

    # ------------------------------------------------------------ the loop

    def _pump(self) -> None:
        """Handle every event the buffered input makes, until the core needs more bytes."""
        conn = self.conn
        while self.phase is Phase.READY:
            if self._write_paused:
                return  # resume_writing pumps again; reading stays paused until then
            event = conn.next_event()
            if not isinstance(event, Event):  # NEED_DATA
                self._write(b"")  # nothing more to answer now: send what is held
                self._await_input()
                return
            if not isinstance(event, BodyChunk):
                self._deadlines.command_arrived()
                self._counted.answering(event)
            if isinstance(event, ConnectionClosed):
                if conn.state is not State.CLOSED:
                    self._result = "lost"
                self._finish()
                return
            if isinstance(event, StartTls | Auth | EndOfData) or (
                isinstance(event, Mail) and self.handler.waits_at_mail()
            ):
                self._write(b"")  # never hold a reply while we wait
                self.phase = Phase.WAITING
                self._loop.create_task(self._wait_then_pump(event))
                return
            reply = self.handler.answer(event)
            if reply is not None:
                self._reply(conn.send(reply))
            if conn.state is State.CLOSED:
                self._finish()
                return

    async def _wait_then_pump(self, event: StartTls | Auth | EndOfData | Mail) -> None:
        """The steps that wait: TLS handshake, password check, the queue's commit."""
        try:
            if isinstance(event, StartTls):
                if not await self._starttls():
                    self._finish()
                    return
            else:
                if isinstance(event, Auth):
                    reply = await self.handler.authenticate(event)
                elif isinstance(event, Mail):
                    reply = await self.handler.mail_after_spf(event)
                else:
                    reply = await self.handler.end_data(event.size)
                if self.phase is Phase.CLOSED:  # aborted at shutdown meanwhile
                    if isinstance(event, EndOfData) and reply.code == 250:
                        # Stored after all, but the client was told 421 and keeps the
                        # message: it will come again (a duplicate, RFC 5321 6.1, no loss).
                        log.warning(
                            kv(
                                event="unacknowledged",
                                client=self._client(),
                                reply=str(reply),
                                reason="stored after the shutdown grace ended; 421 sent",
                            )
                        )
                    return
                self._reply(self.conn.send(reply))
                if self.conn.state is State.CLOSED:
                    self._finish()
                    return
        except Exception:
            self._crashed()
            return
        if self.phase is Phase.WAITING:
            self.phase = Phase.READY
            self._input_arrived()

    def _await_input(self) -> None:
        """Wait for bytes: resume reading, end the session at shutdown, arm the timeout."""
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        receiving = self.conn.receiving_body
        # Between two BDAT chunks (RFC 3030) a message is half received, as inside DATA.
        if self._stopping and not receiving and self.conn.state is not State.CHUNKING:
            self._write_close(replies.SHUTTING_DOWN)
            self._result = "shutdown"
            self._finish()
            return
        self._deadlines.waiting(
            self._loop.time(), receiving_body=receiving, partial_line=self.conn.buffered_bytes > 0
        )
        self._timer.arm()

    def _timed_out(self, kind: str) -> None:
        waiting_on_client = self.phase is Phase.READY or self._write_paused
        if self.phase is Phase.CLOSED or not waiting_on_client:
            return  # the next wait for input arms the timer again
        if self._write_paused:
            kind = "write"  # the client has read none of our replies for that long
        self._write_close(replies.IDLE_TIMEOUT)
        self._result = f"timeout ({kind})"
        log.info(kv(event="timeout", kind=kind, client=self._client(), state=self.conn.state.value))
        self._finish()

    # ------------------------------------------------------------------ TLS

    def _tls_started(self, transport: asyncio.Transport) -> None:
        self.transport = self._out.transport = transport
        self._tls_version, self._tls_cipher = negotiated(transport)
        self.services.metrics.tls_handshakes.labels(self.kind.value, self._tls_version).inc()

    def _log_tls(self) -> None:
        log.info(
            kv(
                event="tls",
                client=self._client(),
                version=self._tls_version,
                cipher=self._tls_cipher,
            )
        )

    async def _starttls(self) -> bool:
        """Answer STARTTLS and run the handshake; False when the session must end."""
        # The certificate in force now (a reload may have renewed it); STARTTLS was offered
        # by the services of the session's start, so those have one if no newer does.
        tls = self.handler.services.tls or self.services.tls
        assert tls is not None and self.transport is not None  # STARTTLS is offered only then
        # Pause before the 220 leaves: whatever the client sent after STARTTLS in plain
        # text is either buffered (the core drops it now) or arrives inside TLS.
        self._pause_reading()
        self._write(self.conn.send(replies.READY_FOR_TLS))
        try:
            transport = await upgrade(self._loop, self.transport, self, tls)
        except OSError as exc:  # ssl.SSLError, resets and the handshake timeout among them
            self._result = "tls-failed"
            error = str(exc) or type(exc).__name__
            log.info(kv(event="tls-failed", client=self._client(), error=error))
            return False
        if transport is None or self._out.lost:
            self._result = "lost"
            return False
        self._reading_paused = False  # start_tls resumed reading under TLS
        self._tls_started(transport)
        self._log_tls()
        return True
