"""key=value log lines, so an operator can grep and parse them (like Postfix's, but regular).

Every value that came from the network (a user name in AUTH, a remote server's
reply, an address) is untrusted: a CR, LF, VT, FF, NEL (U+0085) or U+2028
would start a forged line for anything that splits lines (Python's
``str.splitlines`` splits on all of them), and ESC or another control
character would drive the terminal of the operator who reads the log.  So a
value is written with every non-printable code point escaped
(``printable``), and one log line stays one line.
"""

from __future__ import annotations

import logging
import re
import sys
import time

_NEEDS_QUOTES = re.compile(r'[ "=\\]')
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    """``\\n`` and friends by name; others as ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``."""
    named = _NAMED_ESCAPES.get(char)
    if named is not None:
        return named
    point = ord(char)
    if point < 0x100:
        return f"\\x{point:02x}"
    if point < 0x10000:
        return f"\\u{point:04x}"
    return f"\\U{point:08x}"


def printable(text: str) -> str:
    """``text`` with every code point that ``str.isprintable`` rejects escaped.

    That is the C0 and C1 controls (NUL, ESC, VT, NEL ...), the line and
    paragraph separators, format characters such as the bidirectional
    overrides (U+202E), surrogates and spaces other than U+0020.  Printable
    text, non-ASCII letters included, comes back unchanged and at once: the
    check is one pass in C, and almost every value passes it.  A backslash is
    not escaped here (``kv`` does that inside quotes), so the result is for
    people and ``grep``; an escape and a literal ``\\x1b`` look alike.
    """
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def kv(**fields: object) -> str:
    """Format fields as ``key=value``; values with spaces, quotes or '=' are quoted.

    Inside quotes ``\\`` and ``"`` are escaped, and a value with a non-printable
    code point is quoted and has it escaped (``printable``), so one call makes
    one line whatever the values hold.
    """
    parts = []
    for key, value in fields.items():
        if value is None:
            continue
        text = str(value)
        if not text or not text.isprintable() or _NEEDS_QUOTES.search(text):
            text = '"' + printable(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'
        parts.append(f"{key}={text}")
    return " ".join(parts)


class _Formatter(logging.Formatter):
    """``time level logger message``, the time made once per second (a busy server logs
    many lines a second, and strftime is a good part of each).

    The message is made ``printable`` too: ``kv`` lines already are, and this covers a
    message formatted with ``%s`` from text that came from outside.  A traceback
    (``exc_info``) is added after this step and keeps its lines.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self._second = -1
        self._stamp = ""

    def formatMessage(self, record: logging.LogRecord) -> str:
        # The format string above, spelled out: no %-formatting on the hot path.
        return f"{record.asctime} {record.levelname} {record.name} {printable(record.message)}"

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(second))
        return self._stamp


def setup_logging(level: str) -> None:
    """One handler on stderr: ``time level logger key=value ...``.

    The line shows no thread, process or source location, so the records do not
    collect them (the logging HOWTO's "Optimization"): that is a third of what
    a line costs, and a session logs at least two (connect, disconnect).
    """
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # no caller's file, line and function (sys._getframe walks)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger("mailwright")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
