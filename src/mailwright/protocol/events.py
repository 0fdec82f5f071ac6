"""Events the server core reports: small frozen values the caller dispatches on by type.

A command event asks the caller for exactly one reply (``conn.send(reply)``).
``BodyChunk`` needs none.  ``ProtocolViolation`` and ``AuthChallenge`` carry
the reply the core has already chosen (syntax or sequence errors, limits, SASL
challenges); the caller only sends it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from mailwright.model import NOTIFY_NOT_GIVEN, Address, MailOptions, Notify
from mailwright.protocol.reply import Reply


class _NeedData:
    """Sentinel: the core needs more bytes before it can report anything."""

    _instance: _NeedData | None = None

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base class of every event."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Command(Event):
    """An event that must be answered with exactly one reply."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Ehlo(Command):
    """EHLO (``extended=True``) or HELO: the client's greeting.  Clears any transaction."""

    hostname: str
    extended: bool


def _frozen(params: Mapping[str, str | None] | None = None) -> Mapping[str, str | None]:
    return MappingProxyType(dict(params or {}))


@dataclass(frozen=True, slots=True, kw_only=True)
class Mail(Command):
    """MAIL FROM; ``sender`` None is the null reverse-path ``<>`` (RFC 5321 4.5.5)."""

    sender: Address | None
    size: int | None = None
    body_type: str | None = None  # "7BIT", "8BITMIME" (RFC 6152) or "BINARYMIME" (RFC 3030)
    smtputf8: bool = False  # RFC 6531
    ret: str | None = None  # RFC 3461 4.3: "FULL" or "HDRS"
    envid: str | None = None  # RFC 3461 4.4, xtext decoded
    params: Mapping[str, str | None] = field(default_factory=_frozen)

    @property
    def options(self) -> MailOptions:
        """What the queue keeps of this MAIL for the message's whole life."""
        return MailOptions(
            ret=self.ret, envid=self.envid, body=self.body_type, smtputf8=self.smtputf8
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Rcpt(Command):
    recipient: Address
    notify: Notify = NOTIFY_NOT_GIVEN  # RFC 3461 4.1
    orcpt: str | None = None  # RFC 3461 4.2: "addr-type;address", xtext decoded
    params: Mapping[str, str | None] = field(default_factory=_frozen)


@dataclass(frozen=True, slots=True, kw_only=True)
class Data(Command):
    """DATA: answer 354 to receive the body, or a 4xx/5xx to refuse it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Rset(Command):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Noop(Command):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Quit(Command):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Vrfy(Command):
    argument: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Help(Command):
    topic: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StartTls(Command):
    """STARTTLS (RFC 3207): answer 220 to begin TLS, or 454 to refuse.

    After the 220 the core has dropped every byte received so far (they came
    in plain text, RFC 3207 4.2 and 6) and expects a new EHLO; the caller must
    stop reading plain text before it writes the 220, run the handshake, and
    feed only decrypted bytes from then on.  If the handshake fails, close.
    """


@dataclass(frozen=True, slots=True, kw_only=True)
class Auth(Command):
    """AUTH (RFC 4954) completed: the credentials the client sent, to be verified.

    Answer 235 to accept, 535 to refuse, 454 when they cannot be checked now.
    ``authzid`` is empty or equal to ``username`` (the core refuses others).
    The password never appears in the event's repr; never log it.
    """

    mechanism: str
    username: str
    password: str = field(repr=False)
    authzid: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthChallenge(Command):
    """The SASL mechanism asks the client for more: send ``reply`` (a 334) as it is."""

    reply: Reply


@dataclass(frozen=True, slots=True, kw_only=True)
class BodyChunk(Event):
    """A piece of the message body in large pieces: dot-unstuffed after DATA, as sent after BDAT."""

    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Bdat(Event):
    """BDAT <size> [LAST] taken (RFC 3030 2): needs no reply now.

    The chunk's ``size`` octets follow as ``BodyChunk`` events, taken as they
    are (no dot-unstuffing, no end-of-data scan), then ``EndOfChunk``, or
    ``EndOfData`` after the LAST chunk: the reply comes after the octets.  The
    first of a transaction is where the caller opens its spool.
    """

    size: int
    last: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class EndOfChunk(Command):
    """A BDAT chunk other than the LAST was read whole.

    Answer ``replies.chunk_received(size)`` (250), or a 4xx/5xx that ends the
    transaction (RFC 3030 2: a client sends no more chunks after an error).
    ``total`` is the size of the message so far.
    """

    size: int
    total: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EndOfData(Command):
    """The body ended (CRLF.CRLF after DATA, or the LAST BDAT chunk); answer 250 only once
    it is stored durably.  ``size`` is the body's size."""

    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtocolViolation(Command):
    """The client did something wrong or hit a limit; send ``reply`` as it is.

    After a reply with code 421 the connection is closed.
    """

    reply: Reply


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncViolation(ProtocolViolation):
    """The client talked out of turn (RFC 2920 3.1, 5321 4.3.1): reply, then close.

    Bytes after DATA or QUIT in the same write, or before our greeting, mean
    the client is not waiting for replies; going on would answer the wrong
    commands, so the session ends and nothing is queued.
    """


@dataclass(frozen=True, slots=True, kw_only=True)
class BodyRejected(ProtocolViolation):
    """The body was read to its end but refused (too big, bare CR/LF); the transaction is over."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthAborted(ProtocolViolation):
    """The AUTH exchange ended without credentials (cancelled, bad base64); send ``reply``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionClosed(Event):
    """The peer closed its side; any open transaction is abandoned."""
