"""The receive buffer for command lines: strict CRLF, bounded length, bare CR/LF detection.

A command line ends at CRLF only (RFC 5321 2.3.8).  A bare LF still ends a line
for *framing*, so a client that sends ``\\n`` gets a clear error instead of a
hang, but that line is refused, never executed: this is what closes the door on
SMTP smuggling (CVE-2023-51764).  Memory is bounded by ``max_line``: a line that
never ends is discarded as it arrives and answered with 500 once it does.
"""

from __future__ import annotations

import enum


class LineProblem(enum.Enum):
    TOO_LONG = "too-long"
    BARE_LINE_ENDING = "bare-line-ending"


class LineBuffer:
    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._discarding = False
        self._scanned = 0  # bytes already searched for LF, so a slow sender costs O(n)

    def feed(self, data: bytes) -> None:
        if self._discarding:
            idx = data.find(b"\n")
            if idx == -1:
                return
            # Keep one marker byte so next_line() reports the long line once.
            self._buf += b"\n" + data[idx + 1 :]
            self._scanned = 0
            return
        self._buf += data

    def __len__(self) -> int:
        return len(self._buf)

    def take_all(self) -> bytes:
        """Everything buffered (used when DATA begins: the rest is body)."""
        data = bytes(self._buf)
        self._buf.clear()
        self._scanned = 0
        return data

    def take(self, limit: int) -> bytes:
        """Up to ``limit`` octets from the front, whatever they are (a BDAT chunk, RFC 3030).

        Only what is taken is copied: the rest stays where it is, so many small
        chunks pipelined in one write cost O(n), not O(n) each.
        """
        data = bytes(self._buf[:limit])
        del self._buf[:limit]
        self._scanned = 0
        return data

    def clear(self) -> None:
        self._buf.clear()
        self._scanned = 0
        self._discarding = False

    def next_line(self) -> bytes | LineProblem | None:
        """One line without its CRLF, a LineProblem, or None when no full line is buffered."""
        buf = self._buf
        if self._discarding:
            if buf[:1] == b"\n":
                del buf[:1]
                self._discarding = False
                return LineProblem.TOO_LONG
            return None
        idx = buf.find(b"\n", self._scanned)
        if idx == -1:
            if len(buf) > self.max_line:
                buf.clear()
                self._discarding = True
            self._scanned = len(buf)
            return None
        self._scanned = 0
        line = bytes(buf[: idx + 1])
        del buf[: idx + 1]
        if len(line) > self.max_line:
            return LineProblem.TOO_LONG
        if len(line) < 2 or line[-2] != 13 or b"\r" in line[:-2]:
            return LineProblem.BARE_LINE_ENDING
        return line[:-2]
