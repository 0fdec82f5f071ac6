"""ClientConnection: the client role of SMTP as a sans-I/O state machine (in the style of h11).

The server core with the arrows reversed: command methods (``ehlo``, ``mail``,
``rcpt``, ``data``, ``body``, ``bdat`` ...) return the bytes to write; ``receive_data(bytes)``
takes what the server sent (``b""`` is end of file); ``next_event()`` returns a
``ReplyReceived``, ``ConnectionClosed`` or ``NEED_DATA``.

Replies are matched to commands first in, first out: RFC 2920 3.1 makes the
server answer in order, so a caller may pipeline MAIL, every RCPT and DATA in
one write and read the replies one by one; each ``ReplyReceived`` names the
command it answers.

The core refuses, with ``LocalProtocolError``, what would make *us* break the
protocol: a command before the reply to a command that must end a pipelined
group (RFC 2920 3.1), pipelining to a server that did not offer it, body bytes
before the 354 (they would run as commands), CR or LF inside a command line
(command injection), and parameters or commands (BDAT) of extensions the
server did not offer.

What the server sends is read by client_parse.py (``ReplyReader``, and
``Capabilities`` for EHLO, re-exported here): leniently where that is harmless,
strictly where memory is at stake; a reply over ``max_reply_line`` octets or
``max_reply_lines`` lines, or a malformed one, is a ``RemoteProtocolError``.
After one, the connection is unusable: every later ``next_event`` raises the
same error.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from mailwright.errors import LocalProtocolError, RemoteProtocolError
from mailwright.model import Address
from mailwright.protocol import dsn
from mailwright.protocol.client_parse import (
    DEFAULT_MAX_REPLY_LINE,
    DEFAULT_MAX_REPLY_LINES,
    Capabilities,
    ReplyReader,
)
from mailwright.protocol.commands import CommandSyntaxError
from mailwright.protocol.data import DotStuffer, LineEndings
from mailwright.protocol.events import NEED_DATA, ConnectionClosed, Event, _NeedData
from mailwright.protocol.reply import Reply, excerpt
from mailwright.syntax import is_valid_address_literal, is_valid_domain

# The reply side lives in client_parse.py; these names are imported from here too.
__all__ = [
    "DEFAULT_MAX_REPLY_LINE",
    "DEFAULT_MAX_REPLY_LINES",
    "Capabilities",
    "ClientConnection",
    "CommandKind",
    "ReplyReceived",
    "SentCommand",
]


class CommandKind(enum.Enum):
    """What a reply answers.  GREETING is the server's opening 220 (RFC 5321 3.1)."""

    GREETING = "greeting"
    EHLO = "EHLO"
    HELO = "HELO"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    END_OF_DATA = "end of data"
    BDAT = "BDAT"
    RSET = "RSET"
    NOOP = "NOOP"
    QUIT = "QUIT"
    STARTTLS = "STARTTLS"
    AUTH = "AUTH"
    RAW = "raw"


K = CommandKind

#: RFC 2920 3.1: these may only be the last command of a pipelined group; the
#: client waits for their reply before sending anything else.  DATA because its
#: reply decides whether what follows is body or commands; STARTTLS because what
#: follows must go through TLS (RFC 3207 4.2); the greeting because talking
#: before it is a protocol violation (RFC 5321 3.1).
_ENDS_GROUP = frozenset({K.GREETING, K.EHLO, K.HELO, K.DATA, K.NOOP, K.QUIT, K.STARTTLS, K.AUTH})
#: Commands that need a successful EHLO or HELO first (RFC 5321 4.1.4).
_NEEDS_GREETING = frozenset({K.MAIL, K.RCPT, K.DATA, K.BDAT})


@dataclass(frozen=True, slots=True, kw_only=True)
class SentCommand:
    """A command that was written, as the reply that answers it will name it."""

    kind: CommandKind
    line: str  # what was written, without CRLF: "" for the greeting, "." for end of data

    def __str__(self) -> str:
        return self.line or self.kind.value


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplyReceived(Event):
    """One complete reply from the server.

    ``command`` is the command it answers; None for an unsolicited 421, which a
    server may send at any time before closing (RFC 5321 3.8).  ``lines`` are
    the reply lines as received (without line endings), for transcripts.
    """

    reply: Reply
    command: SentCommand | None
    lines: tuple[str, ...]


class _Phase(enum.Enum):
    COMMANDS = "commands"
    BODY = "body"  # DATA got 354: only body() and end_body() until the end marker
    CLOSED = "closed"


