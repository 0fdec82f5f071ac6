"""SinkServer: a scriptable SMTP peer on loopback for client tests, built on ServerConnection.

The sink speaks SMTP through the real server core (so it is as strict as
mailwright), records every message it receives, and answers as the test says:
each step (greeting, EHLO, MAIL, RCPT, DATA, end of data, STARTTLS) can get a
chosen reply or a hang-up instead of the default positive one.  Behaviours
can be set for all connections (``sink.default``) or queued one per
transaction (``sink.script(...)``), e.g. "451 twice, then 250".

CHUNKING (RFC 3030) is offered only when asked (``SinkServer(chunking=True)``):
by default the sink is a peer that knows DATA alone.

STARTTLS is done here, outside the core, because the server core does not
offer it yet: a command line that is exactly STARTTLS is taken before the core
sees it.  Test-only and deliberately small: it is not how the server will do it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from mailwright.model import Address
from mailwright.protocol import replies
from mailwright.protocol.events import (
    NEED_DATA,
    Bdat,
    BodyChunk,
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfChunk,
    EndOfData,
    Event,
    Help,
    Mail,
    Noop,
    ProtocolViolation,
    Quit,
    Rcpt,
    Rset,
    Vrfy,
)
from mailwright.protocol.reply import Reply
from mailwright.protocol.server import ProtocolConfig, ServerConnection
from mailwright.protocol.state import State


class HangUp:
    """Close the connection instead of answering."""

    def __repr__(self) -> str:
        return "HANG_UP"


HANG_UP = HangUp()
Answer = Reply | HangUp


@dataclass(frozen=True, kw_only=True)
class Behaviour:
    """How the sink answers; None at a step means the ordinary positive reply.

    Each answer is given when that command arrives: ``ehlo=HANG_UP`` hangs up
    right after the greeting, ``rcpt=HANG_UP`` right after MAIL was accepted,
    ``end_of_data=HANG_UP`` once the whole body is in (the message is then
    recorded with ``reply=None``).  ``rcpt`` may map addresses (lower case)
    to answers; other recipients get 250.  ``hide`` names EHLO keywords not to
    advertise, e.g. ``{"PIPELINING"}`` to force lockstep.
    """

    greeting: Answer | None = None
    ehlo: Answer | None = None
    hide: frozenset[str] = frozenset()
    starttls: Answer | None = None
    mail: Answer | None = None
    rcpt: Answer | Mapping[str, Answer] | None = None
    data: Answer | None = None
    chunk: Answer | None = None  # each BDAT chunk but the LAST (whose answer is end_of_data)
    end_of_data: Answer | None = None


@dataclass(frozen=True)
class ReceivedMessage:
    """A body received to its end, with the envelope it came with and what the sink answered."""

    sender: Address | None
    recipients: tuple[Address, ...]
    body: bytes
    reply: Reply | None
    mail_params: dict[str, str | None]
    helo: str | None
    tls: bool
    chunks: int = 0  # BDAT commands it came in; 0 when it came after DATA
    #: Each accepted RCPT's parameters (NOTIFY, ORCPT ...), in the order of ``recipients``.
    rcpt_params: tuple[dict[str, str | None], ...] = ()


class SinkServer:
    """Listens on 127.0.0.1:<free port> in a thread of its own until ``stop()``."""

    def __init__(
        self,
        *,
        tls: ssl.SSLContext | None = None,
        hostname: str = "sink.test",
        host: str = "127.0.0.1",
        port: int = 0,
        chunking: bool = False,
    ) -> None:
        self.tls_context = tls
        self.chunking = chunking  # offer CHUNKING and BINARYMIME (RFC 3030)
        self.hostname = hostname
        self.default = Behaviour()
        self.messages: list[ReceivedMessage] = []
        self.connections = 0
        self.open_sessions = 0  # connections open right now
        self.peak_sessions = 0  # the most ever open at once
        self.end_of_data_delay = 0.0  # seconds before answering the end of data (a slow peer)
        self.hang_up_next = False
        self._script: deque[Behaviour] = deque()
        self._changed = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._serve, host, port, limit=1 << 20, reuse_address=True)
            )
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="sink", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("sink did not start")
        assert self._server is not None
        address = self._server.sockets[0].getsockname()
        self.host: str = address[0]
        self.port: int = address[1]

    # ------------------------------------------------------------ test API

    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours, one per transaction (the first also rules its connection's greeting
        and EHLO); once the queue is empty, ``default`` applies again."""
        with self._changed:
            self._script.extend(behaviours)

    def wait_for_messages(self, n: int, timeout: float = 10.0) -> list[ReceivedMessage]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.messages) >= n, timeout):
                raise AssertionError(f"{len(self.messages)} messages after {timeout}s, not {n}")
            return list(self.messages)

    def hang_up_at_next_command(self) -> None:
        """The next command on any open connection is met by a hang-up, no reply: as when
        a server closed an idle connection just as the client used it again."""
        with self._changed:
            self.hang_up_next = True

    def stop(self) -> None:
        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()

    # ----------------------------------------------------------- internals

    def _next_behaviour(self) -> Behaviour:
        with self._changed:
            return self._script.popleft() if self._script else self.default

    def _record(self, message: ReceivedMessage) -> None:
        with self._changed:
            self.messages.append(message)
            self._changed.notify_all()

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._sessions):
            task.cancel()
        await asyncio.gather(*self._sessions, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        with self._changed:
            self.connections += 1
            self.open_sessions += 1
            self.peak_sessions = max(self.peak_sessions, self.open_sessions)
        try:
            await _SinkSession(self, reader, writer).run()
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, ValueError):
            pass  # the client went away or failed the handshake: nothing to answer
        finally:
            with self._changed:
                self.open_sessions -= 1
            self._sessions.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


