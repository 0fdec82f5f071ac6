"""One SMTP connection: bytes <-> ServerConnection, timeouts, policy and queue calls.

The session is a thin transport: the protocol core decides what is valid; the
Router decides where recipients go; the QueueStore makes the message durable.
This module only moves bytes, keeps time and writes the log.

It is an ``asyncio.Protocol`` (not streams) so received bytes go straight into
the core, with a small task per connection that awaits policy and storage.
Reading pauses while the core holds more unprocessed input than
``MAX_BUFFERED_INPUT``: a client that floods us cannot grow our memory.  The
other direction is bounded too: while the transport holds more unsent replies
than its high-water mark (``pause_writing``), no input is processed and reading
is paused, so a client that pipelines commands and never reads what we answer
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
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING, cast

from mailwright.config import Config
from mailwright.errors import StorageError
from mailwright.logfmt import kv
from mailwright.model import Address, SessionInfo
from mailwright.policy.auth import Authenticator, AuthOutcome
from mailwright.policy.relay import RelayPolicy
from mailwright.policy.routing import Router, unique_targets
from mailwright.protocol import replies
from mailwright.protocol.auth import MECHANISMS
from mailwright.protocol.events import (
    Auth,
    AuthChallenge,
    BodyChunk,
    BodyRejected,
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfData,
    Event,
    Help,
    Mail,
    Noop,
    ProtocolViolation,
    Quit,
    Rcpt,
    Rset,
    StartTls,
    Vrfy,
)
from mailwright.protocol.reply import Reply
from mailwright.protocol.server import ProtocolConfig, ServerConnection
from mailwright.protocol.state import State
from mailwright.queue.base import BodySpool, QueueStore, Target
from mailwright.queue.space import SpaceGuard

if TYPE_CHECKING:
    from mailwright.server.tls import ServerTls

log = logging.getLogger("mailwright.smtpd")

MAX_BUFFERED_INPUT = 1 << 20  # pause reading above this much unprocessed input
#: Replies to pipelined commands held for one write stop being held past this size;
#: the write then lets the transport's flow control (pause_writing) stop the session.
MAX_HELD_REPLIES = 64 * 1024
#: The transport calls pause_writing above this many octets not yet sent.
WRITE_BUFFER_HIGH_WATER = 64 * 1024
MAX_LOGGED_USER_NAME = 256  # a failed AUTH logs the name tried, cut to this many characters
HEADER_SCAN_LIMIT = 256 * 1024  # bytes of the header section scanned for Received: lines
HELP_REPLY = Reply(
    214,
    "2.0.0",
    [
        "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP",
        "Send EHLO, MAIL FROM:<sender>, RCPT TO:<recipient>, DATA, then the message",
        "See RFC 5321; 'mailwright explain CODE' explains any reply",
    ],
)


class ListenerKind(enum.Enum):
    """What a listening socket is for; it decides TLS and AUTH for its sessions."""

    SMTP = "smtp"  # mail from other servers (port 25): STARTTLS offered, AUTH optional
    SUBMISSION = "submission"  # RFC 6409 (port 587): STARTTLS, then AUTH before MAIL
    IMPLICIT_TLS = "implicit_tls"  # RFC 8314 (port 465): TLS from the first byte, then AUTH


@dataclass
class SessionServices:
    """What every session of a listener shares; built once by app.py.

    ``tls`` None means no certificate: no STARTTLS, no AUTH, no submission.
    ``auth`` (failure counts, lockouts) and ``space`` (the free-space reserve)
    are shared by every session of this process.
    """

    config: Config
    router: Router
    relay: RelayPolicy
    store: QueueStore
    on_enqueued: Callable[[str], None] = lambda queue_id: None
    tls: ServerTls | None = None
    protocol_configs: dict[ListenerKind, ProtocolConfig] = field(init=False)
    auth: Authenticator = field(init=False)
    space: SpaceGuard = field(init=False)

    def __post_init__(self) -> None:
        smtp = self.config.smtp
        with_tls = self.tls is not None
        base = ProtocolConfig(
            max_line=smtp.max_line_length,
            max_message_size=smtp.max_message_size,
            max_recipients=smtp.max_recipients,
            max_errors=smtp.max_errors,
            max_refused_recipients=smtp.max_refused_recipients,
            max_body_line=smtp.max_body_line_length,
            starttls=with_tls,
            auth_mechanisms=tuple(MECHANISMS) if with_tls else (),
        )
        self.protocol_configs = {
            ListenerKind.SMTP: base,
            ListenerKind.SUBMISSION: replace(base, auth_required=True),
            ListenerKind.IMPLICIT_TLS: replace(base, auth_required=True),
        }
        self.auth = Authenticator(self.config)
        self.space = SpaceGuard(self.config.data_dir, self.config.queue.min_free_space)


_date_cache: tuple[int, str] = (0, "")


def _received_date() -> str:
    """RFC 5322 date of this second for the Received header, made once per second.

    email.utils.format_datetime costs as much as parsing a command; a busy
    server stamps many messages in the same second.
    """
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, format_datetime(datetime.fromtimestamp(now, UTC)))
    return _date_cache[1]


class HeaderScanner:
    """Counts Received: headers in the header section, for mail-loop detection (RFC 5321 6.3).

    Linear in the header section however it arrives: each piece is searched for
    the blank line once, with the three bytes before it (a CRLF CRLF split
    across pieces), never the whole section again.  ``examined`` counts the
    bytes searched, so a test can prove it.
    """

    def __init__(self, limit: int = HEADER_SCAN_LIMIT) -> None:
        self.received = 0
        self.done = False
        self.examined = 0
        self._limit = limit
        self._head = bytearray()

    def feed(self, data: bytes) -> None:
        if self.done:
            return
        start = max(0, len(self._head) - 3)
        self._head += data
        self.examined += len(self._head) - start
        end = self._head.find(b"\r\n\r\n", start)
        if end == -1 and len(self._head) < self._limit:
            return
        head = bytes(self._head[: end if end != -1 else self._limit])
        self.done = True
        self._head = bytearray()
        self.received = sum(1 for line in head.split(b"\r\n") if line[:9].lower() == b"received:")

    def finish(self) -> None:
        if not self.done:
            self.feed(b"\r\n\r\n")


@dataclass
class _Transaction:
    sender: Address | None
    mail: Mail
    recipients: list[Address] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    spool: BodySpool | None = None
    headers: HeaderScanner = field(default_factory=HeaderScanner)

    def discard(self) -> None:
        if self.spool is not None:
            self.spool.discard()
            self.spool = None


class SmtpSession(asyncio.Protocol):
    """One connection from accept to close.

    Commands are handled synchronously in ``data_received``: parsing, policy
    and the reply happen in the callback that brought the bytes, with no task
    switch and no timer operation per command.  Only the steps that must wait
    (the queue's commit after DATA, a password check, the TLS handshake) run
    as a task; while one runs, new input waits in the core and is handled when
    it ends, so replies stay in order.  Timeouts use one lazily re-armed timer
    per session (see ``_await_input``).
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
    ) -> None:
        """``admitted``: the listener already counted this connection against the limits
        (implicit TLS, counted at accept before its handshake)."""
        self.services = services
        self._admitted = admitted
        self.kind = kind
        self._on_open = on_open
        self._on_close = on_close
        self._refuse_with = refuse_with
        self.conn = ServerConnection(
            services.protocol_configs[kind], tls=kind is ListenerKind.IMPLICIT_TLS
        )
        #: The mailbox key of the user who authenticated, None before.
        self.authenticated_user: str | None = None
        self._tls_version: str | None = None
        self.transport: asyncio.Transport | None = None
        self.peer_host = "?"
        self.peer_port = 0
        self._loop = asyncio.get_running_loop()
        #: Resolved when the session has ended (the listener waits on it at shutdown).
        self.done: asyncio.Future[None] = self._loop.create_future()
        self._lost = False
        self._paused = False
        #: The transport's write buffer is over its high-water mark: handle no input.
        self._write_paused = False
        self._stopping = False
        self._greeted = False
        self._greet_handle: asyncio.TimerHandle | None = None
        self._busy = False  # a step that must wait (commit, AUTH, TLS) is under way
        self._finished = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._waiting_since = 0.0
        self._command_deadline: float | None = None
        self._data_deadline: float | None = None
        self._held: list[bytes] = []  # replies waiting to leave in one write
        self._held_bytes = 0
        self._transaction: _Transaction | None = None
        self._started = time.monotonic()
        self._messages = 0
        self._result = "closed"

    # -------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH_WATER)
        peer = transport.get_extra_info("peername") or ("?", 0)
        self.peer_host, self.peer_port = str(peer[0]), int(peer[1])
        if transport.get_extra_info("ssl_object") is not None:  # implicit TLS
            self._tls_started(self.transport)
        self._on_open(self)
        self._safely(self._open)

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        if not self._paused and self.conn.buffered_bytes > MAX_BUFFERED_INPUT:
            assert self.transport is not None
            self.transport.pause_reading()
            self._paused = True
        self._input_arrived()

    def eof_received(self) -> bool:
        self.conn.receive_data(b"")
        self._input_arrived()
        # Keep our side open to write the last replies; TLS cannot half-close.
        return self._tls_version is None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.conn.receive_data(b"")
        self._input_arrived()

    def _input_arrived(self) -> None:
        if self._busy or self._finished or self._write_paused:
            return  # handled when the waiting step ends or the client reads, or never
        self._safely(self._pump if self._greeted else self._greet)

    def pause_writing(self) -> None:
        """The client is not reading our replies: stop making more until it does."""
        self._write_paused = True
        if not self._paused and self.transport is not None:
            self.transport.pause_reading()
            self._paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._greeted:
            self._input_arrived()

    # ------------------------------------------------------------ lifecycle

    def request_stop(self) -> None:
        """Graceful shutdown: close now unless a message body is being received."""
        self._stopping = True
        self._input_arrived()

    def abort(self) -> None:
        """End the session now (shutdown grace is over); nothing half-received is kept."""
        if not self._finished:
            self._result = "shutdown"
            self._finish()

    def _safely(self, step: Callable[[], None]) -> None:
        """Run a step; a bug ends this session with 451, never the server or a silent close."""
        try:
            step()
        except Exception:
            log.exception(kv(event="session-error", client=self._client()))
            self._write_close(replies.LOCAL_ERROR.with_text("Local error; closing connection"))
            self._finish()

    def _open(self) -> None:
        config = self.services.config
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
        if config.smtp.greet_delay > 0:
            # Hold the greeting back to catch clients that talk first (issue: early
            # talkers); any input or the end of the connection greets at once.
            self._greet_handle = self._loop.call_later(
                config.smtp.greet_delay, self._safely, self._greet
            )
        else:
            self._greet()

    def _greet(self) -> None:
        if self._greet_handle is not None:
            self._greet_handle.cancel()
            self._greet_handle = None
        self._greeted = True
        config = self.services.config
        self._write(self.conn.greeting(Reply(220, None, f"{config.hostname} ESMTP mailwright")))
        if self.conn.early_talker:
            self._result = "early-talker"
            self._refused("before greeting", replies.SYNC_ERROR)
            self._finish()
            return
        self._pump()

    def _finish(self) -> None:
        """Close once: send what is held, drop an unfinished message, log, tell the listener."""
        if self._finished:
            return
        self._finished = True
        for handle in (self._timer, self._greet_handle):
            if handle is not None:
                handle.cancel()
        self._timer = self._greet_handle = None
        self._write(b"")  # replies still held (e.g. before a 421 close) leave first
        if self._transaction is not None:
            self._transaction.discard()
            self._transaction = None
        if self.transport is not None:
            if self._write_paused:
                self.transport.abort()  # close() would wait for a client that does not read
            else:
                self.transport.close()
        log.info(
            kv(
                event="disconnect",
                client=self._client(),
                helo=self.conn.helo_name,
                tls=self._tls_version,
                user=self.authenticated_user,
                messages=self._messages,
                duration=f"{time.monotonic() - self._started:.3f}",
                result=self._result,
            )
        )
        self._on_close(self)
        if not self.done.done():
            self.done.set_result(None)

    def _client(self) -> str:
        return f"{self.peer_host}:{self.peer_port}"

    @property
    def info(self) -> SessionInfo:
        """Who is on the other end, for policy and logs."""
        return SessionInfo(
            peer_host=self.peer_host,
            peer_port=self.peer_port,
            helo_name=self.conn.helo_name,
            esmtp=self.conn.esmtp,
            tls=self._tls_version is not None,
            authenticated_user=self.authenticated_user,
        )

    def _write(self, data: bytes) -> None:
        """Write ``data`` after any replies held back, so replies always leave in order."""
        if self._held:
            data = b"".join(self._held) + data
            self._held.clear()
            self._held_bytes = 0
        if data and self.transport is not None and not self._lost:
            self.transport.write(data)

    def _reply(self, data: bytes) -> None:
        """Send a reply, or hold it while more pipelined commands are already waiting.

        RFC 2920 lets a server answer a group of commands in one write; holding
        replies only while input is buffered means one write (one syscall) per
        group instead of one per command, and never a reply held while we wait.
        """
        if self.conn.buffered_bytes and self.conn.state is not State.CLOSED:
            self._held.append(data)
            self._held_bytes += len(data)
            if self._held_bytes > MAX_HELD_REPLIES:
                self._write(b"")  # may pause_writing: then the pump stops here
        else:
            self._write(data)

    def _write_close(self, reply: Reply) -> None:
        if self.conn.state is not State.CLOSED:
            if reply.code == 421:
                self._write(self.conn.close_with(reply))
            else:
                self._write(reply.format())
                self.conn.close_with(replies.SHUTTING_DOWN)

    # ------------------------------------------------------------ the loop

    def _pump(self) -> None:
        """Handle every event the buffered input makes, until the core needs more bytes."""
        conn = self.conn
        while not self._busy and not self._finished:
            if self._write_paused:
                return  # resume_writing pumps again; reading stays paused until then
            event = conn.next_event()
            if not isinstance(event, Event):  # NEED_DATA
                self._write(b"")  # nothing more to answer now: send what is held
                self._await_input()
                return
            if not isinstance(event, BodyChunk):
                self._command_deadline = None  # a whole command line arrived
            if isinstance(event, ConnectionClosed):
                if conn.state is not State.CLOSED:
                    self._result = "lost"
                self._finish()
                return
            if isinstance(event, StartTls | Auth | EndOfData):
                self._write(b"")  # never hold a reply while we wait
                self._busy = True
                self._loop.create_task(self._wait_then_pump(event))
                return
            reply = self._handle(event)
            if reply is not None:
                self._reply(conn.send(reply))
            if conn.state is State.CLOSED:
                self._finish()
                return

    async def _wait_then_pump(self, event: StartTls | Auth | EndOfData) -> None:
        """The steps that wait: TLS handshake, password check, the queue's commit."""
        try:
            if isinstance(event, StartTls):
                if not await self._starttls():
                    self._finish()
                    return
            else:
                if isinstance(event, Auth):
                    reply = await self._authenticate(event)
                else:
                    reply = await self._end_data(event.size)
                if self._finished:  # aborted at shutdown meanwhile
                    return
                self._reply(self.conn.send(reply))
                if self.conn.state is State.CLOSED:
                    self._finish()
                    return
        except Exception:
            log.exception(kv(event="session-error", client=self._client()))
            self._write_close(replies.LOCAL_ERROR.with_text("Local error; closing connection"))
            self._finish()
            return
        self._busy = False
        if not self._finished:
            self._safely(self._pump)

    def _await_input(self) -> None:
        """Wait for bytes: resume reading, end the session at shutdown, arm the timeout.

        idle_timeout bounds each silence; command_timeout one whole command line
        and data_timeout the whole DATA phase (RFC 5321 4.5.3.2), so a client
        that sends a byte a second cannot hold a session forever.  The timer is
        re-armed only when a deadline comes *earlier* than the one it is set
        for; when it fires it checks the real deadline and re-arms if the
        session was active meanwhile.  So a busy session costs no timer
        operation per command.
        """
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        receiving = self.conn.receiving_body
        if self._stopping and not receiving:
            self._write_close(replies.SHUTTING_DOWN)
            self._result = "shutdown"
            self._finish()
            return
        now = self._loop.time()
        self._waiting_since = now
        smtp = self.services.config.smtp
        if receiving:
            if self._data_deadline is None:
                self._data_deadline = now + smtp.data_timeout
        else:
            self._data_deadline = None
            if self.conn.buffered_bytes > 0 and self._command_deadline is None:
                # Part of a command line is waiting for its end.
                self._command_deadline = now + smtp.command_timeout
        deadline, _kind = self._deadline()
        if self._timer is None or deadline < self._timer_at:
            self._set_timer(deadline)

    def _deadline(self) -> tuple[float, str]:
        """The earliest limit now in force, and its name for the log."""
        smtp = self.services.config.smtp
        limits = [(self._waiting_since + smtp.idle_timeout, "idle")]
        if self._data_deadline is not None:
            limits.append((self._data_deadline, "data"))
        elif self._command_deadline is not None:
            limits.append((self._command_deadline, "command"))
        return min(limits)

    def _set_timer(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._safely, self._on_timer)
        self._timer_at = when

    def _on_timer(self) -> None:
        self._timer = None
        if self._finished or not self._greeted or (self._busy and not self._write_paused):
            return  # the next wait for input arms it again
        deadline, kind = self._deadline()
        if self._loop.time() < deadline:
            self._set_timer(deadline)  # there was input since: wait on
            return
        if self._write_paused:
            kind = "write"  # the client has read none of our replies for that long
        self._write_close(replies.IDLE_TIMEOUT)
        self._result = f"timeout ({kind})"
        log.info(kv(event="timeout", kind=kind, client=self._client(), state=self.conn.state.value))
        self._finish()

    # ------------------------------------------------------------------ TLS

    def _pause_for_tls(self) -> None:
        """Stop reading plain text; ``loop.start_tls`` resumes reading under TLS."""
        assert self.transport is not None
        self.transport.pause_reading()
        self._paused = True  # so flow control leaves the transport alone meanwhile

    def _tls_started(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        ssl_object = transport.get_extra_info("ssl_object")
        self._tls_version = ssl_object.version() if ssl_object is not None else "TLS"

    def _log_tls(self) -> None:
        assert self.transport is not None
        cipher = self.transport.get_extra_info("cipher")
        log.info(
            kv(
                event="tls",
                client=self._client(),
                version=self._tls_version,
                cipher=cipher[0] if cipher else None,
            )
        )

    async def _starttls(self) -> bool:
        """Answer STARTTLS and run the handshake; False when the session must end."""
        if self.services.tls is None:  # pragma: no cover - STARTTLS is not offered then
            self._write(self.conn.send(replies.TLS_NOT_AVAILABLE))
            return True
        # Pause before the 220 leaves: whatever the client sent after STARTTLS in plain
        # text is either buffered (the core drops it now) or arrives inside TLS.
        self._pause_for_tls()
        self._write(self.conn.send(replies.READY_FOR_TLS))
        return await self._handshake()

    async def _handshake(self) -> bool:
        """STARTTLS's handshake on the paused transport; False when the session must end."""
        tls = self.services.tls
        assert tls is not None and self.transport is not None
        try:
            transport = await self._loop.start_tls(
                self.transport,
                self,
                tls.current,
                server_side=True,
                ssl_handshake_timeout=tls.handshake_timeout,
            )
        except OSError as exc:  # ssl.SSLError, resets and the handshake timeout among them
            self._result = "tls-failed"
            log.info(
                kv(event="tls-failed", client=self._client(), error=str(exc) or type(exc).__name__)
            )
            return False
        if transport is None or self._lost:
            self._result = "lost"
            return False
        self._paused = False
        self._tls_started(cast(asyncio.Transport, transport))
        self._log_tls()
        return True

    # ------------------------------------------------------------- commands

    def _handle(self, event: Event) -> Reply | None:
        match event:
            case BodyChunk(data=data):
                txn = self._transaction
                if txn is not None and txn.spool is not None:
                    txn.headers.feed(data)
                    txn.spool.write(data)
                return None
            case BodyRejected(reply=reply):
                self._drop_transaction()
                self._refused("DATA", reply)
                return reply
            case ProtocolViolation(reply=reply):
                self._refused("command", reply)
                return reply
            case Ehlo(hostname=name, extended=extended):
                self._drop_transaction()
                hostname = self.services.config.hostname
                if extended:
                    return Reply(
                        250, None, [f"{hostname} greets {name}", *self.conn.capabilities()]
                    )
                return Reply(250, None, f"{hostname} greets {name}")
            case Mail():
                return self._mail(event)
            case AuthChallenge(reply=reply):
                return reply
            case Rcpt(recipient=recipient):
                return self._rcpt(recipient)
            case Data():
                return self._start_data()
            case Rset():
                self._drop_transaction()
                return replies.RESET_OK
            case Noop():
                return replies.NOOP_OK
            case Vrfy():
                # Never disclose which users exist (RFC 5321 3.5.3 allows 252).
                return replies.VRFY_CANNOT
            case Help():
                return HELP_REPLY
            case Quit():
                self._result = "quit"
                return replies.BYE
        raise AssertionError(f"unhandled event {event!r}")  # pragma: no cover

    async def _authenticate(self, event: Auth) -> Reply:
        """Ask policy/auth.py: a lockout (454), or the account's delay, then the check."""
        result = await self.services.auth.authenticate(
            self.peer_host, event.username, event.password
        )
        if result.outcome is AuthOutcome.OK:
            self.authenticated_user = result.user
            log.info(
                kv(event="auth", client=self._client(), user=result.user, mechanism=event.mechanism)
            )
        else:
            log.info(
                kv(
                    event=f"auth-{result.outcome.value}",
                    client=self._client(),
                    user=event.username[:MAX_LOGGED_USER_NAME],
                    mechanism=event.mechanism,
                    failures=result.failures or None,
                )
            )
        return result.reply

    def _refused(self, command: str, reply: Reply) -> None:
        log.info(kv(event="refused", client=self._client(), command=command, reply=str(reply)))

    def _drop_transaction(self) -> None:
        if self._transaction is not None:
            self._transaction.discard()
            self._transaction = None

    def _mail(self, event: Mail) -> Reply:
        """Sender ownership for authenticated users, then room on the disk for the message."""
        sender, user = event.sender, self.authenticated_user
        if user is not None and not self.services.relay.sender_allowed(user, sender):
            reply = Reply(553, "5.7.1", f"Sender address rejected: not owned by user {user}")
            self._refused(f"MAIL FROM:<{sender}>", reply)
            return reply
        refusal = self._space_refusal(event.size)
        if refusal is not None:
            self._refused(f"MAIL FROM:<{sender or ''}>", refusal)
            return refusal
        self._transaction = _Transaction(sender=sender, mail=event)
        return replies.SENDER_OK

    def _space_refusal(self, size: int | None) -> Reply | None:
        """452 4.3.1 below the free-space reserve, or when SIZE= would not fit above it.

        RFC 1870 6.1 (1): a server that lacks the storage for a message of the
        declared size now, but may have it later, answers MAIL with 452.
        """
        try:
            room = self.services.space.room()
        except OSError as exc:  # cannot tell: the store refuses at DATA if it must
            log.warning(kv(event="space-check-failed", client=self._client(), error=exc))
            return None
        if room <= 0:
            return replies.STORAGE_FULL
        if size is not None and size > room:
            return replies.NO_ROOM_FOR_SIZE
        return None

    def _rcpt(self, recipient: Address) -> Reply:
        txn = self._transaction
        assert txn is not None
        services = self.services
        may_relay = services.relay.may_relay(self.peer_host, self.authenticated_user)
        decision = services.router.route_recipient(recipient, may_relay=may_relay)
        if decision.reply.code < 400:
            txn.recipients.append(recipient)
            txn.targets.extend(decision.targets)
        else:
            self._refused(f"RCPT TO:<{recipient}>", decision.reply)
        return decision.reply

    def _start_data(self) -> Reply:
        txn = self._transaction
        assert txn is not None
        try:
            txn.spool = self.services.store.new_spool()
            txn.spool.write(self._received_header(txn))
        except (OSError, StorageError) as exc:
            log.error(kv(event="spool-error", client=self._client(), error=exc))
            txn.discard()
            return replies.STORAGE_FULL
        return replies.START_DATA

    def _received_header(self, txn: _Transaction) -> bytes:
        """Our trace header (RFC 5321 4.4), first in the stored message."""
        config = self.services.config
        protocol = "ESMTP" if self.conn.esmtp else "SMTP"
        if txn.mail.smtputf8:
            protocol = "UTF8SMTP"  # RFC 6531 3.7.3
        if protocol != "SMTP":
            # RFC 3848 (and RFC 6531 for UTF8SMTP): S for TLS, A for AUTH.
            secured = "S" if self._tls_version else ""
            authenticated = "A" if self.authenticated_user else ""
            protocol += secured + authenticated
        helo = self.conn.helo_name or "unknown"
        stamp = _received_date()
        rcpt = f"\r\n\tfor <{txn.recipients[0]}>" if len(txn.recipients) == 1 else ""
        header = (
            f"Received: from {helo} ([{self.peer_host}])\r\n"
            f"\tby {config.hostname} (mailwright) with {protocol}{rcpt};\r\n"
            f"\t{stamp}\r\n"
        )
        return header.encode("utf-8")

    async def _end_data(self, size: int) -> Reply:
        txn = self._transaction
        self._transaction = None
        assert txn is not None and txn.spool is not None
        txn.headers.finish()
        limit = self.services.config.smtp.max_received_headers
        if txn.headers.received > limit:
            txn.discard()
            self._refused("DATA", replies.TOO_MANY_HOPS)
            return replies.TOO_MANY_HOPS
        try:
            queue_id = await self.services.store.enqueue(
                txn.sender, unique_targets(txn.targets), txn.spool
            )
        except StorageError as exc:
            txn.discard()
            log.error(kv(event="store-error", client=self._client(), error=exc))
            self._refused("DATA", replies.STORAGE_FULL)
            return replies.STORAGE_FULL
        self._messages += 1
        log.info(
            kv(
                event="queued",
                id=queue_id,
                client=self._client(),
                helo=self.conn.helo_name,
                sender=f"<{txn.sender or ''}>",
                recipients=",".join(f"<{r}>" for r in txn.recipients),
                size=size,
                result=250,
            )
        )
        self.services.on_enqueued(queue_id)
        return Reply(250, "2.0.0", f"Ok: queued as {queue_id}")
