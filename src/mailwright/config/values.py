"""Converters: one TOML value in, one checked Python value out, or a ConfigError naming the key.

Every converter has the same shape, ``convert(value, at) -> result``: ``value``
is what tomllib read (any TOML type: a converter checks the type first) and
``at`` is the ``Place`` it was read from (place.py).  The place names the
dotted key for error messages and carries what a few converters need besides
the value: the folder relative file names start from, the fields of the table
read before this one (``domains.local`` for the tables keyed by local
address), and the reader of nested tables (load.py's walker, passed in so this
module does not depend on it).  Messages quote the value as the operator wrote
it (``show``); a password is never echoed.
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from mailwright import passwords
from mailwright.config.place import Convert, Place, as_table, refuse_unknown, show
from mailwright.model import Address
from mailwright.protocol.server import MIN_BODY_LINE_LENGTH, MIN_LINE_LENGTH
from mailwright.syntax import (
    DNS_PORT,
    MAX_LOCAL_PART,
    SMTP_PORT,
    address_literal_key,
    is_address_literal,
    is_domain_name,
    is_dot_string,
    is_ip_address,
    is_safe_local_part,
    is_valid_address_literal,
    split_host_port,
)

T = TypeVar("T")

#: ``delivery.tls``: try STARTTLS; insist on it; insist on it and check the certificate.
DELIVERY_TLS_MODES = ("opportunistic", "required", "verify")
#: More processes than this is a mistake, not a tuning (each holds its own interpreter).
MAX_PROCESSES = 64

# ---------------------------------------------------------------- numbers


def boolean(value: object, at: Place) -> bool:
    """TOML ``true`` or ``false``; never a string or a number read as one."""
    if not isinstance(value, bool):
        raise at.fail(f"expected true or false, got {show(value)}")
    return value


def positive_int(value: object, at: Place) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise at.fail(f"expected a positive integer, got {show(value)}")
    return value


def non_negative_int(value: object, at: Place) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise at.fail(f"expected an integer, 0 or more, got {show(value)}")
    return value


def processes(value: object, at: Place) -> int:
    """A count of server processes, or "auto": one per CPU this process may run on."""
    if value == "auto":
        return max(1, min(len(os.sched_getaffinity(0)), MAX_PROCESSES))
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PROCESSES:
        raise at.fail(f'expected "auto" or a number from 1 to {MAX_PROCESSES}, got {show(value)}')
    return value


def line_length(value: object, at: Place) -> int:
    length = positive_int(value, at)
    if length < MIN_LINE_LENGTH:
        raise at.fail(f"must be at least {MIN_LINE_LENGTH} (RFC 5321 4.5.3.1.4), got {length}")
    return length


def body_line_length(value: object, at: Place) -> int:
    """0 (no limit) or at least RFC 5321 4.5.3.1.6's 1000 octets, CRLF included."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or (0 < value < MIN_BODY_LINE_LENGTH)
        or value < 0
    ):
        raise at.fail(
            f"expected 0 (no limit) or at least {MIN_BODY_LINE_LENGTH}, got {show(value)}"
        )
    return value


def seconds(value: object, at: Place) -> float:
    """A positive, finite number of seconds."""
    return _seconds(value, at, allow_zero=False)


#: The claim lease of the queue (queue/sqlite/store.py DEFAULT_LEASE_SECONDS, 900 s) minus a
#: minute to record the results: an attempt_timeout above this is refused.
MAX_ATTEMPT_TIMEOUT = 840.0


def attempt_timeout(value: object, at: Place) -> float:
    """Seconds, at most MAX_ATTEMPT_TIMEOUT: an attempt must end before its claim lapses."""
    seconds = _seconds(value, at, allow_zero=False)
    if seconds > MAX_ATTEMPT_TIMEOUT:
        raise at.fail(
            f"at most {MAX_ATTEMPT_TIMEOUT:g} seconds (the queue hands a claimed message out"
            f" again after 900 s), got {show(value)}"
        )
    return seconds


def delay(value: object, at: Place) -> float:
    """A finite number of seconds, 0 or more."""
    return _seconds(value, at, allow_zero=True)


