"""Queue ids: 16 characters, sortable by time, safe as file names on any file system."""

from __future__ import annotations

import os
import secrets
import threading
import time

_BASE32 = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford's alphabet, lower case
_TIME_DIGITS = 11  # 55 bits of microseconds: until the year 3111
_TAG_DIGITS = 5  # 25 bits: the process id, then random bits
_PID_BITS = 22  # Linux process ids are below PID_MAX_LIMIT = 2**22
_RANDOM_BITS = 5 * _TAG_DIGITS - _PID_BITS  # 3


def _base32(value: int, digits: int) -> str:
    out = []
    for _ in range(digits):
        out.append(_BASE32[value & 31])
        value >>= 5
    return "".join(reversed(out))


class QueueIdGenerator:
    """Makes queue ids: eleven base32 digits of microseconds since the epoch, then
    five digits holding the process id (22 bits) and 3 random bits.

    Ids must never repeat among the processes enqueueing into one data_dir (a
    server, its acceptors): an id names the message's spool file, and a second
    file of the same name would replace the first body.  Random bits alone only
    make that unlikely; (process id, microsecond) cannot repeat on a host,
    because the process id tells apart the processes alive at the same time and
    the microseconds are strictly increasing within one generator.

    So the stores of one process that enqueue into the same data_dir must share
    one generator (``SqliteQueueStore(queue_ids=...)``): they share the process
    id, so they must share the counter too.  A store builds its own when given
    none, which suits mailwright: every process (the server, each acceptor,
    ``mailwright queue``) builds one store in app.py or cli/queue.py.  Nothing
    is made at import time.

    A generator belongs to the process that made it: a forked child makes its
    own store, and with it its own generator (the copied lock might be held by
    a thread the child does not have), so using one in another process is
    refused rather than risked.

    Limits: processes in different PID namespaces (containers) sharing a
    data_dir may have equal ids and then differ only by the random bits; and
    ids of different hosts may repeat (a SQLite queue belongs to one host).
    """

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._last = 0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        if os.getpid() != self._pid:
            raise RuntimeError("a queue id generator cannot be used after fork(); make a new one")
        with self._lock:
            micros = max(time.time_ns() // 1000, self._last + 1)
            self._last = micros
        tag = (self._pid & ((1 << _PID_BITS) - 1)) << _RANDOM_BITS
        tag |= secrets.randbits(_RANDOM_BITS)
        return _base32(micros, _TIME_DIGITS) + _base32(tag, _TAG_DIGITS)
