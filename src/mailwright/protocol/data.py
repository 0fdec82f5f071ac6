"""DATA and BDAT framing (RFC 5321 4.1.1.4, 4.5.2; RFC 3030 2): end of data, dot-stuffing,
size limit, counted chunks.

The body is handled in large pieces: ``bytes.find`` for the end marker, one
``replace`` to undo dot-stuffing, ``count`` to find bare CR or LF.  Never line by
line: that is what makes a reader slow on big messages.

End of data is CRLF "." CRLF and nothing else.  A bare LF or bare CR anywhere
in the body marks the message as refused, but reading goes on to the real
CRLF.CRLF: so ``\\n.\\n`` or ``\\r.\\r`` can never end the data early, and
whatever a client smuggled after them stays inside a body that is thrown away
(SMTP smuggling, CVE-2023-51764).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mailwright.protocol.buffer import LineBuffer

_END = b"\r\n.\r\n"
_KEEP = len(_END) - 1  # bytes held back: they may be the start of the end marker


class BodyProblem(enum.Enum):
    TOO_BIG = "too-big"
    BARE_LINE_ENDING = "bare-line-ending"
    LINE_TOO_LONG = "line-too-long"


@dataclass(frozen=True, slots=True)
class DataResult:
    """What one step of the reader produced."""

    chunk: bytes  # unstuffed body bytes (empty when nothing new or when discarding)
    finished: bool  # the end marker was found
    leftover: bytes  # bytes after the end marker (pipelined commands)


class DataReader:
    """Reads one message body.  Feed bytes, take unstuffed chunks, stop at CRLF.CRLF."""

    def __init__(self, max_size: int, *, max_line: int = 0) -> None:
        self.max_size = max_size
        self.max_line = max_line  # octets with CRLF; 0: any length (it is never buffered whole)
        self._line_length = 0  # octets of the current, unfinished line
        self.size = 0
        self.problem: BodyProblem | None = None
        self._buf = bytearray()
        # The CRLF that ended the DATA command counts as the start of the first line.
        self._at_line_start = True

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def step(self) -> DataResult:
        buf = self._buf
        if not buf:
            return DataResult(b"", False, b"")
        if self._at_line_start and buf[:1] == b".":
            if buf[:3] == b".\r\n":
                leftover = bytes(buf[3:])
                buf.clear()
                return DataResult(b"", True, leftover)
            if len(buf) < 3 and b".\r\n".startswith(bytes(buf)):
                return DataResult(b"", False, b"")  # might be the end marker: wait
            del buf[:1]  # a stuffed dot at the start of the first line
        self._at_line_start = False
        end = buf.find(_END)
        if end != -1:
            piece = bytes(buf[: end + 2])
            leftover = bytes(buf[end + len(_END) :])
            buf.clear()
            return DataResult(self._accept(piece), True, leftover)
        cut = len(buf) - _KEEP
        if cut <= 0:
            return DataResult(b"", False, b"")
        # Never end a piece inside "\r\n." so dot-stuffing is undone across pieces.
        if buf[cut - 1] == 13:
            cut -= 1
        elif buf[cut - 2 : cut] == b"\r\n":
            cut -= 2
        if cut <= 0:
            return DataResult(b"", False, b"")
        piece = bytes(buf[:cut])
        del buf[:cut]
        return DataResult(self._accept(piece), False, b"")

    def _accept(self, piece: bytes) -> bytes:
        """Check and unstuff a piece that does not end inside a CRLF or a CRLF-dot."""
        crlf = piece.count(b"\r\n")
        if self.problem is None and (piece.count(b"\n") != crlf or piece.count(b"\r") != crlf):
            self.problem = BodyProblem.BARE_LINE_ENDING
        if self.problem is not None:
            return b""
        if self.max_line and self._line_too_long(piece):
            self.problem = BodyProblem.LINE_TOO_LONG
            return b""
        data = piece.replace(b"\r\n.", b"\r\n")
        self.size += len(data)
        if self.size > self.max_size:
            self.problem = BodyProblem.TOO_BIG
            return b""
        return data

    def _line_too_long(self, piece: bytes) -> bool:
        """Whether a line (counted on the wire, CRLF included) passes max_line.

        Only runs when a limit is configured; the lines of a piece are measured
        by splitting, which costs one small object per line.
        """
        limit = self.max_line - 2
        last = piece.rfind(b"\r\n")
        if last == -1:
            self._line_length += len(piece)
            return self._line_length > limit
        head_end = piece.find(b"\r\n")
        if self._line_length + head_end > limit:
            return True
        if any(len(line) > limit for line in piece[head_end + 2 : last].split(b"\r\n")):
            return True
        self._line_length = len(piece) - last - 2
        return self._line_length > limit


class ChunkReader:
    """One BDAT chunk (RFC 3030 2): exactly ``size`` octets, counted and never scanned.

    There is no end marker to look for, so nothing inside a chunk can end the
    message early: BDAT is immune to end-of-data smuggling by construction.
    The octets are taken from the command buffer as they arrive (``keep``
    False: a refused chunk, read and dropped so the client stays in step).
    """

    def __init__(self, size: int, *, keep: bool) -> None:
        self.remaining = size
        self.keep = keep

    def take(self, lines: LineBuffer) -> bytes:
        """The chunk's octets buffered now; empty when there are none or they are dropped."""
        piece = lines.take(self.remaining)
        self.remaining -= len(piece)
        return piece if self.keep else b""

    @property
    def done(self) -> bool:
        return self.remaining == 0