def _seconds(value: object, at: Place, *, allow_zero: bool) -> float:
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value >= 0 if allow_zero else value > 0)
    ):
        return float(value)
    what = "a number of seconds, 0 or more" if allow_zero else "a positive number of seconds"
    raise at.fail(f"expected {what}, got {show(value)}")


def port(value: object, at: Place) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise at.fail(f"expected a port number from 1 to 65535, got {show(value)}")
    return value


def retry_intervals(value: object, at: Place) -> tuple[int, ...]:
    return tuple(positive_int(item, at) for item in array(value, at, allow_empty=False))


# ---------------------------------------------------------------- strings and arrays


def string(value: object, at: Place) -> str:
    if not isinstance(value, str) or not value:
        raise at.fail(f"expected a non-empty string, got {show(value)}")
    return value


def path(value: object, at: Place) -> Path:
    """A file or folder name; load.py anchors ``data_dir`` at the configuration's folder."""
    return Path(string(value, at))


def readable_file(value: object, at: Place) -> Path:
    """A file that can be read now, relative names taken from the configuration's folder."""
    file = (at.base_dir / Path(string(value, at)).expanduser()).resolve()
    try:
        with file.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise at.fail(f"cannot read {file} ({reason})") from None
    return file


def array(value: object, at: Place, *, allow_empty: bool = True) -> list[Any]:
    if not isinstance(value, list):
        raise at.fail(f"expected an array, got {show(value)}")
    if not value and not allow_empty:
        raise at.fail("expected at least one entry, got an empty array")
    return value


def strings(value: object, at: Place, *, allow_empty: bool = True) -> list[str]:
    items = array(value, at, allow_empty=allow_empty)
    for item in items:
        if not isinstance(item, str) or not item:
            raise at.fail(f"expected an array of non-empty strings, got {show(item)}")
    return items


def tls_mode(value: object, at: Place) -> str:
    if not isinstance(value, str) or value not in DELIVERY_TLS_MODES:
        choices = ", ".join(f'"{mode}"' for mode in DELIVERY_TLS_MODES)
        raise at.fail(f"expected one of {choices}, got {show(value)}")
    return value


# ---------------------------------------------------------------- hosts and networks


def host_port(
    value: object, at: Place, *, default_port: int | None = None, allow_port_zero: bool = False
) -> tuple[str, int]:
    text = string(value, at)
    try:
        return split_host_port(text, default_port=default_port, allow_port_zero=allow_port_zero)
    except ValueError as exc:
        raise at.fail(f"{show(text)}: {exc}") from None


def listen_addresses(value: object, at: Place) -> tuple[str, ...]:
    """At least one ``host:port`` to listen on (port 0: any free port), none twice."""
    items = strings(value, at, allow_empty=False)
    seen: set[tuple[str, int]] = set()
    for item in items:
        host, number = host_port(item, at, allow_port_zero=True)
        endpoint = (host.lower(), number)
        if number and endpoint in seen:
            raise at.fail(f"{show(item)} is listed twice")
        seen.add(endpoint)
    return tuple(items)


def http_listen_address(value: object, at: Place) -> str:
    """One ``host:port`` for the admin listener (port 0: any free port)."""
    host_port(value, at, allow_port_zero=True)
    return string(value, at)


def optional_listen_addresses(value: object, at: Place) -> tuple[str, ...]:
    """Like ``listen_addresses``, but an empty array turns the listener off."""
    return listen_addresses(value, at) if array(value, at) else ()


def dns_servers(value: object, at: Place) -> tuple[str, ...]:
    """``IP[:port]`` of DNS servers (port 53 by default); a name would need DNS to find."""
    items = strings(value, at)
    for item in items:
        host, _ = host_port(item, at, default_port=DNS_PORT)
        if not is_ip_address(host):
            raise at.fail(f"{show(item)}: a DNS server must be an IP address")
    return tuple(items)


