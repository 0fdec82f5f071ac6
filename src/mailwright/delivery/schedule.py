"""When to try a recipient again, and when to give up: pure functions.

The queue stores; this module decides (the split OpenSMTPD keeps between its
queue and its scheduler).  Nothing here reads the clock or touches storage: the
caller passes ``now``, so every rule is a table-driven test.

The rule
--------
``retry`` lists the seconds to wait after each failed attempt: after the first
failure wait ``retry[0]``, after the second ``retry[1]`` ... and the last value
repeats for every later failure.  A message expires ``max_age`` seconds after it
was received (``received_at``): an attempt that fails at or after that moment is
final (the recipient bounces with a DSN, RFC 3464), and no retry is ever
scheduled later than the expiry moment, so the last attempt happens right at
the expiry moment instead of up to one retry interval after it.

RFC 5321 4.5.4.1 asks for a retry interval of at least 30 minutes and a give-up
time of at least 4-5 days; the interval list and ``max_age`` come from the
configuration (``[queue] retry`` and ``max_age``), so this module states the
mechanism and config.py the policy.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["expires_at", "next_attempt", "retry_delay"]


def retry_delay(attempts_done: int, retry: Sequence[int]) -> int:
    """Seconds to wait after ``attempts_done`` attempts; 0 before the first attempt.

    The last value of ``retry`` repeats for every attempt beyond the list.
    """
    if not retry:
        raise ValueError("retry must list at least one interval")
    if any(delay < 0 for delay in retry):
        raise ValueError(f"retry intervals must not be negative: {list(retry)!r}")
    if attempts_done < 0:
        raise ValueError(f"attempts_done must not be negative: {attempts_done}")
    if attempts_done == 0:
        return 0
    return retry[min(attempts_done, len(retry)) - 1]


def expires_at(received_at: float, max_age: float) -> float:
    """The moment after which a message is no longer retried."""
    if max_age < 0:
        raise ValueError(f"max_age must not be negative: {max_age}")
    return received_at + max_age


def next_attempt(
    received_at: float,
    attempts_done: int,
    now: float,
    retry: Sequence[int],
    max_age: float,
) -> float | None:
    """When to try again after ``attempts_done`` attempts, the last of which ended at ``now``.

    Returns a unix time, or None when the message has expired: ``now`` is at or
    past ``received_at + max_age`` and the recipient must bounce.  Otherwise
    the answer is ``now + retry_delay(attempts_done, retry)``, but never later
    than the expiry moment, so one last attempt is made exactly when the
    message expires.  With ``attempts_done == 0`` (nothing tried yet) the
    answer is ``now``.
    """
    deadline = expires_at(received_at, max_age)
    delay = retry_delay(attempts_done, retry)
    if now >= deadline:
        return None
    return min(now + delay, deadline)
