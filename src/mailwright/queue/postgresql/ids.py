"""Queue ids of a queue that several hosts share.

The SQLite store's ids (queue/sqlite/ids.py) carry the process id, which tells
apart the processes of one host, but not of two: two nodes in containers
are both process 1.  Here the 25 bits after the microseconds are random, so
two nodes make the same id only if they enqueue in the same microsecond and
draw the same 25 bits; and then the primary key refuses the second message
(its client gets 451 and sends it again), never overwriting the first.
"""

from __future__ import annotations

import secrets
import threading
import time

from mailwright.queue.sqlite.ids import _TAG_DIGITS, _TIME_DIGITS, _base32


class ClusterQueueIds:
    """16 characters: eleven base32 digits of microseconds (strictly increasing within
    one generator, so ids sort by time), then five random digits."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            micros = max(time.time_ns() // 1000, self._last + 1)
            self._last = micros
        tag = secrets.randbits(5 * _TAG_DIGITS)
        return _base32(micros, _TIME_DIGITS) + _base32(tag, _TAG_DIGITS)
