"""ServerConnection: the server role of SMTP as a sans-I/O state machine (in the style of h11).

Three verbs: ``receive_data(bytes)`` (``b""`` is end of file), ``next_event()``
(an Event, or NEED_DATA), ``send(reply) -> bytes``.  The connection alone knows
the state, so a 503 for a command out of order comes from state.py, never from
the caller.  Every command event must be answered with exactly one ``send``
before the next event is taken: pipelined commands (RFC 2920) are therefore
consumed one at a time and answered in order.

STARTTLS and AUTH live here as far as they are protocol: after the 220 to
``StartTls`` the core drops whatever it had buffered (plain text sent before
TLS must never be answered after it: CVE-2011-0411) and expects a new EHLO;
the SASL exchanges of AUTH run in the AUTH state and end in an ``Auth`` event
with the credentials, which the caller verifies.

Reading a command line into its event is server_parse.py's ``CommandParser``,
given the session facts it needs; the limits and extensions are limits.py's
``ProtocolConfig``, re-exported here.  This file keeps the state: what a reply
does to the session (``send``), the body phase between 354 and end of data,
and the BDAT chunks (RFC 3030): ``Bdat``, the chunk's octets as ``BodyChunk``
events, then ``EndOfChunk`` (or ``EndOfData`` after LAST) to answer.  A refused
BDAT's octets are read and dropped before its refusal is reported.
"""

from __future__ import annotations

from dataclasses import replace

from mailwright.errors import LocalProtocolError
from mailwright.protocol import replies
from mailwright.protocol import state as st
from mailwright.protocol.buffer import LineBuffer
from mailwright.protocol.data import BodyProblem, ChunkReader, DataReader, LineMeter
from mailwright.protocol.events import (
    NEED_DATA,
    Auth,
    AuthAborted,
    AuthChallenge,
    Bdat,
    BodyChunk,
    BodyRejected,
    Command,
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfChunk,
    EndOfData,
    Event,
    Mail,
    ProtocolViolation,
    Quit,
    Rcpt,
    Rset,
    StartTls,
    SyncViolation,
    _NeedData,
)
from mailwright.protocol.limits import (
    DEFAULT_MAX_AUTH_LINE,
    DEFAULT_MAX_BODY_LINE,
    DEFAULT_MAX_ERRORS,
    DEFAULT_MAX_LINE,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_RECIPIENTS,
    DEFAULT_MAX_REFUSED_RECIPIENTS,
    MIN_BODY_LINE_LENGTH,
    MIN_LINE_LENGTH,
    ProtocolConfig,
)
from mailwright.protocol.reply import Reply
from mailwright.protocol.server_parse import (
    ChunkStart,
    CommandParser,
    Transaction,
    body_rejection,
)
from mailwright.protocol.state import Fact, State

# ProtocolConfig and its defaults live in limits.py; they are imported from here too.
__all__ = [
    "DEFAULT_MAX_AUTH_LINE",
    "DEFAULT_MAX_BODY_LINE",
    "DEFAULT_MAX_ERRORS",
    "DEFAULT_MAX_LINE",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_MAX_RECIPIENTS",
    "DEFAULT_MAX_REFUSED_RECIPIENTS",
    "MIN_BODY_LINE_LENGTH",
    "MIN_LINE_LENGTH",
    "ProtocolConfig",
    "ServerConnection",
]

#: The one positive reply each of these commands may get (else a 4xx or 5xx): a caller
#: answering otherwise breaks the protocol.  Other commands may get any (code 0).
_POSITIVE_REPLY: dict[type[Command], tuple[str, int]] = {
    Data: ("DATA", 354),
    EndOfChunk: ("EndOfChunk", 250),
    StartTls: ("STARTTLS", 220),
    Auth: ("Auth", 235),
}
_ANY_POSITIVE_REPLY = ("", 0)
#: Syntax and sequence errors count toward max_errors; limits (452, 552) do not.
_COUNTED_ERROR_CODES = frozenset({500, 501, 502, 503, 504, 530, 538, 553, 555})