class ClientConnection:
    """One SMTP session in the client role: commands out as bytes, replies in as events."""

    def __init__(
        self,
        *,
        max_reply_line: int = DEFAULT_MAX_REPLY_LINE,
        max_reply_lines: int = DEFAULT_MAX_REPLY_LINES,
    ) -> None:
        self._replies = ReplyReader(max_reply_line, max_reply_lines)
        self._pending: deque[SentCommand] = deque([SentCommand(kind=K.GREETING, line="")])
        self._phase = _Phase.COMMANDS
        self._capabilities = Capabilities()
        self._esmtp = False
        self._greeted = False  # an EHLO or HELO got 250 (since connect or STARTTLS)
        self._mail_smtputf8 = False
        self._stuffer: DotStuffer | None = None
        #: The line endings of a text body sent in BDAT chunks, from the first to LAST.
        self._chunk_lines: LineEndings | None = None
        self._eof = False
        self._error: RemoteProtocolError | None = None

    # -------------------------------------------------------------- state

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def esmtp(self) -> bool:
        """True after a 250 to EHLO (and until STARTTLS)."""
        return self._esmtp

    @property
    def closed(self) -> bool:
        """The server closed (EOF, 221 to QUIT, or a 421): nothing more can be sent."""
        return self._phase is _Phase.CLOSED

    @property
    def sending_body(self) -> bool:
        """True between the 354 to DATA and ``end_body()``."""
        return self._phase is _Phase.BODY

    @property
    def unanswered(self) -> tuple[SentCommand, ...]:
        """Commands written whose reply has not been received, oldest first."""
        return tuple(self._pending)

    # ------------------------------------------------------------- input

    def receive_data(self, data: bytes) -> None:
        """What the server sent; ``b""`` means it closed its side."""
        if self._phase is _Phase.CLOSED:
            return
        if not data:
            self._eof = True
            return
        self._replies.feed(data)

    def next_event(self) -> ReplyReceived | ConnectionClosed | _NeedData:
        """The next complete reply, ConnectionClosed, or NEED_DATA.

        Raises RemoteProtocolError when the server broke the reply grammar or a
        limit; the connection cannot continue after that.
        """
        if self._error is not None:
            raise self._error
        if self._phase is _Phase.CLOSED:
            return ConnectionClosed()
        try:
            return self._next_reply()
        except RemoteProtocolError as exc:
            self._error = exc
            self._phase = _Phase.CLOSED
            self._replies.clear()
            raise

    def _next_reply(self) -> ReplyReceived | ConnectionClosed | _NeedData:
        received = self._replies.next_reply()
        if received is None:
            if self._eof:
                self._phase = _Phase.CLOSED
                return ConnectionClosed()
            return NEED_DATA
        reply, lines = received
        command = self._pending.popleft() if self._pending else None
        if command is None and reply.code != 421:
            raise RemoteProtocolError(f"reply without a command to answer: {excerpt(str(reply))}")
        self._answered(command, reply)
        return ReplyReceived(reply=reply, command=command, lines=lines)

    def _answered(self, command: SentCommand | None, reply: Reply) -> None:
        """The state changes a reply causes; everything else about replies is the caller's."""
        if reply.code == 421 or (command is not None and command.kind is K.QUIT):
            # RFC 5321 3.8: 421 means the server is closing; 221 answers QUIT.
            self._phase = _Phase.CLOSED
            self._pending.clear()
            self._replies.clear()
            return
        assert command is not None
        kind = command.kind
        if kind is K.EHLO and reply.code == 250:
            self._capabilities = Capabilities.parse(reply)
            self._esmtp = self._greeted = True
        elif kind is K.HELO and reply.code == 250:
            self._capabilities = Capabilities()
            self._esmtp = False
            self._greeted = True
        elif kind is K.DATA and reply.code == 354:
            self._phase = _Phase.BODY
            self._stuffer = DotStuffer()
        elif kind is K.STARTTLS and reply.code == 220:
            # RFC 3207 4.2: anything received before the handshake came in plain
            # text and may have been injected; drop it.  The capabilities are
            # forgotten and a new EHLO is needed.
            self._replies.clear()
            self._capabilities = Capabilities()
            self._esmtp = self._greeted = False

    # ------------------------------------------------------------ commands

    def ehlo(self, name: str) -> bytes:
        """EHLO with our host name or an address literal (RFC 5321 4.1.1.1)."""
        return self._command(K.EHLO, f"EHLO {_checked_helo_name(name)}")

    def helo(self, name: str) -> bytes:
        """HELO, for servers that answer EHLO with 500 or 502 (RFC 5321 4.1.1.1)."""
        return self._command(K.HELO, f"HELO {_checked_helo_name(name)}")

    def mail(
        self,
        sender: Address | None,
        *,
        size: int | None = None,
        body_8bit: bool = False,
        smtputf8: bool = False,
        binarymime: bool = False,
        ret: str | None = None,
        envid: str | None = None,
    ) -> bytes:
        """MAIL FROM; ``sender`` None is the null reverse-path ``<>`` (RFC 5321 4.5.5).

        Each parameter needs the server to have offered its extension:
        SIZE (RFC 1870), BODY=8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531),
        BODY=BINARYMIME (RFC 3030: BINARYMIME and CHUNKING; it wins over 8BITMIME),
        RET and ENVID (RFC 3461 4.3, 4.4: DSN; ``envid`` is sent as xtext).
        """
        self._check_open(K.MAIL)
        body = _body_parameter(self._capabilities, body_8bit, binarymime)
        line = _mail_line(sender, self._capabilities, size, body, smtputf8)
        if ret is not None or envid is not None:
            _require_extension(self._capabilities, "DSN")
            if ret is not None:
                line += f" RET={_checked(dsn.parse_ret, ret)}"
            if envid is not None:
                line += f" ENVID={dsn.encode_xtext(envid)}"
        out = self._command(K.MAIL, line)
        self._mail_smtputf8 = smtputf8
        self._chunk_lines = None  # a new message: nothing held from an unfinished one
        return out

    def rcpt(
        self, recipient: Address, *, notify: str | None = None, orcpt: str | None = None
    ) -> bytes:
        """RCPT TO; a non-ASCII address needs SMTPUTF8 on the MAIL command (RFC 6531 3.4).

        ``notify`` (NEVER or a comma list) and ``orcpt`` (``addr-type;address``,
        sent as xtext) are RFC 3461's, and need DSN.
        """
        path = _checked_address(recipient, self._mail_smtputf8)
        line = f"RCPT TO:<{path}>"
        if notify is not None or orcpt is not None:
            _require_extension(self._capabilities, "DSN")
            if notify is not None:
                line += f" NOTIFY={_checked(dsn.parse_notify, notify)}"
            if orcpt is not None:
                orcpt = dsn.orcpt_parameter(orcpt, smtputf8=self._mail_smtputf8)
                line += f" ORCPT={orcpt}"
        return self._command(K.RCPT, line)

    def data(self) -> bytes:
        """DATA; the body may be sent only once its 354 has been received."""
        return self._command(K.DATA, "DATA")

    def body(self, chunk: bytes) -> bytes:
        """Part of the message: line endings made CRLF, leading dots doubled (RFC 5321 4.5.2)."""
        return self._body_stuffer().stuff(chunk)

    def end_body(self) -> bytes:
        """The end of the message: a final CRLF if the body lacks one, then ``.`` CRLF."""
        tail = self._body_stuffer().finish()
        self._stuffer = None
        self._phase = _Phase.COMMANDS
        self._pending.append(SentCommand(kind=K.END_OF_DATA, line="."))
        return tail

    def bdat(self, chunk: bytes, *, last: bool = False, binary: bool = False) -> bytes:
        """One BDAT command with its chunk (RFC 3030 2); ``b""`` when there is nothing to send.

        A text body's line endings are made CRLF across the chunks, and the LAST
        one ends its last line, so the message stored is the one DATA would
        give; ``binary`` (BODY=BINARYMIME) sends the octets as they are.  A
        chunk that is only a held CR sends nothing until the next one.  Each
        BDAT gets its reply in order; without PIPELINING, wait for it first.
        """
        self._check_open(K.BDAT)
        _require_extension(self._capabilities, "CHUNKING")
        if not binary:
            lines = self._chunk_lines or LineEndings()
            chunk = lines.convert(chunk) + (lines.finish() if last else b"")
            self._chunk_lines = None if last else lines
        if not chunk and not last:
            return b""
        line = f"BDAT {len(chunk)}" + (" LAST" if last else "")
        return self._command(K.BDAT, line) + chunk

    def rset(self) -> bytes:
        self._chunk_lines = None
        return self._command(K.RSET, "RSET")

    def noop(self) -> bytes:
        return self._command(K.NOOP, "NOOP")

    def quit(self) -> bytes:
        return self._command(K.QUIT, "QUIT")

    def starttls(self) -> bytes:
        """STARTTLS (RFC 3207); after its 220, start TLS and send EHLO again."""
        self._check_open(K.STARTTLS)
        _require_extension(self._capabilities, "STARTTLS")
        return self._command(K.STARTTLS, "STARTTLS")

    def auth(self, mechanism: str, initial_response: str | None = None) -> bytes:
        """AUTH with an optional (already base64) initial response (RFC 4954 4).

        The reply is 235 (done), 334 (the server wants a continuation: send it
        with ``auth_continue``) or an error.  AUTH ends a pipelined group.
        """
        return self._command(K.AUTH, _auth_line(mechanism, initial_response))

    def auth_continue(self, response: str) -> bytes:
        """One continuation line of an AUTH exchange (base64, or ``*`` to cancel)."""
        if "\r" in response or "\n" in response:
            raise LocalProtocolError("an AUTH continuation is one line")
        self._check_open(K.AUTH)
        return self._write(K.AUTH, response)

    def raw(self, line: str) -> bytes:
        """Any one command line, for probe tools; CRLF is added.

        The core does not interpret it: its reply is matched in order like any
        other, but a raw DATA or STARTTLS changes nothing here.  The pipelining
        rules are not applied either (probing a server's handling of them is the
        point); only closing and the body phase still refuse it.
        """
        self._check_open(K.RAW)
        return self._write(K.RAW, line)

    # ----------------------------------------------------------- internals

    def _command(self, kind: CommandKind, line: str) -> bytes:
        self._check_open(kind)
        if self._pending:
            last = self._pending[-1]
            if last.kind in _ENDS_GROUP:
                raise LocalProtocolError(
                    f"wait for the reply to {last} before sending {kind.value} (RFC 2920 3.1)"
                )
            if not self._capabilities.pipelining:
                raise LocalProtocolError(
                    f"the server did not offer PIPELINING: wait for the reply to {last} "
                    f"before sending {kind.value}"
                )
        if kind in _NEEDS_GREETING and not self._greeted:
            raise LocalProtocolError(f"send EHLO or HELO before {kind.value}")
        return self._write(kind, line)

    def _check_open(self, kind: CommandKind) -> None:
        if self._error is not None:
            raise LocalProtocolError(f"cannot send {kind.value}: {self._error}")
        if self._phase is _Phase.CLOSED:
            raise LocalProtocolError(f"cannot send {kind.value}: the connection is closed")
        if self._phase is _Phase.BODY:
            raise LocalProtocolError(
                f"cannot send {kind.value} inside the message body: call end_body() first"
            )

    def _write(self, kind: CommandKind, line: str) -> bytes:
        if "\r" in line or "\n" in line:
            raise LocalProtocolError(f"CR or LF inside a command line: {line!r}")
        self._pending.append(SentCommand(kind=kind, line=line))
        return line.encode("utf-8") + b"\r\n"

    def _body_stuffer(self) -> DotStuffer:
        if self._phase is not _Phase.BODY or self._stuffer is None:
            raise LocalProtocolError(
                "the message body may only be sent after the 354 reply to DATA"
            )
        return self._stuffer


