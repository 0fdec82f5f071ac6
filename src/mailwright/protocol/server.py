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
"""

from __future__ import annotations

from dataclasses import dataclass

from mailwright.errors import LocalProtocolError
from mailwright.model import Address
from mailwright.protocol import auth, replies
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
    Auth,
    AuthAborted,
    AuthChallenge,
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
    StartTls,
    SyncViolation,
    Vrfy,
    _NeedData,
)
from mailwright.protocol.reply import Reply
from mailwright.protocol.state import Fact, State

# The limits of a session, named here once: the protocol core must work without any
# configuration, and config/schema.py takes its defaults for [smtp] from these.
#: RFC 5321 4.5.3.1.4: a server must accept command lines of 512 octets, CRLF included;
#: a lower limit breaks clients, so it is also the least a configuration may set.
MIN_LINE_LENGTH = 512
DEFAULT_MAX_LINE = MIN_LINE_LENGTH
#: RFC 5321 4.5.3.1.6: text lines of 1000 octets, CRLF included, must be accepted.
MIN_BODY_LINE_LENGTH = 1000
#: Octets per message line, CRLF included; 0 accepts any length (never buffered whole).
DEFAULT_MAX_BODY_LINE = 0
DEFAULT_MAX_MESSAGE_SIZE = 26_214_400
DEFAULT_MAX_RECIPIENTS = 100  # RFC 5321 4.5.3.1.8: at least 100 must be accepted
DEFAULT_MAX_ERRORS = 10
#: RCPTs refused (5xx) in one session before 421: guessing addresses (directory
#: harvesting) is cut off, as Postfix's smtpd_hard_error_limit does.
DEFAULT_MAX_REFUSED_RECIPIENTS = 20

DEFAULT_MAX_AUTH_LINE = auth.DEFAULT_MAX_AUTH_LINE

#: Verbs of RFC 5321 and common extensions that this server knows but does not offer
#: (STARTTLS and AUTH are offered only when configured).
_NOT_IMPLEMENTED = frozenset(
    {"EXPN", "TURN", "ETRN", "ATRN", "SEND", "SOML", "SAML", "STARTTLS", "AUTH", "BDAT"}
)
_NO_ARGUMENTS = {"DATA": Data, "RSET": Rset, "QUIT": Quit, "STARTTLS": StartTls}


@dataclass(frozen=True, slots=True)
class ProtocolConfig:
    """The limits and extensions of one server session; immutable, passed in, never global."""

    max_line: int = DEFAULT_MAX_LINE
    max_body_line: int = DEFAULT_MAX_BODY_LINE
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_recipients: int = DEFAULT_MAX_RECIPIENTS
    max_errors: int = DEFAULT_MAX_ERRORS
    #: RCPTs answered 5xx before the session is closed with 421 (directory harvesting).
    max_refused_recipients: int = DEFAULT_MAX_REFUSED_RECIPIENTS
    smtputf8: bool = True
    extra_capabilities: tuple[str, ...] = ()
    #: A certificate is configured: STARTTLS is offered while TLS is not active.
    starttls: bool = False
    #: SASL mechanisms offered by AUTH once TLS is active (RFC 4954 4: never in plain text).
    auth_mechanisms: tuple[str, ...] = ()
    #: Submission (RFC 6409 4.3): MAIL is refused with 530 until AUTH succeeded.
    auth_required: bool = False
    max_auth_line: int = DEFAULT_MAX_AUTH_LINE

    def __post_init__(self) -> None:
        unknown = [m for m in self.auth_mechanisms if m not in auth.MECHANISMS]
        if unknown:
            raise ValueError(f"unknown SASL mechanisms: {unknown}")


@dataclass(slots=True)
class _Transaction:
    """MAIL ... end of data; RSET drops it without touching the session."""

    smtputf8: bool
    accepted: int = 0


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
        self._verbs = dict(_VERBS)
        if self.config.starttls:
            self._verbs["STARTTLS"] = StartTls
        if self.config.auth_mechanisms:
            self._verbs["AUTH"] = Auth
        # An AUTH line with its initial response may exceed max_line (RFC 4954 4).
        buffer_limit = self.config.max_line
        if self.config.auth_mechanisms:
            buffer_limit = max(buffer_limit, self.config.max_auth_line)
        self._lines = LineBuffer(buffer_limit)
        self._sasl: auth.SaslExchange | None = None
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
        if self.config.starttls and not self.tls:
            caps.append("STARTTLS")
        if self.config.auth_mechanisms and self.tls:
            caps.append("AUTH " + " ".join(self.config.auth_mechanisms))
        caps.extend(self.config.extra_capabilities)
        return caps

    @property
    def facts(self) -> Fact:
        """What state.py's guards look at besides the state."""
        facts = Fact.NONE
        if self.tls:
            facts |= Fact.TLS
        if self.authenticated is not None:
            facts |= Fact.AUTHENTICATED
        if self.config.auth_required:
            facts |= Fact.AUTH_REQUIRED
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
        line = self._lines.next_line()
        if line is None:
            return ConnectionClosed() if self._eof else NEED_DATA
        event = self._parse_sasl(line) if self.state is State.AUTH else self._parse(line)
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
        if isinstance(event, SyncViolation):
            self._close()
            return out
        if isinstance(event, ProtocolViolation):
            if isinstance(event, BodyRejected):
                self._end_transaction()
            if isinstance(event, AuthAborted):
                self._apply(event, reply)
            if self._is_counted_error(event.reply):
                return self._count_error(out)
            return out
        if isinstance(event, EndOfData):
            self._end_transaction()
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
        """True between the 354 and the reply to the end of data."""
        return self._reader is not None or isinstance(self._pending, EndOfData | BodyRejected)

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
        self._sasl = None
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
        return reply.code in (500, 501, 502, 503, 504, 530, 538, 553, 555) or (
            reply.code == 554 and reply.enhanced == "5.5.1"
        )

    def _apply(self, event: Command, reply: Reply) -> None:
        positive = reply.code < 400
        if isinstance(event, Data) and positive and reply.code != 354:
            raise LocalProtocolError("DATA must be answered with 354 or a 4xx/5xx reply")
        if isinstance(event, StartTls) and positive and reply.code != 220:
            raise LocalProtocolError("STARTTLS must be answered with 220 or a 4xx/5xx reply")
        if isinstance(event, Auth) and positive and reply.code != 235:
            raise LocalProtocolError("Auth must be answered with 235 or a 4xx/5xx reply")
        if isinstance(event, Quit) and positive:
            self._close()
            return
        self.state = st.next_state(self.state, type(event), positive)
        if isinstance(event, Auth | AuthAborted):
            self._sasl = None
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
            self._transaction = _Transaction(smtputf8=event.smtputf8)
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
        if reader.problem is BodyProblem.TOO_BIG:
            event = BodyRejected(reply=_too_big(self.config.max_message_size))
        elif reader.problem is BodyProblem.LINE_TOO_LONG:
            event = BodyRejected(reply=_line_too_long(self.config.max_body_line))
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
        if len(line) + 2 > self.config.max_line and line.split(b" ", 1)[0].upper() != b"AUTH":
            return ProtocolViolation(reply=replies.LINE_TOO_LONG)
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
        command_type = self._verbs.get(verb)
        if command_type is None:
            if verb in _NOT_IMPLEMENTED:
                return ProtocolViolation(reply=replies.NOT_IMPLEMENTED)
            if not verb:
                return ProtocolViolation(reply=Reply(500, "5.5.2", "Syntax error: empty command"))
            return ProtocolViolation(reply=replies.UNKNOWN_COMMAND)
        out_of_sequence = st.check(self.state, command_type, self.facts)
        if out_of_sequence is not None:
            return ProtocolViolation(reply=out_of_sequence)
        if not text.isascii() and command_type is not Mail and command_type is not Rcpt:
            return ProtocolViolation(reply=replies.BAD_ENCODING)
        if verb in _NO_ARGUMENTS:
            if cmd.argument.strip(" "):
                return ProtocolViolation(
                    reply=Reply(501, "5.5.4", f"Syntax error: {verb} takes no arguments")
                )
            if command_type in (Data, Quit) and len(self._lines):
                # RFC 2920 3.1: DATA and QUIT end a pipelined group; bytes after
                # them in the same write were sent without waiting for a reply.
                return SyncViolation(reply=replies.SYNC_ERROR)
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
        if command_type is Auth:
            return self._parse_auth(cmd.argument)
        return Noop()

    def _parse_auth(self, argument: str) -> Command:
        """AUTH mechanism [initial-response] (RFC 4954 4)."""
        words = argument.strip(" ").split(" ")
        offered = " ".join(self.config.auth_mechanisms)
        if not words[0] or len(words) > 2:
            raise CommandSyntaxError(
                Reply(501, "5.5.4", f"Syntax error: send AUTH <mechanism> ({offered})")
            )
        mechanism = words[0].upper()
        if mechanism not in self.config.auth_mechanisms:
            return ProtocolViolation(
                reply=replies.AUTH_UNKNOWN_MECHANISM.with_text(
                    f"Unrecognized authentication type; use one of: {offered}"
                )
            )
        exchange = auth.start_exchange(mechanism)
        self._sasl = exchange
        return self._sasl_event(exchange.start(words[1] if len(words) == 2 else None))

    def _parse_sasl(self, line: bytes | LineProblem) -> Command:
        """A line inside the AUTH exchange: a response to our 334, never a command."""
        if line is LineProblem.TOO_LONG:
            return AuthAborted(reply=replies.LINE_TOO_LONG)
        if line is LineProblem.BARE_LINE_ENDING:
            return AuthAborted(reply=replies.BARE_LINE_ENDING)
        assert isinstance(line, bytes) and self._sasl is not None
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            return AuthAborted(reply=replies.AUTH_BAD_BASE64)
        return self._sasl_event(self._sasl.respond(text))

    def _sasl_event(self, step: auth.Step) -> Command:
        match step:
            case auth.Challenge(text=text):
                return AuthChallenge(reply=Reply(334, None, text))
            case auth.Credentials():
                return Auth(
                    mechanism=step.mechanism,
                    username=step.username,
                    password=step.password,
                    authzid=step.authzid,
                )
            case auth.Refusal(reply=reply):
                return AuthAborted(reply=reply)
        raise AssertionError(f"unknown SASL step {step!r}")  # pragma: no cover

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


def _line_too_long(limit: int) -> Reply:
    return Reply(
        554, "5.6.0", f"Message refused: a line is longer than {limit} octets (RFC 5321 4.5.3.1.6)"
    )


def _too_big(limit: int) -> Reply:
    return Reply(552, "5.3.4", f"Message size exceeds fixed maximum message size of {limit} octets")
