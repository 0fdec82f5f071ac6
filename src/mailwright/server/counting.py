"""What one session counts: every reply it writes, by the command it answers and its code.

Counted from the bytes on their way to the socket (session.py's two write paths),
not from the Reply values: the protocol core adds replies of its own (421 after too
many errors, 554 to an early talker), and those count as much as any other.
"""

from __future__ import annotations

from mailwright.metrics import Metrics
from mailwright.protocol.events import (
    AuthAborted,
    AuthChallenge,
    BodyRejected,
    Ehlo,
    EndOfData,
    Event,
    ProtocolViolation,
    SyncViolation,
)

#: The label of the greeting (or the refusal of a connection).
CONNECT = "connect"
#: The label of a reply nobody asked for: a timeout, shutdown or an internal error.
UNSOLICITED = "none"
#: A line the parser could not take as a known command in its place (503, 500, 501 ...).
INVALID = "invalid"


def command_label(event: Event) -> str:
    """The verb an event answers, as the client sent it."""
    if isinstance(event, Ehlo):
        return "EHLO" if event.extended else "HELO"
    if isinstance(event, EndOfData | BodyRejected):
        return "DATA"
    if isinstance(event, AuthChallenge | AuthAborted):
        return "AUTH"
    if isinstance(event, SyncViolation):
        return "sync"
    if isinstance(event, ProtocolViolation):
        return INVALID
    return type(event).__name__.upper()


def reply_codes(data: bytes) -> list[str]:
    """The code of each complete reply in ``data``: its last line is ``DDD SP`` or ``DDD``
    alone (RFC 5321 4.2.1); the lines before have ``DDD-``."""
    codes = []
    for line in data.split(b"\r\n"):
        if len(line) >= 3 and line[:3].isdigit() and (len(line) == 3 or line[3:4] == b" "):
            codes.append(line[:3].decode("ascii"))
    return codes


class ReplyCounter:
    """Counts a session's replies into ``mailwright_smtp_replies_total{command,code}``."""

    __slots__ = ("_answering", "_metrics")

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._answering = CONNECT

    def answering(self, event: Event) -> None:
        """The next replies answer ``event``."""
        self._answering = command_label(event)

    def unsolicited(self) -> None:
        self._answering = UNSOLICITED

    def sent(self, data: bytes) -> None:
        for code in reply_codes(data):
            self._metrics.reply_sent(self._answering, code)