def _checked_helo_name(name: str) -> str:
    if is_valid_address_literal(name) or is_valid_domain(name, helo=True):
        return name
    raise LocalProtocolError(f"not a host name or address literal: {name!r}")


def _checked_address(address: Address, smtputf8: bool) -> str:
    text = str(address)
    if not smtputf8 and not text.isascii():
        raise LocalProtocolError(f"{text} is not ASCII: send MAIL with SMTPUTF8 (RFC 6531)")
    return text


def _body_parameter(capabilities: Capabilities, body_8bit: bool, binarymime: bool) -> str | None:
    """BODY=BINARYMIME (RFC 3030 3: offered with CHUNKING, needed to send it), or 8BITMIME."""
    if binarymime:
        _require_extension(capabilities, "CHUNKING")
        _require_extension(capabilities, "BINARYMIME")
        return "BINARYMIME"
    if body_8bit:
        _require_extension(capabilities, "8BITMIME")
        return "8BITMIME"
    return None


def _mail_line(
    sender: Address | None,
    capabilities: Capabilities,
    size: int | None,
    body: str | None,
    smtputf8: bool,
) -> str:
    """MAIL FROM with its parameters, each checked against what the server offered."""
    params = []
    if size is not None:
        if size < 0:
            raise LocalProtocolError("SIZE must not be negative")
        _require_extension(capabilities, "SIZE")
        params.append(f"SIZE={size}")
    if body is not None:
        params.append(f"BODY={body}")
    if smtputf8:
        _require_extension(capabilities, "SMTPUTF8")
        params.append("SMTPUTF8")
    path = "" if sender is None else _checked_address(sender, smtputf8)
    return " ".join([f"MAIL FROM:<{path}>", *params])


def _checked(parse: Callable[[str], object], value: str) -> str:
    """A DSN parameter value as the server side would read it; LocalProtocolError if bad."""
    try:
        return str(parse(value))
    except CommandSyntaxError as exc:
        raise LocalProtocolError(exc.reply.text) from None


def _auth_line(mechanism: str, initial_response: str | None) -> str:
    if not mechanism.isascii() or not mechanism.replace("-", "").replace("_", "").isalnum():
        raise LocalProtocolError(f"not a SASL mechanism name: {mechanism!r}")
    line = f"AUTH {mechanism.upper()}"
    if initial_response is not None:
        line += f" {initial_response or '='}"  # "=" is an empty initial response
    return line


def _require_extension(capabilities: Capabilities, keyword: str) -> None:
    """RFC 5321 4.1.1.1: a client uses only the extensions the server listed in its EHLO reply."""
    if not capabilities.has(keyword):
        raise LocalProtocolError(f"the server did not offer {keyword} in its EHLO reply")
