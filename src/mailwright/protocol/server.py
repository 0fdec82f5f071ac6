"""ServerConnection: the server role of SMTP as a sans-I/O state machine (in the style of h11).

Three verbs: ``receive_data(bytes)`` (``b""`` is end of file), ``next_event()``
(an Event, or NEED_DATA), ``send(reply) -> bytes``.  The connection alone knows
the state, so a 503 for a command out of order comes from state.py, never from
the caller.  Every command event must be answered with exactly one ``send``
before the next event is taken: pipelined commands (RFC 2920) are therefore
consumed one at a time and answered in order.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailwright.errors import LocalProtocolError
from mailwright.model import Address
from mailwright.protocol import replies
from mailwright.protocol import state as st
from mailwright.protocol.buffer import LineBuffer, LineProblem
from mailwright.protocol.commands import (
    MAX_SIZE_DIGITS,
    CommandSyntaxError,
    parse_helo_argument,
    parse_parameters,
    parse_path,
    scan_path,
    split_command,
    split_mail_argument,
)
from mailwright.protocol.data import BodyProblem, DataReader
from mailwright.protocol.events import (
    NEED_DATA,
    BodyChunk,
    BodyRejected,
    Command,
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
    Vrfy,
    _NeedData,
)
from mailwright.protocol.reply import Reply
from mailwright.protocol.state import State

DEFAULT_MAX_LINE = 512  # RFC 5321 4.5.3.1.4, CRLF included
DEFAULT_MAX_MESSAGE_SIZE = 26_214_400
DEFAULT_MAX_RECIPIENTS = 100  # RFC 5321 4.5.3.1.8: at least 100 must be accepted
DEFAULT_MAX_ERRORS = 10

#: Verbs of RFC 5321 and common extensions that this server knows but does not offer.
_NOT_IMPLEMENTED = frozenset(
    {"EXPN", "TURN", "ETRN", "ATRN", "SEND", "SOML", "SAML", "STARTTLS", "AUTH", "BDAT"}
)
_NO_ARGUMENTS = {"DATA": Data, "RSET": Rset, "QUIT": Quit}


@dataclass(frozen=True, slots=True)
class ProtocolConfig:
    """The limits and extensions of one server session; immutable, passed in, never global."""

    max_line: int = DEFAULT_MAX_LINE
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_recipients: int = DEFAULT_MAX_RECIPIENTS
    max_errors: int = DEFAULT_MAX_ERRORS
    smtputf8: bool = True
    extra_capabilities: tuple[str, ...] = ()


@dataclass(slots=True)
class _Transaction:
    """MAIL ... end of data; RSET drops it without touching the session."""

    smtputf8: bool
    accepted: int = 0


class ServerConnection:
    def __init__(self, config: ProtocolConfig | None = None) -> None:
        self.config = config or ProtocolConfig()
        self.state = State.GREETING
        self.helo_name: str | None = None
        self.esmtp = False
        self.errors = 0
        self._lines = LineBuffer(self.config.max_line)
        self._reader: DataReader | None = None
        self._data_finished = False
        self._transaction: _Transaction | None = None
        self._pending: Command | None = None
        self._eof = False

    # ----------------------------------------------------------- public verbs

    def capabilities(self) -> list[str]:
        """EHLO keywords, in the order they are advertised (RFC 5321 4.1.1.1)."""
        caps = [
            "PIPELINING",
            f"SIZE {self.config.max_message_size}",
            "8BITMIME",
        ]
        if self.config.smtputf8:
            caps.append("SMTPUTF8")
        caps.append("ENHANCEDSTATUSCODES")
        caps.extend(self.config.extra_capabilities)
        return caps

    def greeting(self, reply: Reply) -> bytes:
        """Our opening reply: 220 to serve, or 421/554 to refuse the connection."""
        if self.state is not State.GREETING:
            raise LocalProtocolError("the greeting was already sent")
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
        line = self._lines.next_line()
        if line is None:
            return ConnectionClosed() if self._eof else NEED_DATA
        event = self._parse(line)
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
        if reply.code == 421:
            self._close()
            return out
        if isinstance(event, ProtocolViolation):
            if isinstance(event, BodyRejected):
                self._end_transaction()
            if self._is_counted_error(event.reply):
                self.errors += 1
                if self.errors >= self.config.max_errors:
                    # RFC 5321 3.8: a server that must close may send 421 at any time.
                    self._close()
                    return out + replies.TOO_MANY_ERRORS.format()
            return out
        if isinstance(event, EndOfData):
            self._end_transaction()
            return out
        self._apply(event, reply)
        return out

    @property
    def in_transaction(self) -> bool:
        return self.state in st.IN_TRANSACTION

    # ------------------------------------------------------------ internals

    def _close(self) -> None:
        self.state = State.CLOSED
        self._reader = None
        self._transaction = None
        self._lines.clear()

    def _end_transaction(self) -> None:
        self._transaction = None
        self._reader = None
        self._data_finished = False
        self.state = State.READY

    @staticmethod
    def _is_counted_error(reply: Reply) -> bool:
        """Syntax and sequence errors count toward max_errors; limits (452, 552) do not."""
        return reply.code in (500, 501, 502, 503, 504, 553, 555) or (
            reply.code == 554 and reply.enhanced == "5.5.1"
        )

    def _apply(self, event: Command, reply: Reply) -> None:
        positive = reply.code < 400
        if isinstance(event, Data) and positive and reply.code != 354:
            raise LocalProtocolError("DATA must be answered with 354 or a 4xx/5xx reply")
        if isinstance(event, Quit) and positive:
            self._close()
            return
        self.state = st.next_state(self.state, type(event), positive)
        if not positive:
            return
        if isinstance(event, Ehlo):
            self.helo_name = event.hostname
            self.esmtp = event.extended
            self._transaction = None
        elif isinstance(event, Rset):
            self._transaction = None
        elif isinstance(event, Mail):
            self._transaction = _Transaction(smtputf8=event.smtputf8)
        elif isinstance(event, Rcpt):
            assert self._transaction is not None
            self._transaction.accepted += 1
        elif isinstance(event, Data):
            self._reader = DataReader(self.config.max_message_size)
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
        if reader.problem is BodyProblem.TOO_BIG:
            event = BodyRejected(reply=_too_big(self.config.max_message_size))
        elif reader.problem is BodyProblem.BARE_LINE_ENDING:
            event = BodyRejected(reply=replies.BARE_LINE_ENDING_IN_DATA)
        else:
            event = EndOfData(size=reader.size)
        self._pending = event
        return event

    def _parse(self, line: bytes | LineProblem) -> Command:
        if line is LineProblem.TOO_LONG:
            return ProtocolViolation(reply=replies.LINE_TOO_LONG)
        if line is LineProblem.BARE_LINE_ENDING:
            return ProtocolViolation(reply=replies.BARE_LINE_ENDING)
        assert isinstance(line, bytes)
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                return ProtocolViolation(reply=replies.BAD_ENCODING)
        try:
            return self._parse_command(text)
        except CommandSyntaxError as exc:
            return ProtocolViolation(reply=exc.reply)

    def _parse_command(self, text: str) -> Command:
        cmd = split_command(text)
        verb = cmd.verb
        command_type = _VERBS.get(verb)
        if command_type is None:
            if verb in _NOT_IMPLEMENTED:
                return ProtocolViolation(reply=replies.NOT_IMPLEMENTED)
            if not verb:
                return ProtocolViolation(reply=Reply(500, "5.5.2", "Syntax error: empty command"))
            return ProtocolViolation(reply=replies.UNKNOWN_COMMAND)
        out_of_sequence = st.check(self.state, command_type)
        if out_of_sequence is not None:
            return ProtocolViolation(reply=out_of_sequence)
        if not text.isascii() and command_type is not Mail and command_type is not Rcpt:
            return ProtocolViolation(reply=replies.BAD_ENCODING)
        if verb in _NO_ARGUMENTS:
            if cmd.argument.strip(" "):
                return ProtocolViolation(
                    reply=Reply(501, "5.5.4", f"Syntax error: {verb} takes no arguments")
                )
            return _NO_ARGUMENTS[verb]()
        if command_type is Ehlo:
            return Ehlo(hostname=parse_helo_argument(cmd.argument, verb), extended=verb == "EHLO")
        if command_type is Mail:
            return self._parse_mail(cmd.argument)
        if command_type is Rcpt:
            return self._parse_rcpt(cmd.argument)
        if command_type is Vrfy:
            if not cmd.argument.strip(" "):
                raise CommandSyntaxError(Reply(501, "5.5.4", "Syntax error: send VRFY <user>"))
            return Vrfy(argument=cmd.argument.strip(" "))
        if command_type is Help:
            return Help(topic=cmd.argument.strip(" "))
        return Noop()

    def _parse_mail(self, argument: str) -> Command:
        rest = split_mail_argument(argument, "FROM:")
        path, param_text = scan_path(rest, recipient=False)
        params = parse_parameters(param_text)
        if params and not self.esmtp:
            return _unsupported(next(iter(params)), "send EHLO instead of HELO to use parameters")
        size: int | None = None
        body_type: str | None = None
        smtputf8 = False
        for key, value in params.items():
            if key == "SIZE":
                if not value or not value.isdigit() or len(value) > MAX_SIZE_DIGITS:
                    raise CommandSyntaxError(
                        Reply(501, "5.5.4", "Syntax error: SIZE takes a number of octets")
                    )
                size = int(value)
            elif key == "BODY":
                if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                    raise CommandSyntaxError(
                        Reply(501, "5.5.4", "Syntax error: BODY must be 7BIT or 8BITMIME")
                    )
                body_type = value.upper()
            elif key == "SMTPUTF8" and self.config.smtputf8:
                if value is not None:
                    raise CommandSyntaxError(
                        Reply(501, "5.5.4", "Syntax error: SMTPUTF8 takes no value")
                    )
                smtputf8 = True
            else:
                return _unsupported(key, "send MAIL FROM:<address> without it")
        sender = parse_path(path, null_allowed=True, smtputf8=smtputf8, recipient=False)
        if size is not None and size > self.config.max_message_size:
            # RFC 1870 6.1: refuse at MAIL when the declared size is too large.
            return ProtocolViolation(reply=_too_big(self.config.max_message_size))
        return Mail(sender=sender, size=size, body_type=body_type, smtputf8=smtputf8, params=params)

    def _parse_rcpt(self, argument: str) -> Command:
        rest = split_mail_argument(argument, "TO:")
        path, param_text = scan_path(rest, recipient=True)
        params = parse_parameters(param_text)
        if params:
            return _unsupported(next(iter(params)), "send RCPT TO:<address> without it")
        transaction = self._transaction
        assert transaction is not None
        recipient = parse_path(
            path, null_allowed=False, smtputf8=transaction.smtputf8, recipient=True
        )
        assert isinstance(recipient, Address)
        if transaction.accepted >= self.config.max_recipients:
            return ProtocolViolation(reply=replies.TOO_MANY_RECIPIENTS)
        return Rcpt(recipient=recipient, params=params)


_VERBS: dict[str, type[Command]] = {
    "EHLO": Ehlo,
    "HELO": Ehlo,
    "MAIL": Mail,
    "RCPT": Rcpt,
    "DATA": Data,
    "RSET": Rset,
    "NOOP": Noop,
    "QUIT": Quit,
    "VRFY": Vrfy,
    "HELP": Help,
}


def _unsupported(keyword: str, hint: str) -> ProtocolViolation:
    return ProtocolViolation(reply=Reply(555, "5.5.4", f"Unsupported parameter {keyword}; {hint}"))


def _too_big(limit: int) -> Reply:
    return Reply(552, "5.3.4", f"Message size exceeds fixed maximum message size of {limit} octets")
