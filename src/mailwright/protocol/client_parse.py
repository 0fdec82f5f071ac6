"""What a server sends, read for the client core: replies and the extensions of EHLO.

ClientConnection (protocol/client.py) owns the session and its state; this
module only reads.  ``ReplyReader`` cuts received bytes into reply lines and
groups them into one ``Reply`` (RFC 5321 4.2.1: ``250-`` lines continue, the
``250 `` line ends); ``Capabilities`` reads the extension lines of a 250 to
EHLO (RFC 5321 4.1.1.1).

Read leniently where that is harmless and strictly where memory is at stake:
a reply line may end with a bare LF (some servers in the wild send them, and
for a reply that ends a line of text it cannot change what we do); but a line
longer than ``max_line`` or a reply of more than ``max_lines`` lines is a
``RemoteProtocolError`` as soon as the limit is crossed, never after buffering
whatever the peer keeps sending.  A line with no three-digit code, or lines
that disagree on the code, are ``RemoteProtocolError`` too, its message quoting
the start of what was received, escaped and bounded (``reply.excerpt``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from mailwright.errors import RemoteProtocolError
from mailwright.protocol.reply import ERROR_EXCERPT, Reply, excerpt

#: Longest reply line accepted, line ending included.  RFC 5321 4.5.3.1.5 says 512;
#: real servers send longer texts, so we allow eight times that and no more.
DEFAULT_MAX_REPLY_LINE = 4096
#: Most lines in one reply.  An EHLO reply has one per extension (a dozen or two).
DEFAULT_MAX_REPLY_LINES = 100

_KEYWORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")  # ehlo-keyword, RFC 5321 4.1.1.1


def _frozen_keywords(
    keywords: Mapping[str, tuple[str, ...]] | None = None,
) -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType(dict(keywords or {}))


@dataclass(frozen=True, slots=True)
class Capabilities:
    """The service extensions a server listed in its EHLO reply (RFC 5321 4.1.1.1).

    ``keywords`` maps each keyword (upper case) to its parameters.  Empty after
    HELO, before EHLO, and after STARTTLS until the next EHLO (RFC 3207 4.2).
    """

    keywords: Mapping[str, tuple[str, ...]] = field(default_factory=_frozen_keywords)

    @classmethod
    def parse(cls, reply: Reply) -> Capabilities:
        """Read the extension lines (all but the first) of a 250 reply to EHLO.

        Lines that are not ``keyword *(SP param)`` are ignored: they only say
        what the server offers, and ignoring one means not using it.  The old
        ``AUTH=PLAIN LOGIN`` form (sent for very old clients) is merged into AUTH.
        """
        keywords: dict[str, tuple[str, ...]] = {}
        for line in reply.lines[1:]:
            words = line.split()
            if not words:
                continue
            keyword, _, first = words[0].partition("=")
            if not _KEYWORD.match(keyword):
                continue
            params = ([first] if first else []) + words[1:]
            key = keyword.upper()
            merged = keywords.get(key, ()) + tuple(p for p in params if p)
            keywords[key] = tuple(dict.fromkeys(merged))
        return cls(_frozen_keywords(keywords))

    def has(self, keyword: str) -> bool:
        return keyword.upper() in self.keywords

    def params(self, keyword: str) -> tuple[str, ...]:
        """The parameters of ``keyword``; empty when it has none or is not offered."""
        return self.keywords.get(keyword.upper(), ())

    @property
    def max_size(self) -> int | None:
        """The fixed size limit (RFC 1870 4); None when SIZE is absent, has no value, or is 0."""
        params = self.params("SIZE")
        if params and params[0].isdigit() and int(params[0]) > 0:
            return int(params[0])
        return None

    @property
    def pipelining(self) -> bool:
        return self.has("PIPELINING")

    @property
    def starttls(self) -> bool:
        return self.has("STARTTLS")

    @property
    def smtputf8(self) -> bool:
        return self.has("SMTPUTF8")

    @property
    def eight_bit_mime(self) -> bool:
        return self.has("8BITMIME")

    @property
    def enhanced_status_codes(self) -> bool:
        return self.has("ENHANCEDSTATUSCODES")

    @property
    def chunking(self) -> bool:
        return self.has("CHUNKING")

    @property
    def binary_mime(self) -> bool:
        """BODY=BINARYMIME can be sent: RFC 3030 3 offers it only with CHUNKING."""
        return self.has("BINARYMIME") and self.has("CHUNKING")

    @property
    def auth_mechanisms(self) -> tuple[str, ...]:
        return tuple(m.upper() for m in self.params("AUTH"))


class _ReplyLineBuffer:
    """Received bytes cut into reply lines at LF (an optional CR before it is dropped).

    Bounded by ``max_line``: a line that grows past it raises at once.  Each
    byte is searched for LF once, so a server that trickles bytes costs O(n).
    """

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._scanned = 0

    def feed(self, data: bytes) -> None:
        self._buf += data

    def clear(self) -> None:
        self._buf.clear()
        self._scanned = 0

    def next_line(self) -> bytes | None:
        buf = self._buf
        idx = buf.find(b"\n", self._scanned)
        if idx == -1:
            self._scanned = len(buf)
            if len(buf) >= self.max_line:
                raise RemoteProtocolError(
                    f"reply line longer than {self.max_line} octets (no line ending yet),"
                    f" starting {excerpt(bytes(buf[: ERROR_EXCERPT + 1]))}"
                )
            return None
        self._scanned = 0
        if idx + 1 > self.max_line:
            raise RemoteProtocolError(
                f"reply line longer than {self.max_line} octets,"
                f" starting {excerpt(bytes(buf[: ERROR_EXCERPT + 1]))}"
            )
        line = bytes(buf[:idx])
        del buf[: idx + 1]
        return line[:-1] if line.endswith(b"\r") else line


class ReplyReader:
    """Received bytes to complete replies, each with its lines as received."""

    def __init__(self, max_line: int, max_lines: int) -> None:
        self.max_lines = max_lines
        self._lines = _ReplyLineBuffer(max_line)
        self._reply: list[str] = []  # lines of a multiline reply read so far

    def feed(self, data: bytes) -> None:
        self._lines.feed(data)

    def clear(self) -> None:
        """Drop everything received and not yet read (after STARTTLS, or when closing)."""
        self._lines.clear()
        self._reply = []

    def next_reply(self) -> tuple[Reply, tuple[str, ...]] | None:
        """The next complete reply and its lines (without line endings); None until one is.

        Raises RemoteProtocolError when the server broke the reply grammar or a limit.
        """
        while True:
            raw = self._lines.next_line()
            if raw is None:
                return None
            text = raw.decode("utf-8", errors="replace")
            self._reply.append(text)
            if len(self._reply) > self.max_lines:
                raise RemoteProtocolError(
                    f"reply has more than {self.max_lines} lines,"
                    f" the first {excerpt(self._reply[0])}"
                )
            if text[3:4] != "-":
                break
        lines, self._reply = self._reply, []
        try:
            reply = Reply.parse_lines(lines)
        except ValueError as exc:
            raise RemoteProtocolError(f"malformed reply: {exc}") from None
        return reply, tuple(lines)
