"""The time limits of one session: idle, one command line, the whole DATA phase.

Pure bookkeeping in the event loop's time, so the rules read (and test) apart
from timers: ``idle_timeout`` bounds each silence, ``command_timeout`` one whole
command line and ``data_timeout`` the whole DATA phase (RFC 5321 4.5.3.2), so a
client that sends a byte a second cannot hold a session forever.  The session
keeps one timer and asks ``next()`` when it fires.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Deadlines:
    def __init__(self, *, idle: float, command: float, data: float) -> None:
        self._idle = idle
        self._command = command
        self._data = data
        self.waiting_since = 0.0
        self._command_at: float | None = None
        self._data_at: float | None = None

    def command_arrived(self) -> None:
        """A whole command line arrived: the command deadline is met."""
        self._command_at = None

    def waiting(self, now: float, *, receiving_body: bool, partial_line: bool) -> None:
        """The session waits for input from ``now``; start the deadlines that apply."""
        self.waiting_since = now
        if receiving_body:
            if self._data_at is None:
                self._data_at = now + self._data
            return
        self._data_at = None
        if partial_line and self._command_at is None:
            self._command_at = now + self._command

    def next(self) -> tuple[float, str]:
        """The earliest limit now in force, and its name for the log."""
        limits = [(self.waiting_since + self._idle, "idle")]
        if self._data_at is not None:
            limits.append((self._data_at, "data"))
        elif self._command_at is not None:
            limits.append((self._command_at, "command"))
        return min(limits)


class SessionTimer:
    """One timer per session, re-armed only when a deadline comes *earlier*.

    When it fires it asks the deadlines again and re-arms if the session was
    active meanwhile; only a deadline really passed calls ``expired``.  So a
    busy session costs no timer operation per command.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        deadlines: Deadlines,
        fire: Callable[[Callable[[], None]], None],
        expired: Callable[[str], None],
    ) -> None:
        """``fire`` runs the timer's callback (the session's guard against bugs)."""
        self._loop = loop
        self._deadlines = deadlines
        self._fire = fire
        self._expired = expired
        self._handle: asyncio.TimerHandle | None = None
        self._at = 0.0

    def arm(self) -> None:
        deadline, _kind = self._deadlines.next()
        if self._handle is None or deadline < self._at:
            self._set(deadline)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _set(self, when: float) -> None:
        self.cancel()
        self._handle = self._loop.call_at(when, self._fire, self._check)
        self._at = when

    def _check(self) -> None:
        self._handle = None
        deadline, kind = self._deadlines.next()
        if self._loop.time() < deadline:
            self._set(deadline)  # there was input since: wait on
            return
        self._expired(kind)