class ServerConnection:
    """One server session.  ``tls=True`` when TLS started before the first byte (RFC 8314)."""

    def __init__(self, config: ProtocolConfig | None = None, *, tls: bool = False) -> None:
        self.config = config or ProtocolConfig()
        self.state = State.GREETING
        self.early_talker = False
        self.helo_name: str | None = None
        self.esmtp = False
        self.errors = 0
        #: RCPTs answered 5xx in this session; not errors of the client's protocol.
        self.refused_recipients = 0
        self.tls = tls
        #: The user name of the ``Auth`` event answered 235, None before.
        self.authenticated: str | None = None
        self._lines = LineBuffer(self.config.command_buffer_limit)
        self._parser = CommandParser(self.config, self._lines)
        self._reader: DataReader | None = None
        self._data_finished = False
        #: The BDAT chunk being read, with what to report once its octets are in.
        self._chunk: ChunkReader | None = None
        self._chunk_start: ChunkStart | None = None
        self._transaction: Transaction | None = None
        self._pending: Command | None = None
        self._eof = False

    # ----------------------------------------------------------- public verbs

    def capabilities(self) -> tuple[str, ...]:
        """EHLO keywords, in the order they are advertised (RFC 5321 4.1.1.1)."""
        return self.config.capabilities(tls=self.tls)

    @property
    def facts(self) -> Fact:
        """What state.py's guards look at besides the state."""
        facts = Fact.TLS if self.tls else Fact.NONE
        if self.authenticated is not None:
            facts |= Fact.AUTHENTICATED
        if self.config.auth_required:
            facts |= Fact.AUTH_REQUIRED
        if self._transaction is not None and self._transaction.binarymime:
            facts |= Fact.BINARYMIME
        return facts

    def greeting(self, reply: Reply) -> bytes:
        """Our opening reply: 220 to serve, or 421/554 to refuse the connection."""
        if self.state is not State.GREETING:
            raise LocalProtocolError("the greeting was already sent")
        if reply.code == 220 and (len(self._lines) or self._eof):
            # An early talker: it spoke before the greeting (RFC 5321 4.3.1
            # "the client waits for the greeting"), typical of spam engines.
            self.early_talker = True
            self._close()
            return replies.SYNC_ERROR.format()
        self.state = State.CONNECTED if reply.code == 220 else State.CLOSED
        return reply.format()

    def receive_data(self, data: bytes) -> None:
        if self.state is State.CLOSED:
            return
        if not data:
            self._eof = True
            return
        if self._reader is not None:
            self._reader.feed(data)
        else:
            self._lines.feed(data)

    def next_event(self) -> Event | _NeedData:
        if self._pending is not None:
            raise LocalProtocolError(
                f"answer {type(self._pending).__name__} with send() before taking the next event"
            )
        if self.state is State.CLOSED:
            return ConnectionClosed()
        if self.state is State.GREETING:
            raise LocalProtocolError("send the greeting first")
        if self._reader is not None:
            return self._next_body_event(self._reader)
        if self._chunk is not None:
            return self._next_chunk_event(self._chunk)
        line = self._lines.next_line()
        if line is None:
            return ConnectionClosed() if self._eof else NEED_DATA
        event = self._parser.parse(line, self.state, self.facts, self.esmtp, self._transaction)
        if isinstance(event, ChunkStart):
            return self._start_chunk(event)
        self._pending = event
        return event

    def send(self, reply: Reply) -> bytes:
        """Answer the pending command; returns the bytes to write.

        After a 421 (ours or the caller's), or 221 to QUIT, ``state`` is CLOSED
        and the caller closes the connection once the bytes are written.
        """
        event = self._pending
        if event is None:
            raise LocalProtocolError("no command is waiting for a reply")
        self._pending = None
        out = reply.format()
        if reply.code == 421 or isinstance(event, SyncViolation):
            self._close()
            return out
        if isinstance(event, ProtocolViolation):
            if isinstance(event, BodyRejected):
                self._end_transaction()
            if isinstance(event, AuthAborted):
                self._apply(event, reply)
            if _is_counted_error(event.reply):
                return self._count_error(out)
            return out
        if isinstance(event, EndOfData):
            self._end_transaction()
            return out
        if isinstance(event, EndOfChunk):
            if reply.code >= 400:
                self._end_transaction()  # RFC 3030 2: no more chunks come after an error
            elif reply.code != 250:
                raise LocalProtocolError("EndOfChunk must be answered with 250 or a 4xx/5xx reply")
            return out
        if isinstance(event, AuthChallenge):
            if reply.code != 334:
                raise LocalProtocolError("answer AuthChallenge with its own 334 reply")
            # RFC 4954 4: continue-req = "334" SP [base64] CRLF, the space even when empty.
            out = f"334 {reply.text}\r\n".encode("ascii")
        self._apply(event, reply)
        if isinstance(event, Rcpt) and reply.code >= 500:
            return self._count_refused_recipient(out)
        if isinstance(event, Auth) and reply.code == 535:
            # Guessing passwords is an error like any other: bounded by max_errors.
            return self._count_error(out)
        return out

    def close_with(self, reply: Reply) -> bytes:
        """An unsolicited closing reply (timeout, shutdown): RFC 5321 3.8 allows 421 at any time.

        Whatever was pending or buffered is dropped; the state becomes CLOSED.
        """
        if reply.code != 421:
            raise LocalProtocolError("only a 421 reply may close a session unasked")
        self._pending = None
        self._close()
        return reply.format()

    @property
    def in_transaction(self) -> bool:
        return self.state in st.IN_TRANSACTION

    @property
    def receiving_body(self) -> bool:
        """True between the 354 and the reply to the end of data, and from a BDAT line to
        the reply to its chunk."""
        return (
            self._reader is not None
            or self._chunk is not None
            or isinstance(self._pending, EndOfData | EndOfChunk | BodyRejected)
        )

    @property
    def awaiting_reply(self) -> bool:
        return self._pending is not None

    @property
    def buffered_bytes(self) -> int:
        """Input received but not yet turned into events (for the transport's flow control)."""
        reader = self._reader
        return len(self._lines) + (reader.buffered if reader is not None else 0)

    # ------------------------------------------------------------ internals

    def _count_error(self, out: bytes) -> bytes:
        self.errors += 1
        if self.errors >= self.config.max_errors:
            # RFC 5321 3.8: a server that must close may send 421 at any time.
            self._close()
            return out + replies.TOO_MANY_ERRORS.format()
        return out

    def _count_refused_recipient(self, out: bytes) -> bytes:
        """A client that keeps naming unknown recipients is guessing addresses: close.

        Counted apart from ``errors``: a refused recipient is the server's
        decision, not a mistake in the client's protocol.  RFC 5321 3.8 allows
        the 421.
        """
        self.refused_recipients += 1
        if self.refused_recipients > self.config.max_refused_recipients:
            self._close()
            return out + replies.TOO_MANY_REFUSED_RECIPIENTS.format()
        return out

    def _close(self) -> None:
        self.state = State.CLOSED
        self._parser.sasl = None
        self._reader = None
        self._chunk = self._chunk_start = None
        self._transaction = None
        self._lines.clear()

    def _end_transaction(self) -> None:
        """After the reply to the end of data (``_next_body_event`` already dropped the reader)."""
        self._transaction = None
        self.state = State.READY

    def _apply(self, event: Command, reply: Reply) -> None:
        positive = reply.code < 400
        name, code = _POSITIVE_REPLY.get(type(event), _ANY_POSITIVE_REPLY)
        if code and positive and reply.code != code:
            raise LocalProtocolError(f"{name} must be answered with {code} or a 4xx/5xx reply")
        if isinstance(event, Quit) and positive:
            self._close()
            return
        self.state = st.next_state(self.state, type(event), positive)
        if isinstance(event, Auth | AuthAborted):
            self._parser.sasl = None
        if not positive:
            return
        if isinstance(event, StartTls):
            # RFC 3207 4.2: forget everything learnt in plain text, and everything buffered.
            self._lines.clear()
            self.tls = True
            self.helo_name = None
            self.esmtp = False
            self.authenticated = None
            self._transaction = None
        elif isinstance(event, Auth):
            self.authenticated = event.username
        elif isinstance(event, Ehlo):
            self.helo_name = event.hostname
            self.esmtp = event.extended
            self._transaction = None
        elif isinstance(event, Rset):
            self._transaction = None
        elif isinstance(event, Mail):
            self._transaction = Transaction(
                smtputf8=event.smtputf8, binarymime=event.body_type == "BINARYMIME"
            )
        elif isinstance(event, Rcpt):
            assert self._transaction is not None
            self._transaction.accepted += 1
        elif isinstance(event, Data):
            self._reader = DataReader(
                self.config.max_message_size, max_line=self.config.max_body_line
            )
            self._data_finished = False
            self._reader.feed(self._lines.take_all())

    def _next_body_event(self, reader: DataReader) -> Event | _NeedData:
        if not self._data_finished:
            result = reader.step()
            if result.finished:
                self._data_finished = True
                self._lines.feed(result.leftover)
            if result.chunk:
                return BodyChunk(data=result.chunk)
        if not self._data_finished:
            if self._eof:
                self._close()
                return ConnectionClosed()
            return NEED_DATA
        self._reader = None
        self._data_finished = False
        event: Command
        if reader.problem is None:
            event = EndOfData(size=reader.size)
        else:
            event = BodyRejected(reply=body_rejection(reader.problem, self.config))
        self._pending = event
        return event

    def _start_chunk(self, start: ChunkStart) -> Event | _NeedData:
        """A BDAT line: read its octets; ``Bdat`` first when the chunk is taken."""
        self._chunk_start = start
        self._chunk = ChunkReader(start.size, keep=start.refusal is None)
        if start.refusal is not None:
            return self._next_chunk_event(self._chunk)
        transaction = self._transaction
        assert transaction is not None
        if transaction.chunked == 0 and self.config.max_body_line and not transaction.binarymime:
            transaction.lines = LineMeter(self.config.max_body_line)
        transaction.chunked += start.size
        self.state = st.next_state(self.state, Bdat, True)
        return Bdat(size=start.size, last=start.last)

    def _next_chunk_event(self, chunk: ChunkReader) -> Event | _NeedData:
        """The chunk's octets as they come, then what answers it (RFC 3030 2)."""
        piece = chunk.take(self._lines)
        lines = self._transaction.lines if self._transaction is not None else None
        if piece and lines is not None and lines.too_long(piece):
            # As after DATA: the message is refused, the rest of the chunk read and dropped.
            chunk.keep = False
            too_long = body_rejection(BodyProblem.LINE_TOO_LONG, self.config)
            assert self._chunk_start is not None
            self._chunk_start = replace(self._chunk_start, refusal=BodyRejected(reply=too_long))
            piece = b""
        if piece:
            return BodyChunk(data=piece)
        if not chunk.done:
            if self._eof:
                self._close()
                return ConnectionClosed()
            return NEED_DATA
        start, transaction = self._chunk_start, self._transaction
        assert start is not None
        self._chunk = self._chunk_start = None
        event: Command
        if start.refusal is not None:
            event = start.refusal
        elif start.last:
            assert transaction is not None
            event = EndOfData(size=transaction.chunked)
        else:
            assert transaction is not None
            event = EndOfChunk(size=start.size, total=transaction.chunked)
        self._pending = event
        return event


def _is_counted_error(reply: Reply) -> bool:
    """Syntax and sequence errors count toward max_errors; limits (452, 552) do not."""
    return reply.code in _COUNTED_ERROR_CODES or (reply.code == 554 and reply.enhanced == "5.5.1")
