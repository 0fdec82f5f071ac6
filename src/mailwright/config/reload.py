"""Reading the configuration again for a running server (SIGHUP, ``mailwright reload``).

A running server cannot apply every key: its sockets are bound, its queue is
open in ``data_dir``, its delivery worker sized its slots.  So the file read
again is not taken as it is.  The keys of ``RESTART_KEYS`` keep the values the
server runs with, whatever the file says now, and the ones the file changed are
named (``Reread.needs_restart``) for one log line; every other key takes the
file's value.  The result is checked again as a whole (checks.py), since the
running values and the new ones must fit together (the ``[submission]``
listeners of the running server need the file's ``[tls]``, say).

Reading and checking never touch the running server: a file that does not
load or check raises ConfigError (naming the key) and the caller keeps the
configuration it has.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mailwright.config import checks
from mailwright.config.load import load_config
from mailwright.config.schema import EMBEDDED_SOURCE, Config

#: Keys a running server keeps until it is restarted, in the order they are named:
#: the listeners and the processes behind them, where the queue lives, the name it
#: greets and bounces with, how long AUTH failures are remembered (the tables holding
#: them outlive a reload), what the delivery worker and the resolver were built
#: with, and the admin listener (bound, its token read, at start).  A dotted key is
#: one setting of a table; a bare table name is all of it.
RESTART_KEYS: tuple[str, ...] = (
    "data_dir",
    "hostname",
    "smtp.listen",
    "smtp.processes",
    "smtp.auth_lockout",
    "submission",
    "delivery",
    "queue.retry",
    "queue.max_age",
    "queue.delay_warning",
    "queue.backend",
    "queue.url",
    "queue.password_file",
    "queue.node",
    "queue.lease",
    "queue.write_once_from",
    "dns",
    "http",
)


@dataclass(frozen=True, slots=True)
class Reread:
    """The configuration to run from now on, and the keys whose change waits for a restart."""

    config: Config
    needs_restart: tuple[str, ...]


def reread(running: Config) -> Reread:
    """Read ``running``'s file again (its ``source``); ConfigError if it does not check.

    The embedded default (no file) reads as itself: nothing changes.
    """
    source = None if running.source == EMBEDDED_SOURCE else Path(running.source)
    return merge(running, load_config(source))


def merge(running: Config, new: Config) -> Reread:
    """``new`` with the running values of ``RESTART_KEYS``, checked as a whole."""
    changed = tuple(key for key in RESTART_KEYS if value_at(new, key) != value_at(running, key))
    merged = new
    for key in changed:
        merged = _set(merged, key, value_at(running, key))
    if changed:
        checks.check(merged)
    return Reread(merged, changed)


def value_at(config: Config, key: str) -> Any:
    """The value of a dotted ``key`` (``smtp.listen``) in ``config``."""
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _set(config: Any, key: str, value: Any) -> Any:
    """A copy of the (frozen) ``config`` with the dotted ``key`` set to ``value``."""
    head, _, rest = key.partition(".")
    if not rest:
        return replace(config, **{head: value})
    return replace(config, **{head: _set(getattr(config, head), rest, value)})
