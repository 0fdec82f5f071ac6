"""Where a value is read, and how a problem with it is named.

A ``Place`` is the dotted TOML key of one value (``smtp.listen``,
``mailboxes."a@b.test".password``) with what a converter may need besides the
value.  ``show`` quotes a value as the operator wrote it, so every message
reads like the file.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol, TypeAlias, TypeVar

from mailwright.errors import ConfigError
from mailwright.syntax import quoted

T = TypeVar("T")

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


class TableReader(Protocol):
    """Reads one TOML table into a schema dataclass (load.read_table)."""

    def __call__(self, cls: type[T], raw: object, at: Place) -> T: ...


@dataclass(frozen=True, slots=True)
class Place:
    """Where a value is read: its dotted key, and the context a converter may need."""

    #: The dotted TOML key errors name: ``smtp.listen``, ``mailboxes."a@b.test".password``.
    key: str
    #: Relative file names in the configuration are taken from here (the file's folder).
    base_dir: Path
    read_table: TableReader
    #: The fields of the enclosing table read before this one, by field name.
    earlier: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))

    def child(self, name: str) -> Place:
        """The place of key ``name`` inside this one."""
        return replace(self, key=dotted(self.key, name))

    def fail(self, problem: str) -> ConfigError:
        """The error to raise for a bad value here."""
        return ConfigError(self.key, problem)


#: The type of every converter.
Convert: TypeAlias = Callable[[object, Place], T]


# ---------------------------------------------------------------- showing values


def show(value: object) -> str:
    """A value as the operator wrote it in TOML, short enough for one line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return quoted(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time value"


def dotted(parent: str, name: str) -> str:
    """``parent.name``, quoting ``name`` as TOML would when it is not a bare key."""
    part = name if _BARE_KEY.match(name) else json.dumps(name, ensure_ascii=False)
    return f"{parent}.{part}" if parent else part


def as_table(value: object, at: Place) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise at.fail(f"expected a table, got {show(value)}")
    return value


def refuse_unknown(table: Mapping[str, object], known: tuple[str, ...], at: Place) -> None:
    """A key nobody reads is an error, so a typo is never silently ignored."""
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]}?" if close else f"known keys: {', '.join(known)}"
            raise at.child(key).fail(f"unknown key; {hint}")
