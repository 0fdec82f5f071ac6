"""key=value log lines, so an operator can grep and parse them (like Postfix's, but regular)."""

from __future__ import annotations

import logging
import re
import sys
import time

_NEEDS_QUOTES = re.compile(r'[ "=\\]')


def kv(**fields: object) -> str:
    """Format fields as ``key=value``; values with spaces, quotes or '=' are quoted."""
    parts = []
    for key, value in fields.items():
        if value is None:
            continue
        text = str(value)
        if not text or _NEEDS_QUOTES.search(text) or not text.isprintable():
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
            text = text.replace("\n", "\\n").replace("\r", "\\r")
        parts.append(f"{key}={text}")
    return " ".join(parts)


class _Formatter(logging.Formatter):
    """``time level logger message``, the time made once per second (a busy server logs
    many lines a second, and strftime is a good part of each)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(second))
        return self._stamp


def setup_logging(level: str) -> None:
    """One handler on stderr: ``time level logger key=value ...``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger("mailwright")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