def networks(value: object, at: Place) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Networks in CIDR notation, repeats dropped."""
    return tuple(dict.fromkeys(_network(item, at) for item in array(value, at)))


def _network(value: object, at: Place) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    text = string(value, at)
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise at.fail(
            f'{show(text)} is not a network in CIDR notation (e.g. "192.0.2.0/24")'
        ) from None
    raise at.fail(f'{show(text)} has host bits set; did you mean "{loose}"?')


# ---------------------------------------------------------------- domains and addresses


def domain(value: object, at: Place) -> str:
    """A domain name, lower-cased and without its trailing dot."""
    text = string(value, at)
    name = text.lower().removesuffix(".")
    if not is_domain_name(name):
        raise at.fail(f'expected a domain name such as "example.test", got {show(text)}')
    return name


def domain_set(value: object, at: Place) -> frozenset[str]:
    return frozenset(domain(item, at) for item in array(value, at))


def local_domain_set(value: object, at: Place) -> frozenset[str]:
    """Domains that must also be in ``domains.local`` (read before this key)."""
    domains = domain_set(value, at)
    if stray := sorted(domains - _local_domains(at)):
        raise at.fail(f"{show(stray[0])} is not in domains.local; add it there")
    return domains


def address(value: object, at: Place) -> Address:
    """An address ``local@domain`` as written in configuration: a dot-atom and a domain."""
    text = string(value, at)
    try:
        parsed = Address.from_text(text)
    except ValueError:
        raise at.fail(f"expected an address such as user@example.test, got {show(text)}") from None
    if len(parsed.local_part) > MAX_LOCAL_PART or not is_dot_string(parsed.local_part):
        raise at.fail(
            f"the local part of {show(text)} is not a plain dot-atom "
            "(no quotes, spaces, @ or leading, trailing or double dots)"
        )
    if not is_domain_name(parsed.domain_key):
        raise at.fail(f"the domain of {show(text)} is not a valid domain name")
    return parsed


def alias_targets(value: object, at: Place) -> tuple[Address, ...]:
    """At least one address; the same address twice (in any case) is kept once, first spelling."""
    targets: dict[str, Address] = {}
    for item in strings(value, at, allow_empty=False):
        target = address(item, at)
        targets.setdefault(target.key, target)
    return tuple(targets.values())


def send_as(value: object, at: Place) -> tuple[str, ...]:
    """Addresses (keys) and ``@domain`` entries a user may use as envelope sender."""
    entries: dict[str, None] = {}
    for item in strings(value, at):
        if item.startswith("@"):
            name = item[1:].lower().removesuffix(".")
            if not is_domain_name(name):
                raise at.fail(f'expected "@domain" or an address, got {show(item)}')
            entries[f"@{name}"] = None
        else:
            entries[address(item, at).key] = None
    return tuple(entries)


def password_hash(value: object, at: Place) -> str:
    # Never echo the value: it may be a plain-text password.
    make = "make a hash with `mailwright passwd`"
    if isinstance(value, str) and value.startswith("$argon2"):
        raise at.fail(f"argon2 hashes are not supported; {make} (scrypt)")
    if not isinstance(value, str) or not value.startswith(passwords.PREFIX):
        raise at.fail(
            f"expected a password hash starting with {passwords.PREFIX} "
            f"(plain-text passwords are refused; {make})"
        )
    try:
        passwords.parse_hash(value)
    except ValueError as exc:
        raise at.fail(f"malformed {passwords.PREFIX} hash: {exc}; {make}") from None
    return value


def _local_domains(at: Place) -> frozenset[str]:
    """``domains.local`` as read before this place (schema.Config declares it earlier)."""
    domains = at.earlier.get("local_domains")
    if not isinstance(domains, frozenset):
        raise TypeError("domains.local must be read before a table keyed by local address")
    return domains


def local_map(convert: Convert[T], *, names_directory: bool = False) -> Convert[Mapping[str, T]]:
    """A table keyed by local address (``[mailboxes]``, ``[aliases]`` ...), each value converted.

    Keys are stored as ``Address.key`` (lower case) and must be in a local
    domain; two spellings of one address are refused.  ``names_directory``
    keys become Maildirs, so their local part must be safe as a file name.
    """

    def read(value: object, at: Place) -> Mapping[str, T]:
        local = _local_domains(at)
        result: dict[str, T] = {}
        spelled: dict[str, str] = {}
        for text, entry in as_table(value, at).items():
            entry_at = at.child(text)
            key = address(text, entry_at)
            if key.domain_key not in local:
                raise entry_at.fail(
                    f"{show(key.domain_key)} is not a local domain (see domains.local)"
                )
            if names_directory and not is_safe_local_part(key.local_part):
                raise entry_at.fail(
                    "a mailbox name must start with a letter or digit and use only letters, "
                    "digits and . _ + - (it names a directory)"
                )
            if key.key in result:
                raise entry_at.fail(
                    f"same address as {show(spelled[key.key])} "
                    "(addresses are compared without regard to case)"
                )
            result[key.key] = convert(entry, entry_at)
            spelled[key.key] = text
        return MappingProxyType(result)

    return read


# ---------------------------------------------------------------- routes


def next_hops(value: object, at: Place) -> Mapping[str, str]:
    """``[routes]``'s next hops by domain (``*`` for every other domain)."""
    return MappingProxyType(_routes(value, at)[0])


