"""SMTP replies as values (RFC 5321 4.2), with RFC 3463 enhanced status codes.

A Reply is built once and formatted once; nobody assembles reply strings in
place.  The same class parses what a peer answered, so the client role and the
server role speak about replies in one vocabulary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")
_ENHANCED_PREFIX = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})(?: |$)")

#: Characters of a peer's malformed text quoted (escaped) in an error message.
ERROR_EXCERPT = 80


def printable_text(text: str) -> str:
    """``text`` with every code point that is not printable taken out.

    A peer's reply text is kept (in the queue) and passed on (in a bounce, on
    an operator's terminal), so it must not carry what a terminal or a line
    splitter would obey: C0 and C1 controls (ESC, NUL, NEL ...), DEL, the
    Unicode line and paragraph separators U+2028/U+2029 (Python's
    ``splitlines`` cuts at them), bidirectional overrides and other format
    characters.  What counts as printable is ``str.isprintable``; spacing
    characters among the rest (TAB, VT, NEL, U+2028, no-break spaces) become a
    space so words stay apart, and everything else is removed.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else " " if c.isspace() else "" for c in text)


def excerpt(data: str | bytes, limit: int = ERROR_EXCERPT) -> str:
    """The start of what a peer sent, escaped (``repr``) for an error message; bounded."""
    shown = repr(data[:limit])
    return f"{shown}..." if len(data) > limit else shown


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: a three-digit code, an optional enhanced code and its text lines."""

    code: int
    enhanced: str | None
    lines: tuple[str, ...]
    #: The wire form, made on first use: most replies are constants sent many times.
    _wire: bytes | None = field(default=None, compare=False, repr=False)

    def __init__(self, code: int, enhanced: str | None, text: str | tuple[str, ...] | list[str]):
        if not 200 <= code <= 599:
            raise ValueError(f"reply code out of range: {code}")
        if enhanced is not None:
            m = _ENHANCED.match(enhanced)
            if m is None:
                raise ValueError(f"malformed enhanced status code: {enhanced!r}")
            if int(m.group(1)) != code // 100:
                raise ValueError(f"enhanced code {enhanced} does not match class of {code}")
        lines = (text,) if isinstance(text, str) else tuple(text)
        if not lines:
            lines = ("",)
        for line in lines:
            if "\r" in line or "\n" in line:
                raise ValueError("reply text must not contain CR or LF")
        object.__setattr__(self, "code", code)
        object.__setattr__(self, "enhanced", enhanced)
        object.__setattr__(self, "lines", lines)
        object.__setattr__(self, "_wire", None)

    @property
    def text(self) -> str:
        """All lines joined with a space, for logs and explanations."""
        return " ".join(line for line in self.lines if line)

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    def with_text(self, *lines: str) -> Reply:
        return Reply(self.code, self.enhanced, lines)

    def printable(self) -> Reply:
        """This reply with every non-printable code point of its text taken out
        (``printable_text``): a peer's reply as it may be stored, logged or reported."""
        lines = tuple(printable_text(line) for line in self.lines)
        return self if lines == self.lines else Reply(self.code, self.enhanced, lines)

    def format(self) -> bytes:
        """The wire form: ``250-first`` continuation lines, then ``250 last`` (RFC 5321 4.2.1)."""
        wire = self._wire
        if wire is None:
            wire = self._format()
            object.__setattr__(self, "_wire", wire)
        return wire

    def _format(self) -> bytes:
        out = []
        last = len(self.lines) - 1
        prefix = f"{self.enhanced} " if self.enhanced else ""
        for i, line in enumerate(self.lines):
            sep = " " if i == last else "-"
            body = f"{prefix}{line}" if line or prefix else ""
            out.append(f"{self.code}{sep}{body}".rstrip(" ") + "\r\n")
        return "".join(out).encode("utf-8")

    def __str__(self) -> str:
        head = f"{self.code} {self.enhanced}" if self.enhanced else str(self.code)
        return f"{head} {self.text}".rstrip()

    @classmethod
    def parse_lines(cls, raw_lines: list[str]) -> Reply:
        """Build a Reply from the text lines of one (possibly multiline) reply.

        The enhanced code is taken from the first line when every line carries
        it, as RFC 2034 says a server using them does.
        """
        if not raw_lines:
            raise ValueError("empty reply")
        codes = set()
        texts = []
        for raw in raw_lines:
            if len(raw) < 3 or not raw[:3].isdigit() or (len(raw) > 3 and raw[3] not in " -"):
                raise ValueError(f"malformed reply line: {excerpt(raw)}")
            codes.add(int(raw[:3]))
            texts.append(raw[4:])
        if len(codes) != 1:
            raise ValueError(f"reply lines disagree on the code: {sorted(codes)}")
        code = codes.pop()
        enhanced = None
        m = _ENHANCED_PREFIX.match(texts[0])
        if m and int(m.group(1)[0]) == code // 100:
            enhanced = m.group(1)
            stripped = []
            for t in texts:
                mm = _ENHANCED_PREFIX.match(t)
                stripped.append(t[mm.end() :] if mm and mm.group(1) == enhanced else t)
            texts = stripped
        return cls(code, enhanced, texts)

    @classmethod
    def parse(cls, line: str) -> Reply:
        """Parse a single reply line such as ``503 5.5.1 Bad sequence of commands``."""
        line = line.strip()
        if len(line) == 3 and line.isdigit():
            return cls(int(line), None, "")
        return cls.parse_lines([line])
