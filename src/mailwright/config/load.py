"""Loading: a TOML file -> the schema's dataclasses -> the cross-checks -> a frozen Config.

``read_table`` is the one walker: for a schema dataclass it refuses keys that
no field declares (with a "did you mean"), refuses a missing required key, and
converts each key present with its field's converter, in field order, so the
first error named is the first wrong key in the order the schema reads them.
Absent keys keep the field's default.  Nothing here knows a key by name.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from mailwright.config import checks
from mailwright.config.place import Place, as_table, refuse_unknown
from mailwright.config.schema import EMBEDDED_SOURCE, SETTING, Config, Setting
from mailwright.errors import ConfigError

T = TypeVar("T")

#: What ``mailwright serve`` runs with no --config: the schema's defaults (loopback
#: only, no relaying, data_dir in the current directory), and one addition so it is
#: useful at once.  ``describe`` prints the result at start so the operator sees it.
EMBEDDED_DEFAULT_TOML = """\
[domains]
auto_mailbox = ["localhost"]        # every user@localhost gets a Maildir on first delivery
"""

_UTF8_BOM = b"\xef\xbb\xbf"


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read and validate a configuration file; ``None`` means the embedded default.

    A relative ``data_dir`` is taken relative to the file's folder, so the
    server finds the same data whatever directory it was started from; the
    embedded default has no folder and uses the current directory.
    """
    if path is None:
        return parse_config(EMBEDDED_DEFAULT_TOML, source=EMBEDDED_SOURCE, base_dir=Path.cwd())
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(str(file), f"cannot read the configuration file ({reason})") from None
    offset = len(_UTF8_BOM) if data.startswith(_UTF8_BOM) else 0  # some editors add one
    try:
        text = data[offset:].decode("utf-8")
    except UnicodeDecodeError as exc:
        at = offset + exc.start
        raise ConfigError(
            str(file),
            f"not valid UTF-8 (byte 0x{data[at]:02x} at offset {at}); save the file as UTF-8",
        ) from None
    return parse_config(text, source=str(file), base_dir=file.absolute().parent)


def parse_config(text: str, *, source: str, base_dir: Path) -> Config:
    """Validate TOML text into a Config, or raise ConfigError naming the first bad key.

    ``source`` is recorded in ``Config.source`` and names the text in a syntax
    error; ``base_dir`` anchors a relative ``data_dir``.  Every key is
    optional; any key this function does not know is an error, so a typo is
    never silently ignored.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, f"TOML syntax error: {exc}") from None
    config = read_table(Config, raw, Place("", base_dir, read_table))
    mailboxes_dir = config.delivery.mailboxes_dir
    config = replace(
        config,
        data_dir=(base_dir / config.data_dir.expanduser()).resolve(),
        delivery=replace(
            config.delivery,
            mailboxes_dir=None
            if mailboxes_dir is None
            else (base_dir / mailboxes_dir.expanduser()).resolve(),
        ),
        source=source,
    )
    checks.check(config)
    return config


def read_table(cls: type[T], raw: object, at: Place) -> T:
    """Read the TOML table ``raw`` into the schema dataclass ``cls``."""
    table = as_table(raw, at)
    keys = _keys(cls)
    refuse_unknown(table, _names(keys, ""), at)
    for key in keys:
        if key.setting.required and key.name not in table:
            raise at.child(key.name).fail(f"missing; {key.setting.required}")
    tables = {"": table}
    values: dict[str, object] = {}
    read_so_far = MappingProxyType(values)
    for key in keys:
        place = at.child(key.table) if key.table else at
        if key.table not in tables:
            tables[key.table] = as_table(table.get(key.table, {}), place)
            refuse_unknown(tables[key.table], _names(keys, key.table), place)
        value = tables[key.table].get(key.name, _ABSENT)
        if value is _ABSENT:
            values[key.field] = key.default()
        else:
            where = replace(place.child(key.name), earlier=read_so_far)
            values[key.field] = key.setting.convert(value, where)
    return cls(**values)


_ABSENT = object()


@dataclass(frozen=True, slots=True)
class _Key:
    """One field of a schema dataclass, as the walker finds it in the file."""

    field: str
    setting: Setting
    #: The sub-table the key is in (``domains`` for ``domains.local``); "" for the table itself.
    table: str
    name: str
    default: Callable[[], object]


def _keys(cls: type[object]) -> list[_Key]:
    """The fields of ``cls`` that are read from TOML, in declaration order."""
    keys = []
    for f in fields(cls):  # type: ignore[arg-type]
        setting = f.metadata.get(SETTING)
        if isinstance(setting, Setting):
            table, _, name = (setting.key or f.name).rpartition(".")
            keys.append(_Key(f.name, setting, table, name, _default_of(f)))
    return keys


def _default_of(f: Field[Any]) -> Callable[[], object]:
    if f.default_factory is not MISSING:
        return f.default_factory
    default = f.default
    return lambda: default


def _names(keys: list[_Key], table: str) -> tuple[str, ...]:
    """The keys ``table`` may hold, in schema order; "" is the table itself, sub-tables included."""
    if table:
        return tuple(dict.fromkeys(key.name for key in keys if key.table == table))
    return tuple(dict.fromkeys(key.table or key.name for key in keys))