@dataclass
class _Transaction:
    sender: Address | None
    mail_params: dict[str, str | None]
    recipients: list[Address] = field(default_factory=list)
    rcpt_params: list[dict[str, str | None]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    chunks: int = 0


class _SinkSession:
    def __init__(
        self, sink: SinkServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.sink = sink
        self.reader = reader
        self.writer = writer
        self.behaviour = sink._next_behaviour()
        self.transactions = 0
        self.tls = False
        self.conn = self._new_core()
        self.transaction: _Transaction | None = None

    def _new_core(self) -> ServerConnection:
        offer_tls = self.sink.tls_context is not None and not self.tls
        return ServerConnection(
            ProtocolConfig(
                extra_capabilities=("STARTTLS",) if offer_tls else (),
                chunking=self.sink.chunking,
            )
        )

    async def _write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def run(self) -> None:
        greeting = self.behaviour.greeting or Reply(220, None, f"{self.sink.hostname} ESMTP sink")
        if isinstance(greeting, HangUp):
            return
        await self._write(self.conn.greeting(greeting))
        while self.conn.state is not State.CLOSED:
            if self.conn.receiving_body:  # after DATA's 354, or inside a BDAT chunk
                data = await self.reader.read(65536)
            else:
                # One line at a time, so a STARTTLS can be taken before the core sees it.
                data = await self.reader.readline()
                if data.rstrip(b"\r\n").upper() == b"STARTTLS" and self.sink.tls_context:
                    if not await self._starttls():
                        return
                    continue
            self.conn.receive_data(data)
            if not await self._answer_events():
                return

    async def _answer_events(self) -> bool:
        """Answer everything the core has; False when the session is over."""
        while True:
            event = self.conn.next_event()
            if event is NEED_DATA:
                return True
            if isinstance(event, ConnectionClosed):
                return False
            assert isinstance(event, Event)
            answer = self._answer(event)
            if isinstance(answer, HangUp):
                return False
            if isinstance(event, EndOfData) and self.sink.end_of_data_delay:
                await asyncio.sleep(self.sink.end_of_data_delay)
            if answer is not None:
                await self._write(self.conn.send(answer))
            if self.conn.state is State.CLOSED:
                return False

    async def _starttls(self) -> bool:
        context = self.sink.tls_context
        assert context is not None
        if self.tls or self.conn.state is not State.READY:
            await self._write(
                Reply(503, "5.5.1", "Bad sequence of commands: STARTTLS after EHLO, once").format()
            )
            return True
        answer = self.behaviour.starttls or Reply(220, "2.0.0", "Ready to start TLS")
        if isinstance(answer, HangUp):
            return False
        await self._write(answer.format())
        if answer.code != 220:
            return True
        await self.writer.start_tls(context)
        self.tls = True
        self.conn = self._new_core()
        self.conn.greeting(Reply(220, None, "not sent: the session goes on after TLS"))
        return True

    def _answer(self, event: Event) -> Answer | None:
        b = self.behaviour
        conn = self.conn
        if not isinstance(event, BodyChunk):
            with self.sink._changed:
                hang_up, self.sink.hang_up_next = self.sink.hang_up_next, False
            if hang_up:
                return HANG_UP
        match event:
            case BodyChunk(data=data):
                if self.transaction is not None:
                    self.transaction.body += data
                return None
            case ProtocolViolation(reply=reply):
                return reply
            case Ehlo(hostname=name, extended=True):
                self.transaction = None
                if b.ehlo is not None:
                    return b.ehlo
                caps = [c for c in conn.capabilities() if c.split(" ")[0] not in b.hide]
                return Reply(250, None, [f"{self.sink.hostname} greets {name}", *caps])
            case Ehlo():
                self.transaction = None
                return Reply(250, None, self.sink.hostname)
            case Mail(sender=sender, params=params):
                if self.transactions:
                    self.behaviour = b = self.sink._next_behaviour()
                self.transactions += 1
                answer = b.mail or replies.SENDER_OK
                if isinstance(answer, Reply) and answer.is_positive:
                    self.transaction = _Transaction(sender, dict(params))
                return answer
            case Rcpt(recipient=recipient, params=params):
                answer = self._rcpt_answer(recipient)
                if isinstance(answer, Reply) and answer.is_positive and self.transaction:
                    self.transaction.recipients.append(recipient)
                    self.transaction.rcpt_params.append(dict(params))
                return answer
            case Data():
                return b.data or replies.START_DATA
            case Bdat():
                if self.transaction is not None:
                    self.transaction.chunks += 1
                return None  # answered after the chunk
            case EndOfChunk(size=size):
                answer = b.chunk or replies.chunk_received(size)
                if isinstance(answer, Reply) and not answer.is_positive:
                    self.transaction = None  # the core ended the transaction
                return answer
            case EndOfData():
                number = len(self.sink.messages) + 1
                answer = b.end_of_data or Reply(250, "2.0.0", f"Ok: queued as SINK{number}")
                self._finish_message(answer)
                return answer
            case Rset():
                self.transaction = None
                return replies.RESET_OK
            case Noop():
                return replies.NOOP_OK
            case Quit():
                return replies.BYE
            case Vrfy():
                return replies.VRFY_CANNOT
            case Help():
                return Reply(214, "2.0.0", "sink: see RFC 5321")
        raise AssertionError(f"sink cannot answer {event!r}")

    def _rcpt_answer(self, recipient: Address) -> Answer:
        rule = self.behaviour.rcpt
        if rule is None:
            return replies.RECIPIENT_OK
        if isinstance(rule, Reply | HangUp):
            return rule
        return rule.get(str(recipient).lower(), replies.RECIPIENT_OK)

    def _finish_message(self, answer: Answer) -> None:
        txn, self.transaction = self.transaction, None
        if txn is None:
            return
        self.sink._record(
            ReceivedMessage(
                sender=txn.sender,
                recipients=tuple(txn.recipients),
                body=bytes(txn.body),
                reply=answer if isinstance(answer, Reply) else None,
                mail_params=txn.mail_params,
                helo=self.conn.helo_name,
                tls=self.tls,
                chunks=txn.chunks,
                rcpt_params=tuple(txn.rcpt_params),
            )
        )
