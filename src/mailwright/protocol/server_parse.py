"""CommandParser: what the client sent, read into the server core's events.

ServerConnection (protocol/server.py) owns the session and its state; this
module only reads.  It is given a command line and the facts of the session
that decide what the line means (the state and its facts for state.py's table,
EHLO or HELO, the open transaction), and returns the event: a command for the
caller to answer, or a ``ProtocolViolation`` carrying the reply already chosen.

The checks run in one order, so a line with several faults always gets the
same reply: framing (length, bare CR or LF), encoding, the verb, its place in
the session (state.py), ASCII outside MAIL and RCPT (RFC 6531 3.4), then the
arguments.

BDAT (RFC 3030 2) is read into a ``ChunkStart``, not an event: its octets
follow on the wire whatever the answer, so the connection reads them (or
drops them, for a refused chunk) before anything is answered.

The SASL exchange of AUTH is the one piece of state kept here: between AUTH
and the end of the exchange every line is a response to a 334, never a
command (RFC 4954 4).  The connection ends the exchange (``sasl = None``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import assert_never

from mailwright.model import NOTIFY_NOT_GIVEN, Address
from mailwright.protocol import auth, dsn, replies
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
from mailwright.protocol.data import BodyProblem, LineMeter
from mailwright.protocol.events import (
    Auth,
    AuthAborted,
    AuthChallenge,
    Bdat,
    BodyRejected,
    Command,
    Data,
    Ehlo,
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
)
from mailwright.protocol.limits import ProtocolConfig
from mailwright.protocol.reply import Reply
from mailwright.protocol.state import Fact, State

#: Verbs of RFC 5321 and common extensions that this server knows but does not offer
#: (STARTTLS and AUTH are offered only when configured).
_NOT_IMPLEMENTED = frozenset(
    {"EXPN", "TURN", "ETRN", "ATRN", "SEND", "SOML", "SAML", "STARTTLS", "AUTH", "BDAT"}
)
_NO_ARGUMENTS: dict[str, type[Command]] = {
    "DATA": Data,
    "RSET": Rset,
    "QUIT": Quit,
    "STARTTLS": StartTls,
}
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


@dataclass(frozen=True, slots=True)
class ChunkStart:
    """A BDAT line with a chunk size: ``size`` octets follow it (RFC 3030 2).

    ``refusal`` None: the chunk is taken (the connection reports ``Bdat``);
    else its octets are read and discarded and then ``refusal`` is the answer,
    so a client that pipelined the chunk stays in step.
    """

    size: int
    last: bool
    refusal: ProtocolViolation | None = None


@dataclass(slots=True)
class Transaction:
    """MAIL ... end of data; RSET drops it without touching the session.

    The connection owns it; RCPT's parsing reads it: SMTPUTF8 on MAIL allows a
    non-ASCII recipient (RFC 6531 3.4), and ``accepted`` counts toward
    ``max_recipients``; BDAT reads the octets of its chunks so far and BODY=.
    """

    smtputf8: bool
    accepted: int = 0
    binarymime: bool = False  # BODY=BINARYMIME: BDAT only (RFC 3030 3)
    chunked: int = 0  # octets of the BDAT chunks taken so far
    lines: LineMeter | None = None  # max_body_line over the chunks of a text body


class CommandParser:
    """Reads the command lines of one server session; made once per connection."""

    __slots__ = ("_config", "_lines", "_verbs", "sasl")

    def __init__(self, config: ProtocolConfig, lines: LineBuffer) -> None:
        self._config = config
        #: The connection's receive buffer, read only to see bytes pipelined after DATA or QUIT.
        self._lines = lines
        self._verbs = dict(_VERBS)
        if config.starttls:
            self._verbs["STARTTLS"] = StartTls
        if config.auth_mechanisms:
            self._verbs["AUTH"] = Auth
        #: The SASL exchange from AUTH to its end (the AUTH state); the connection ends it.
        self.sasl: auth.SaslExchange | None = None

    def parse(
        self,
        line: bytes | LineProblem,
        state: State,
        facts: Fact,
        esmtp: bool,
        transaction: Transaction | None,
    ) -> Command | ChunkStart:
        """The event for one line received in ``state``: a SASL response in AUTH, else a command."""
        if state is State.AUTH:
            return self._sasl_response(line)
        if line is LineProblem.TOO_LONG:
            return ProtocolViolation(reply=replies.LINE_TOO_LONG)
        if line is LineProblem.BARE_LINE_ENDING:
            return ProtocolViolation(reply=replies.BARE_LINE_ENDING)
        assert isinstance(line, bytes)
        if len(line) + 2 > self._config.max_line and len(line) + 2 > self._line_limit(line):
            return ProtocolViolation(reply=replies.LINE_TOO_LONG)
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                return ProtocolViolation(reply=replies.BAD_ENCODING)
        try:
            return self._command(text, state, facts, esmtp, transaction)
        except CommandSyntaxError as exc:
            return ProtocolViolation(reply=exc.reply)

    def _line_limit(self, line: bytes) -> int:
        """The longest line allowed for this verb, CRLF included: an AUTH line with its
        initial response (RFC 4954 4) and MAIL and RCPT with DSN parameters (RFC 3461 3)
        may pass ``max_line``."""
        verb = line[:5].rstrip(b" ").upper()
        config = self._config
        if verb == b"AUTH":
            return max(config.max_line, config.max_auth_line)
        if config.dsn and verb == b"MAIL":
            return config.max_line + dsn.MAIL_LINE_EXTRA
        if config.dsn and verb == b"RCPT":
            return config.max_line + dsn.RCPT_LINE_EXTRA
        return config.max_line

    def _sasl_response(self, line: bytes | LineProblem) -> Command:
        """A line inside the AUTH exchange: a response to our 334, never a command."""
        if line is LineProblem.TOO_LONG:
            return AuthAborted(reply=replies.LINE_TOO_LONG)
        if line is LineProblem.BARE_LINE_ENDING:
            return AuthAborted(reply=replies.BARE_LINE_ENDING)
        assert isinstance(line, bytes) and self.sasl is not None
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            return AuthAborted(reply=replies.AUTH_BAD_BASE64)
        return _sasl_event(self.sasl.respond(text))

    def _command(
        self, text: str, state: State, facts: Fact, esmtp: bool, transaction: Transaction | None
    ) -> Command | ChunkStart:
        cmd = split_command(text)
        verb = cmd.verb
        if verb == "BDAT" and self._config.chunking:
            return self._bdat(cmd.argument, state, facts, transaction)
        command_type = self._verbs.get(verb)
        if command_type is None:
            if verb in _NOT_IMPLEMENTED:
                return ProtocolViolation(reply=replies.NOT_IMPLEMENTED)
            if not verb:
                return ProtocolViolation(reply=replies.EMPTY_COMMAND)
            return ProtocolViolation(reply=replies.UNKNOWN_COMMAND)
        out_of_sequence = st.check(state, command_type, facts)
        if out_of_sequence is not None:
            return ProtocolViolation(reply=out_of_sequence)
        if not text.isascii() and command_type is not Mail and command_type is not Rcpt:
            return ProtocolViolation(reply=replies.BAD_ENCODING)
        if verb in _NO_ARGUMENTS:
            if cmd.argument.strip(" "):
                return ProtocolViolation(reply=replies.no_arguments(verb))
            if command_type in (Data, Quit) and len(self._lines):
                # RFC 2920 3.1: DATA and QUIT end a pipelined group; bytes after
                # them in the same write were sent without waiting for a reply.
                return SyncViolation(reply=replies.SYNC_ERROR)
            return _NO_ARGUMENTS[verb]()
        if command_type is Ehlo:
            return Ehlo(hostname=parse_helo_argument(cmd.argument, verb), extended=verb == "EHLO")
        if command_type is Mail:
            return self._mail(cmd.argument, esmtp)
        if command_type is Rcpt:
            assert transaction is not None  # state.py allows RCPT only inside a transaction
            return self._rcpt(cmd.argument, transaction)
        if command_type is Vrfy:
            if not cmd.argument.strip(" "):
                raise CommandSyntaxError(replies.VRFY_SYNTAX)
            return Vrfy(argument=cmd.argument.strip(" "))
        if command_type is Help:
            return Help(topic=cmd.argument.strip(" "))
        if command_type is Auth:
            return self._auth(cmd.argument)
        return Noop()

    def _bdat(
        self, argument: str, state: State, facts: Fact, transaction: Transaction | None
    ) -> Command | ChunkStart:
        """BDAT <size> [LAST] (RFC 3030 2), checked in the usual order, place then arguments.

        Whenever the size can be read, the chunk's octets are read even when the
        command is refused ("the receiver-SMTP MUST accept and discard the
        associated message data before sending the appropriate 5XX or 4XX
        code"); without a size there is nothing to count.
        """
        words = [word for word in argument.split(" ") if word]
        first = words[0] if words else ""
        size = int(first) if first.isascii() and first.isdigit() else None
        if size is not None and len(first) > MAX_SIZE_DIGITS:
            size = None
        last = len(words) == 2 and words[1].upper() == "LAST"
        refusal = st.check(state, Bdat, facts)
        if refusal is None and (size is None or len(words) > 2 or (len(words) == 2 and not last)):
            refusal = replies.BDAT_SYNTAX
        if refusal is not None:
            failed = ProtocolViolation(reply=refusal)
            if state in (State.RCPT, State.CHUNKING):
                # RFC 3030 2: a failed BDAT fails the transaction; the chunks pipelined
                # behind it are discarded, never stored as a message with one missing.
                failed = BodyRejected(reply=refusal)
            return failed if size is None else ChunkStart(size, last, failed)
        assert size is not None  # no size is a syntax error
        assert transaction is not None  # state.py allows BDAT only inside a transaction
        if transaction.chunked + size > self._config.max_message_size:
            # RFC 1870 6.3 over the sum of the chunks; the transaction ends with it.
            too_big = replies.message_too_big(self._config.max_message_size)
            return ChunkStart(size, last, BodyRejected(reply=too_big))
        return ChunkStart(size, last)

    def _auth(self, argument: str) -> Command:
        """AUTH mechanism [initial-response] (RFC 4954 4)."""
        words = argument.strip(" ").split(" ")
        offered = " ".join(self._config.auth_mechanisms)
        if not words[0] or len(words) > 2:
            raise CommandSyntaxError(replies.auth_syntax(offered))
        mechanism = words[0].upper()
        if mechanism not in self._config.auth_mechanisms:
            return ProtocolViolation(reply=replies.auth_unknown_mechanism(offered))
        exchange = auth.start_exchange(mechanism)
        self.sasl = exchange
        return _sasl_event(exchange.start(words[1] if len(words) == 2 else None))

    def _mail(self, argument: str, esmtp: bool) -> Command:
        rest = split_mail_argument(argument, "FROM:")
        path, param_text = scan_path(rest, recipient=False)
        params = parse_parameters(param_text)
        if params and not esmtp:
            return _unsupported(next(iter(params)), "send EHLO instead of HELO to use parameters")
        size: int | None = None
        body_type: str | None = None
        smtputf8 = False
        ret: str | None = None
        envid: str | None = None
        for key, value in params.items():
            if key == "SIZE":
                if not value or not value.isdigit() or len(value) > MAX_SIZE_DIGITS:
                    raise CommandSyntaxError(replies.SIZE_SYNTAX)
                size = int(value)
            elif key == "BODY":
                if value is None or value.upper() not in self._config.body_types:
                    raise CommandSyntaxError(replies.BODY_SYNTAX)
                body_type = value.upper()
            elif key == "SMTPUTF8" and self._config.smtputf8:
                if value is not None:
                    raise CommandSyntaxError(replies.SMTPUTF8_SYNTAX)
                smtputf8 = True
            elif key == "RET" and self._config.dsn:
                ret = dsn.parse_ret(value)
            elif key == "ENVID" and self._config.dsn:
                envid = dsn.parse_envid(value)
            else:
                return _unsupported(key, "send MAIL FROM:<address> without it")
        sender = parse_path(path, null_allowed=True, smtputf8=smtputf8, recipient=False)
        if size is not None and size > self._config.max_message_size:
            # RFC 1870 6.1: refuse at MAIL when the declared size is too large.
            return ProtocolViolation(reply=replies.message_too_big(self._config.max_message_size))
        return Mail(
            sender=sender,
            size=size,
            body_type=body_type,
            smtputf8=smtputf8,
            ret=ret,
            envid=envid,
            params=params,
        )

    def _rcpt(self, argument: str, transaction: Transaction) -> Command:
        rest = split_mail_argument(argument, "TO:")
        path, param_text = scan_path(rest, recipient=True)
        # RFC 6531 3.3: with SMTPUTF8 a parameter value may be UTF-8 (ORCPT's utf-8 type).
        params = parse_parameters(param_text, utf8=transaction.smtputf8)
        notify = NOTIFY_NOT_GIVEN
        orcpt: str | None = None
        for key, value in params.items():
            if key == "NOTIFY" and self._config.dsn:
                notify = dsn.parse_notify(value)
            elif key == "ORCPT" and self._config.dsn:
                orcpt = dsn.parse_orcpt(value, smtputf8=transaction.smtputf8)
            else:
                return _unsupported(key, "send RCPT TO:<address> without it")
        recipient = parse_path(
            path, null_allowed=False, smtputf8=transaction.smtputf8, recipient=True
        )
        assert isinstance(recipient, Address)
        if transaction.accepted >= self._config.max_recipients:
            return ProtocolViolation(reply=replies.TOO_MANY_RECIPIENTS)
        return Rcpt(recipient=recipient, notify=notify, orcpt=orcpt, params=params)


def body_rejection(problem: BodyProblem, config: ProtocolConfig) -> Reply:
    """The reply to a body read to its end but refused (data.py says why)."""
    if problem is BodyProblem.TOO_BIG:
        return replies.message_too_big(config.max_message_size)
    if problem is BodyProblem.LINE_TOO_LONG:
        return replies.body_line_too_long(config.max_body_line)
    if problem is BodyProblem.BARE_LINE_ENDING:
        return replies.BARE_LINE_ENDING_IN_DATA
    assert_never(problem)


def _sasl_event(step: auth.Step) -> Command:
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


def _unsupported(keyword: str, hint: str) -> ProtocolViolation:
    return ProtocolViolation(reply=replies.unsupported_parameter(keyword, hint))
