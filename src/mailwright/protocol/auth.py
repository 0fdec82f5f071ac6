"""SASL PLAIN (RFC 4616) and LOGIN as sans-I/O exchanges, for AUTH (RFC 4954).

An exchange is started with the initial response of the AUTH line (or None)
and then fed each response line of the client.  Every step returns one of:

- ``Challenge``: send ``334 <text>`` and feed the next line to ``respond``;
- ``Credentials``: the exchange is complete; the caller verifies them;
- ``Refusal``: the exchange ended without credentials; send ``reply``.

Nothing here knows users or passwords: verifying is the caller's business.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from mailwright.protocol import replies
from mailwright.protocol.reply import Reply

#: RFC 4954 4: an AUTH line with its initial response, and each response line, may be this long
#: (octets, CRLF included); servers must accept it even when command lines are limited to 512.
DEFAULT_MAX_AUTH_LINE = 12288

_USERNAME = base64.b64encode(b"Username:").decode("ascii")  # VXNlcm5hbWU6
_PASSWORD = base64.b64encode(b"Password:").decode("ascii")  # UGFzc3dvcmQ6


@dataclass(frozen=True, slots=True)
class Challenge:
    """Ask the client for more: ``text`` is already base64 (may be empty)."""

    text: str


@dataclass(frozen=True, slots=True)
class Credentials:
    mechanism: str
    username: str
    password: str = field(repr=False)
    authzid: str = ""


@dataclass(frozen=True, slots=True)
class Refusal:
    reply: Reply


Step = Challenge | Credentials | Refusal


class SaslExchange(Protocol):
    """One run of a mechanism on the server side.

    ``start`` is called once, with the initial response as the client wrote it
    (base64, ``=`` for an empty one) or None; ``respond`` with each line the
    client sends after a Challenge.  Neither is called after Credentials or a
    Refusal.
    """

    mechanism: str

    def start(self, initial_response: str | None) -> Step: ...

    def respond(self, line: str) -> Step: ...


def _decode(text: str, *, initial: bool) -> bytes | Refusal:
    """A client response: base64 (RFC 4648, padded); ``*`` cancels; ``=`` is empty (initial)."""
    if text == "*" and not initial:
        return Refusal(replies.AUTH_CANCELLED)
    if text == "=" and initial:
        return b""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return Refusal(replies.AUTH_BAD_BASE64)


def _text(data: bytes, what: str) -> str | Refusal:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return Refusal(Reply(501, "5.5.2", f"Syntax error: the {what} is not valid UTF-8"))


class PlainExchange:
    """PLAIN (RFC 4616): one message ``[authzid] NUL authcid NUL passwd``, UTF-8.

    Without an initial response the server sends an empty challenge first.
    An authorization identity other than the user itself is refused: nobody
    may act for someone else here.
    """

    mechanism = "PLAIN"

    def start(self, initial_response: str | None) -> Step:
        if initial_response is None:
            return Challenge("")
        return self._message(_decode(initial_response, initial=True))

    def respond(self, line: str) -> Step:
        return self._message(_decode(line, initial=False))

    def _message(self, data: bytes | Refusal) -> Step:
        if isinstance(data, Refusal):
            return data
        parts = data.split(b"\0")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            return Refusal(
                Reply(501, "5.5.2", "Syntax error: PLAIN expects authzid NUL user NUL password")
            )
        decoded = [_text(part, what) for part, what in zip(parts, _PLAIN_PARTS, strict=True)]
        for item in decoded:
            if isinstance(item, Refusal):
                return item
        authzid, username, password = (str(item) for item in decoded)
        if authzid and authzid.lower() != username.lower():
            return Refusal(
                Reply(
                    535,
                    "5.7.8",
                    "Authentication credentials invalid: leave the authorization identity "
                    "empty or make it your user name",
                )
            )
        return Credentials(self.mechanism, username, password, authzid)


_PLAIN_PARTS = ("authorization identity", "user name", "password")


class LoginExchange:
    """LOGIN (draft-murchison-sasl-login): ``Username:`` then ``Password:``, each base64.

    Not a standard, but what many clients use; offered only over TLS, like PLAIN.
    An initial response, when given, is the user name.
    """

    mechanism = "LOGIN"

    def __init__(self) -> None:
        self._username: str | None = None

    def start(self, initial_response: str | None) -> Step:
        if initial_response is None:
            return Challenge(_USERNAME)
        return self._take_username(_decode(initial_response, initial=True))

    def respond(self, line: str) -> Step:
        data = _decode(line, initial=False)
        if self._username is None:
            return self._take_username(data)
        if isinstance(data, Refusal):
            return data
        password = _text(data, "password")
        if isinstance(password, Refusal):
            return password
        if not password:
            return Refusal(Reply(501, "5.5.2", "Syntax error: empty password"))
        return Credentials(self.mechanism, self._username, password)

    def _take_username(self, data: bytes | Refusal) -> Step:
        if isinstance(data, Refusal):
            return data
        username = _text(data, "user name")
        if isinstance(username, Refusal):
            return username
        if not username:
            return Refusal(Reply(501, "5.5.2", "Syntax error: empty user name"))
        self._username = username
        return Challenge(_PASSWORD)


#: The mechanisms this module implements, by the name used in AUTH and EHLO.
MECHANISMS: dict[str, Callable[[], SaslExchange]] = {
    "PLAIN": PlainExchange,
    "LOGIN": LoginExchange,
}


def start_exchange(mechanism: str) -> SaslExchange:
    """A new exchange for ``mechanism`` (upper case); KeyError when it is not implemented."""
    return MECHANISMS[mechanism]()
