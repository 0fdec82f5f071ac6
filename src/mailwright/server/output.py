"""The replies of one session on their way out: in order, grouped, bounded.

RFC 2920 lets a server answer a group of pipelined commands in one write;
holding replies only while more input is already buffered means one write (one
syscall) per group instead of one per command, and never a reply held while we
wait.  The group is bounded too (``MAX_HELD_REPLIES``): past it the replies
leave, so the transport's flow control (``pause_writing``) can stop a client
that never reads them.
"""

from __future__ import annotations

import asyncio

#: Replies to pipelined commands held for one write stop being held past this size.
MAX_HELD_REPLIES = 64 * 1024


class ReplyOutput:
    def __init__(self, max_held: int = MAX_HELD_REPLIES) -> None:
        self.transport: asyncio.WriteTransport | None = None
        self.lost = False  # the transport is gone: write nothing more
        self._max_held = max_held
        self._held: list[bytes] = []
        self._held_bytes = 0

    def write(self, data: bytes = b"") -> None:
        """Write ``data`` after any replies held back, so replies always leave in order."""
        if self._held:
            data = b"".join(self._held) + data
            self._held.clear()
            self._held_bytes = 0
        if data and self.transport is not None and not self.lost:
            self.transport.write(data)

    def reply(self, data: bytes, *, more_input: bool) -> None:
        """Send a reply, or hold it while ``more_input`` (pipelined commands) is waiting."""
        if not more_input:
            self.write(data)
            return
        self._held.append(data)
        self._held_bytes += len(data)
        if self._held_bytes > self._max_held:
            self.write()  # may call pause_writing: then the session stops handling input