def route_tls_modes(value: object, at: Place) -> Mapping[str, str]:
    """``[routes]``'s ``tls`` entries by domain: the TLS policy of one destination."""
    return MappingProxyType(_routes(value, at)[1])


def _routes(value: object, at: Place) -> tuple[dict[str, str], dict[str, str]]:
    """``[routes]``: domain -> "host:port", or a table ``{ next_hop = "...", tls = "..." }``.

    The table form sets the TLS policy of one destination (``tls`` alone keeps
    MX lookup for it); returns (next hops, TLS modes) by domain.
    """
    routes: dict[str, str] = {}
    tls: dict[str, str] = {}
    for text, entry in as_table(value, at).items():
        entry_at = at.child(text)
        name = "*" if text == "*" else _route_domain(text, entry_at)
        if name in routes or name in tls:
            raise entry_at.fail(f"the route for {show(name)} is given twice")
        if isinstance(entry, dict):
            refuse_unknown(entry, ("next_hop", "tls"), entry_at)
            if not entry:
                raise entry_at.fail("a route table needs next_hop, tls or both")
            hop_at = entry_at.child("next_hop")
            hop = string(entry["next_hop"], hop_at) if "next_hop" in entry else None
            if "tls" in entry:
                tls[name] = tls_mode(entry["tls"], entry_at.child("tls"))
            if hop is None:
                continue
            entry, entry_at = hop, hop_at
        # Without a port the next hop is reached on delivery.port; any port checks the syntax.
        host_port(entry, entry_at, default_port=SMTP_PORT)
        routes[name] = str(entry)
    return routes, tls


def _route_domain(text: str, at: Place) -> str:
    """A domain name or an address literal (``"[192.0.2.1]"``), as a key of ``[routes]``.

    A route for an address literal is what allows a bounce to go to a sender
    such as ``x@[192.0.2.1]`` (delivery/dsn.py); without one such bounces are
    dropped.
    """
    if not is_address_literal(text):
        return domain(text, at)
    if not is_valid_address_literal(text):
        raise at.fail(
            f'expected an address literal such as "[192.0.2.1]" or "[IPv6:2001:db8::1]",'
            f" got {show(text)}"
        )
    return address_literal_key(text)


# ---------------------------------------------------------------- tables


def table(cls: type[T]) -> Convert[T]:
    """A nested table read into the schema dataclass ``cls`` (keys checked, defaults filled)."""

    def read(value: object, at: Place) -> T:
        return at.read_table(cls, value, at)

    return read


# ---------------------------------------------------------------- arrays of tables, files


def table_array(cls: type[T]) -> Convert[tuple[T, ...]]:
    """An array of tables (``[[dkim.keys]]``), each read into ``cls``; named ``key[0]``..."""

    def read(value: object, at: Place) -> tuple[T, ...]:
        items = array(value, at)
        return tuple(
            at.read_table(cls, item, replace(at, key=f"{at.key}[{index}]"))
            for index, item in enumerate(items)
        )

    return read


def config_relative_file(value: object, at: Place) -> Path:
    """A file name taken from the configuration's folder; whether it can be used is checked later.

    checks.py opens the file, so one line says what is wrong with it (missing,
    unreadable, wrong mode, wrong content) in the terms of what it is for.
    """
    return (at.base_dir / Path(string(value, at)).expanduser()).resolve()