class LineMeter:
    """``max_body_line`` for a body in BDAT chunks, whose pieces may end anywhere (even
    between CR and LF): a line ends at LF and is counted with its line ending.

    One per message, since a line may run from one chunk into the next.
    """

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self._current = 0  # octets of the line not ended yet

    def too_long(self, piece: bytes) -> bool:
        first = piece.find(b"\n")
        if first == -1:
            self._current += len(piece)
            return self._current >= self.max_line  # its line ending is still to come
        if self._current + first + 1 > self.max_line:
            return True
        last = piece.rfind(b"\n")
        if last > first and any(
            len(line) >= self.max_line for line in piece[first + 1 : last].split(b"\n")
        ):
            return True
        self._current = len(piece) - last - 1
        return self._current >= self.max_line


class LineEndings:
    """The sending side's lines: every line ending (CRLF, bare LF, bare CR) made CRLF.

    A message read from a file may have bare LF line endings, which must never
    go on the wire (RFC 5321 2.3.8), after DATA or in BDAT chunks of a text
    body (RFC 3030 3: only BINARYMIME is sent as it is).  Pieces may split a
    CRLF: a CR at the end of one is held until the next shows what it is.
    """

    def __init__(self) -> None:
        self.at_line_start = True
        self._pending_cr = False

    def convert(self, data: bytes) -> bytes:
        if not data:
            return b""
        if self._pending_cr:
            data = b"\r" + data
            self._pending_cr = False
        if data.endswith(b"\r"):
            data = data[:-1]
            self._pending_cr = True
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
        if data:
            self.at_line_start = data.endswith(b"\r\n")
        return data

    def finish(self) -> bytes:
        """What ends the last line: a CRLF unless it has one."""
        tail = b""
        if self._pending_cr:
            tail = b"\r\n"
            self._pending_cr = False
            self.at_line_start = True
        if not self.at_line_start:
            tail += b"\r\n"
            self.at_line_start = True
        return tail


class DotStuffer:
    """The sending side of DATA: lines made CRLF, dots stuffed, the end marker added."""

    def __init__(self) -> None:
        self._lines = LineEndings()

    def stuff(self, data: bytes) -> bytes:
        at_line_start = self._lines.at_line_start
        data = self._lines.convert(data)
        if at_line_start and data.startswith(b"."):
            data = b"." + data
        return data.replace(b"\r\n.", b"\r\n..")

    def finish(self) -> bytes:
        return self._lines.finish() + b".\r\n"
