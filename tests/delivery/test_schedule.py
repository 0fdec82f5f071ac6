"""The retry rule as a table: intervals between attempts, the last repeats, expiry at max_age."""

from __future__ import annotations

import pytest

from mailwright.delivery.schedule import expires_at, next_attempt, retry_delay

RETRY = (60, 300, 900)
MAX_AGE = 10_000
T0 = 1_000_000.0  # received_at


@pytest.mark.parametrize(
    ("attempts_done", "now", "expected"),
    [
        (0, T0, T0),  # nothing tried yet: due at once
        (1, T0, T0 + 60),  # first interval
        (2, T0 + 60, T0 + 60 + 300),  # second interval
        (3, T0 + 360, T0 + 360 + 900),  # third interval
        (4, T0 + 1260, T0 + 1260 + 900),  # the last interval repeats
        (40, T0 + 5000, T0 + 5900),  # ... for ever
        (9, T0 + 9500, T0 + MAX_AGE),  # never scheduled after expiry: one last try at it
        (9, T0 + MAX_AGE - 0.5, T0 + MAX_AGE),
        (9, T0 + MAX_AGE, None),  # failed at the expiry moment: bounce
        (9, T0 + MAX_AGE + 3600, None),  # failed after it: bounce
        (0, T0 + MAX_AGE, None),  # expired before the first try (a long outage)
    ],
)
def test_next_attempt(attempts_done: int, now: float, expected: float | None) -> None:
    assert next_attempt(T0, attempts_done, now, RETRY, MAX_AGE) == expected


@pytest.mark.parametrize(
    ("attempts_done", "retry", "expected"),
    [
        (0, (60,), 0),
        (1, (60,), 60),
        (5, (60,), 60),
        (1, (10, 20), 10),
        (2, (10, 20), 20),
        (3, (10, 20), 20),
    ],
)
def test_retry_delay(attempts_done: int, retry: tuple[int, ...], expected: int) -> None:
    assert retry_delay(attempts_done, retry) == expected


def test_expires_at_is_received_at_plus_max_age() -> None:
    assert expires_at(T0, MAX_AGE) == T0 + MAX_AGE


@pytest.mark.parametrize(
    ("attempts_done", "retry", "max_age"),
    [(1, (), 100), (1, (60, -1), 100), (-1, (60,), 100), (1, (60,), -1)],
)
def test_invalid_arguments_are_refused(
    attempts_done: int, retry: tuple[int, ...], max_age: float
) -> None:
    with pytest.raises(ValueError):
        next_attempt(T0, attempts_done, T0, retry, max_age)
