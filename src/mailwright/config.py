"""Configuration: TOML (tomllib) -> a frozen, validated Config.

Every default is named here, once.  Every limit the server enforces comes from
this file and is passed down as an argument, never written as a literal where it
is used.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from mailwright import passwords
from mailwright.errors import ConfigError
from mailwright.model import Address

# ---------------------------------------------------------------- defaults
DEFAULT_HOSTNAME = "localhost"
DEFAULT_DATA_DIR = "mailwright-data"
DEFAULT_LISTEN = ("127.0.0.1:2525",)
DEFAULT_MAX_MESSAGE_SIZE = 26_214_400
DEFAULT_MAX_RECIPIENTS = 100
DEFAULT_IDLE_TIMEOUT = 300.0
DEFAULT_COMMAND_TIMEOUT = 300.0
DEFAULT_DATA_TIMEOUT = 600.0
DEFAULT_MAX_CONNECTIONS = 1000
DEFAULT_MAX_CONNECTIONS_PER_IP = 50
DEFAULT_MAX_ERRORS = 10
DEFAULT_MAX_LINE_LENGTH = 512  # RFC 5321 4.5.3.1.4, including the CRLF
DEFAULT_GREET_DELAY = 0.0
DEFAULT_MAX_BODY_LINE = 0  # octets per message line; 0 accepts any length (never buffered whole)
DEFAULT_MAX_RECEIVED_HEADERS = 30  # loop detection, RFC 5321 6.3
DEFAULT_LOCAL_DOMAINS = ("localhost",)
DEFAULT_DELIVERY_PORT = 25
#: Messages in delivery at once (Postfix's default_process_limit is 100 too).  A
#: relay is bound by round trips and commits, not CPU: with 20, relayed mail left
#: at 60 % of the rate it came in on the benchmark; with 100, as fast as it came.
DEFAULT_DELIVERY_CONCURRENCY = 100
#: Maildir writes at once: making files is disk- and kernel-bound, and more
#: writers in parallel finish a backlog no sooner (docs/performance.md) while
#: taking CPU and fsyncs from the sessions receiving mail.
DEFAULT_LOCAL_CONCURRENCY = 4
#: Connections at once to one destination (its first next hop: the route's host
#: or the primary MX), as Postfix's default_destination_concurrency_limit.  Big
#: providers answer more connections from one client with 421, which would defer
#: the excess for a whole retry interval; messages over the limit wait for a
#: connection instead and reuse it.
DEFAULT_DESTINATION_CONCURRENCY = 20
DEFAULT_CONNECT_TIMEOUT = 30.0
#: The longest one delivery attempt of a message may take, from its claim to its results:
#: waiting for a connection or a Maildir writer, DNS, the SMTP session.  A destination
#: that never answers then holds a delivery slot this long at most, and an attempt ends
#: before the queue's claim on it lapses and could hand the message out a second time.
DEFAULT_ATTEMPT_TIMEOUT = 720.0
#: The claim lease of the queue (queue/sqlite.py DEFAULT_LEASE_SECONDS, 900 s) minus a
#: minute to record the results: an attempt_timeout above this is refused.
MAX_ATTEMPT_TIMEOUT = 840.0
DEFAULT_DELIVERY_TLS = "opportunistic"
DEFAULT_RETRY = (60, 300, 900, 3600, 14400)
DEFAULT_MAX_AGE = 432_000
DEFAULT_MAX_ALIAS_DEPTH = 10  # how many aliases deep an expansion may go before it is cut
DEFAULT_AUTH_FAILURE_DELAY = 1.0  # seconds added before each 535, per failure so far
AUTH_FAILURE_DELAY_MAX_STEPS = 5  # the delay stops growing after this many failures
DEFAULT_TLS_HANDSHAKE_TIMEOUT = 30.0

#: ``Config.source`` when no file was read.
EMBEDDED_SOURCE = "<embedded default>"
#: ``delivery.tls``: try STARTTLS; insist on it; insist on it and check the certificate.
DELIVERY_TLS_MODES = ("opportunistic", "required", "verify")
DNS_PORT = 53
#: RFC 5321 4.5.3.1.4: a server must accept command lines of 512 octets; less breaks clients.
MIN_LINE_LENGTH = 512
#: The longest local part that may name a Maildir (RFC 5321 4.5.3.1.1 limits local parts to 64).
MAX_MAILBOX_NAME = 64

#: What ``mailwright serve`` runs with no --config: useful at once, safe by default
#: (loopback only, no relaying), and printed at start so the operator sees it.
EMBEDDED_DEFAULT_TOML = """\
hostname = "localhost"
data_dir = "mailwright-data"        # relative to the current directory

[smtp]
listen = ["127.0.0.1:2525"]

[domains]
local = ["localhost"]
auto_mailbox = ["localhost"]        # every user@localhost gets a Maildir on first delivery
"""


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    listen: tuple[str, ...] = DEFAULT_LISTEN
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_recipients: int = DEFAULT_MAX_RECIPIENTS
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    command_timeout: float = DEFAULT_COMMAND_TIMEOUT
    data_timeout: float = DEFAULT_DATA_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_connections_per_ip: int = DEFAULT_MAX_CONNECTIONS_PER_IP
    max_errors: int = DEFAULT_MAX_ERRORS
    max_line_length: int = DEFAULT_MAX_LINE_LENGTH
    greet_delay: float = DEFAULT_GREET_DELAY
    max_received_headers: int = DEFAULT_MAX_RECEIVED_HEADERS
    max_body_line_length: int = DEFAULT_MAX_BODY_LINE
    auth_failure_delay: float = DEFAULT_AUTH_FAILURE_DELAY
    #: Server processes sharing the listening ports (SO_REUSEPORT); see server/processes.py.
    processes: int = 1

    @property
    def listen_endpoints(self) -> tuple[tuple[str, int], ...]:
        """``listen`` split into (host, port) pairs, IPv6 hosts without brackets.

        Port 0 asks the system for a free port (tests); the listener reports the real one.
        """
        return _endpoints(self.listen)

    def auth_delay(self, failures: int) -> float:
        """Seconds to wait before answering the ``failures``-th failed AUTH of a session."""
        return self.auth_failure_delay * min(failures, AUTH_FAILURE_DELAY_MAX_STEPS)


def _endpoints(items: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    return tuple(split_host_port(item, allow_port_zero=True) for item in items)


@dataclass(frozen=True, slots=True)
class SubmissionConfig:
    """Listeners for mail submission by users (RFC 6409): AUTH is required on both kinds.

    ``listen`` speaks plain text first and needs STARTTLS before AUTH (port 587);
    ``implicit_tls`` starts TLS with the first byte (RFC 8314, port 465).
    """

    listen: tuple[str, ...] = ()
    implicit_tls: tuple[str, ...] = ()

    @property
    def listen_endpoints(self) -> tuple[tuple[str, int], ...]:
        return _endpoints(self.listen)

    @property
    def implicit_tls_endpoints(self) -> tuple[tuple[str, int], ...]:
        return _endpoints(self.implicit_tls)


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """The server's certificate chain and private key (PEM files, absolute paths)."""

    certificate: Path
    key: Path
    handshake_timeout: float = DEFAULT_TLS_HANDSHAKE_TIMEOUT


@dataclass(frozen=True, slots=True)
class MailboxConfig:
    """A local mailbox; ``password_hash`` is set for users who may authenticate.

    ``send_as`` lists the other envelope senders the user may use once
    authenticated: address keys (``list@example.test``) and whole domains
    (``@example.org``).  Its own address is always allowed.
    """

    password_hash: str | None = None
    send_as: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    port: int = DEFAULT_DELIVERY_PORT
    dns_servers: tuple[str, ...] = ()
    concurrency: int = DEFAULT_DELIVERY_CONCURRENCY
    local_concurrency: int = DEFAULT_LOCAL_CONCURRENCY
    destination_concurrency: int = DEFAULT_DESTINATION_CONCURRENCY
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT
    tls: str = DEFAULT_DELIVERY_TLS
    ca_file: Path | None = None  # PEM CAs trusted by tls = "verify"; None: the system's


@dataclass(frozen=True, slots=True)
class QueueConfig:
    retry: tuple[int, ...] = DEFAULT_RETRY
    max_age: int = DEFAULT_MAX_AGE


def _frozen_map(d: Mapping | None = None) -> Mapping:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated configuration.

    Address keys in the mappings are normalised with ``Address.key`` (local part
    and domain lower-cased) so lookups are case-insensitive; values keep the
    operator's spelling.  An address is at most one of mailbox, alias, forward
    or relocated (``parse_config`` refuses overlaps), and ``data_dir`` is
    absolute once parsed.
    """

    hostname: str = DEFAULT_HOSTNAME
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    smtp: SmtpConfig = SmtpConfig()
    submission: SubmissionConfig = SubmissionConfig()
    tls: TlsConfig | None = None
    local_domains: frozenset[str] = frozenset(DEFAULT_LOCAL_DOMAINS)
    auto_mailbox_domains: frozenset[str] = frozenset()
    mailboxes: Mapping[str, MailboxConfig] = field(default_factory=_frozen_map)
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=_frozen_map)
    forward: Mapping[str, str] = field(default_factory=_frozen_map)
    relocated: Mapping[str, str] = field(default_factory=_frozen_map)
    relay_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    routes: Mapping[str, str] = field(default_factory=_frozen_map)
    route_tls: Mapping[str, str] = field(default_factory=_frozen_map)  # domain -> delivery.tls
    delivery: DeliveryConfig = DeliveryConfig()
    queue: QueueConfig = QueueConfig()
    source: str = EMBEDDED_SOURCE


# ---------------------------------------------------------------- loading


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
    return _Builder(raw, source=source, base_dir=base_dir).build()


def split_host_port(
    text: str, *, default_port: int | None = None, allow_port_zero: bool = False
) -> tuple[str, int]:
    """Split ``host:port`` or ``[ipv6]:port``; without a port, use ``default_port`` or refuse.

    Raises ValueError with a message fit to show the operator.  The host is a
    domain name or an IP address; IPv6 needs brackets so the port is never
    mistaken for part of the address.  Port 0 (let the system pick a free port)
    makes sense only for a listening address, hence ``allow_port_zero``.
    """
    port_text: str | None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError("missing ] after the IPv6 address")
        host, rest = text[1:end], text[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"not an IPv6 address in brackets: {_show(host)}") from None
        if not rest:
            port_text = None
        elif rest.startswith(":"):
            port_text = rest[1:]
        else:
            raise ValueError("expected :port after the ]")
    else:
        if text.count(":") > 1:
            raise ValueError("an IPv6 address needs brackets, e.g. [::1]:2525")
        host, sep, port_text_or_empty = text.partition(":")
        port_text = port_text_or_empty if sep else None
        if not host:
            raise ValueError("missing host before the port")
        if not _is_ip(host) and not is_domain_name(host.lower().rstrip(".")):
            raise ValueError(f"not a host name or IP address: {_show(host)}")
    if port_text is None:
        if default_port is None:
            raise ValueError("missing port (write host:port, e.g. 127.0.0.1:2525)")
        return host, default_port
    lowest = 0 if allow_port_zero else 1
    if not (port_text.isascii() and port_text.isdigit()) or not lowest <= int(port_text) <= 65535:
        raise ValueError(f"bad port {_show(port_text)}: expected a number from {lowest} to 65535")
    return host, int(port_text)


def is_safe_local_part(local_part: str) -> bool:
    """True when ``local_part`` may name a Maildir: data_dir/mailboxes/<domain>/<local part>.

    A letter or digit first, then letters, digits and ``. _ + -``, no ``..``, at
    most 64 characters.  Letters and digits of any script count, so SMTPUTF8
    mailboxes (RFC 6531) work; ``/``, NUL, whitespace, quotes, ``%`` and ``!``
    never pass, so no address can name a path outside its directory.
    """
    if not local_part or len(local_part) > MAX_MAILBOX_NAME or ".." in local_part:
        return False
    return local_part[0].isalnum() and all(c.isalnum() or c in "._+-" for c in local_part)


def is_domain_name(text: str) -> bool:
    """Whether ``text`` is a lower-case ASCII host name (LDH labels, no trailing dot).

    Internationalised names are written in their xn-- form; a name that passes
    is also safe as one directory name (no ``/``, no ``..``).
    """
    if not text or len(text) > 253:
        return False
    return all(_LABEL.match(label) for label in text.split("."))


def describe(config: Config) -> str:
    """A short summary of what the server will use, printed by ``serve`` at start.

    It answers the questions an operator has when mail goes missing: where do
    we listen, which domains are ours, where is the mail kept, who may relay.
    """
    counts = ", ".join(
        _plural(len(mapping), noun)
        for mapping, noun in (
            (config.mailboxes, "mailbox"),
            (config.aliases, "alias"),
            (config.forward, "forward"),
            (config.relocated, "relocated address"),
        )
    )
    domains = ", ".join(sorted(config.local_domains)) or "none (nothing is delivered here)"
    if config.auto_mailbox_domains:
        auto = ", ".join(sorted(config.auto_mailbox_domains))
        domains += f" (any user gets a mailbox at: {auto})"
    if config.relay_networks:
        networks = ", ".join(str(net) for net in config.relay_networks)
        relaying = f"for authenticated clients and clients in {networks}"
    else:
        relaying = "only for authenticated clients"
    users = sum(1 for box in config.mailboxes.values() if box.password_hash)
    if config.tls is not None:
        tls = (
            f"certificate {config.tls.certificate}; STARTTLS offered, "
            f"AUTH after TLS for {_plural(users, 'user')}"
        )
    else:
        tls = "off (no [tls] certificate: no STARTTLS, no AUTH)"
    lines = [
        f"mailwright configuration from {config.source}",
        f"  listening on    {', '.join(config.smtp.listen)}",
    ]
    if config.smtp.processes > 1:
        lines.append(f"  processes       {config.smtp.processes} (sharing the listening ports)")
    if config.submission.listen:
        submission = ", ".join(config.submission.listen)
        lines.append(f"  submission      {submission} (STARTTLS, then AUTH required)")
    if config.submission.implicit_tls:
        implicit = ", ".join(config.submission.implicit_tls)
        lines.append(f"  submission TLS  {implicit} (implicit TLS, then AUTH required)")
    lines += [
        f"  TLS             {tls}",
        f"  hostname        {config.hostname}",
        f"  data directory  {Path(config.data_dir).absolute()}",
        f"  local domains   {domains}",
        f"  addresses       {counts}",
        f"  relaying        {relaying}",
    ]
    if config.routes:
        routes = ", ".join(f"{dom} -> {hop}" for dom, hop in sorted(config.routes.items()))
        lines.append(f"  routes          {routes}")
    return "\n".join(lines)


# ---------------------------------------------------------------- validation helpers

_T = TypeVar("_T")
_MISSING: Any = object()
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_ATEXT = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
)
_MAX_SHOWN = 60
_UTF8_BOM = b"\xef\xbb\xbf"


def _show(value: object) -> str:
    """A value as the operator wrote it in TOML, short enough for one line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = json.dumps(value, ensure_ascii=False)
        return shown if len(shown) <= _MAX_SHOWN else shown[: _MAX_SHOWN - 4] + '..."'
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time value"


def _plural(count: int, noun: str) -> str:
    if count == 1:
        return f"1 {noun}"
    return f"{count} {noun}es" if noun.endswith(("s", "x")) else f"{count} {noun}s"


def _dotted(parent: str, name: str) -> str:
    """``parent.name``, quoting ``name`` as TOML would when it is not a bare key."""
    part = name if _BARE_KEY.match(name) else json.dumps(name, ensure_ascii=False)
    return f"{parent}.{part}" if parent else part


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_dot_atom(local: str) -> bool:
    """RFC 5322 dot-atom: what a local part may be in configuration (no quoting)."""
    if not local or len(local) > 64 or local[0] == "." or local[-1] == "." or ".." in local:
        return False
    return all(c in _ATEXT or c == "." or ord(c) > 127 for c in local)


class _Table:
    """One TOML table being read: knows its dotted name and refuses keys it does not know.

    ``known`` None means any key is allowed (tables keyed by address or domain).
    """

    def __init__(self, raw: object, name: str, known: Iterable[str] | None = None) -> None:
        if not isinstance(raw, dict):
            raise ConfigError(name, f"expected a table, got {_show(raw)}")
        self.raw: dict[str, Any] = raw
        self.name = name
        if known is None:
            return
        known = tuple(known)
        for key in raw:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"did you mean {close[0]}?" if close else f"known keys: {', '.join(known)}"
                raise ConfigError(_dotted(name, key), f"unknown key; {hint}")

    def key(self, name: str) -> str:
        return _dotted(self.name, name)

    def get(self, name: str, convert: Callable[[Any, str], _T], default: _T) -> _T:
        value = self.raw.get(name, _MISSING)
        return default if value is _MISSING else convert(value, self.key(name))


def _positive_int(value: object, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(key, f"expected a positive integer, got {_show(value)}")
    return value


#: More processes than this is a mistake, not a tuning (each holds its own interpreter).
MAX_PROCESSES = 64


def _processes(value: object, key: str) -> int:
    """A count of server processes, or "auto": one per CPU this process may run on."""
    if value == "auto":
        return max(1, min(len(os.sched_getaffinity(0)), MAX_PROCESSES))
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PROCESSES:
        raise ConfigError(
            key, f'expected "auto" or a number from 1 to {MAX_PROCESSES}, got {_show(value)}'
        )
    return value


def _line_length(value: object, key: str) -> int:
    length = _positive_int(value, key)
    if length < MIN_LINE_LENGTH:
        raise ConfigError(
            key, f"must be at least {MIN_LINE_LENGTH} (RFC 5321 4.5.3.1.4), got {length}"
        )
    return length


def _seconds(value: object, key: str, *, allow_zero: bool = False) -> float:
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value >= 0 if allow_zero else value > 0)
    ):
        return float(value)
    what = "a number of seconds, 0 or more" if allow_zero else "a positive number of seconds"
    raise ConfigError(key, f"expected {what}, got {_show(value)}")


def _attempt_timeout(value: object, key: str) -> float:
    """Seconds, at most MAX_ATTEMPT_TIMEOUT: an attempt must end before its claim lapses."""
    seconds = _seconds(value, key)
    if seconds > MAX_ATTEMPT_TIMEOUT:
        raise ConfigError(
            key,
            f"at most {MAX_ATTEMPT_TIMEOUT:g} seconds (the queue hands a claimed message out"
            f" again after 900 s), got {_show(value)}",
        )
    return seconds


def _body_line(value: object, key: str) -> int:
    """0 (no limit) or at least RFC 5321 4.5.3.1.6's 1000 octets, CRLF included."""
    if isinstance(value, bool) or not isinstance(value, int) or (0 < value < 1000) or value < 0:
        raise ConfigError(key, f"expected 0 (no limit) or at least 1000, got {_show(value)}")
    return value


def _delay(value: object, key: str) -> float:
    return _seconds(value, key, allow_zero=True)


def _port(value: object, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(key, f"expected a port number from 1 to 65535, got {_show(value)}")
    return value


def _string(value: object, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, f"expected a non-empty string, got {_show(value)}")
    return value


def _list(value: object, key: str, *, allow_empty: bool = True) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(key, f"expected an array, got {_show(value)}")
    if not value and not allow_empty:
        raise ConfigError(key, "expected at least one entry, got an empty array")
    return value


def _strings(value: object, key: str, *, allow_empty: bool = True) -> list[str]:
    items = _list(value, key, allow_empty=allow_empty)
    for item in items:
        if not isinstance(item, str) or not item:
            raise ConfigError(key, f"expected an array of non-empty strings, got {_show(item)}")
    return items


def _domain(value: object, key: str) -> str:
    """A domain name, lower-cased and without its trailing dot."""
    text = _string(value, key)
    domain = text.lower().removesuffix(".")
    if not is_domain_name(domain):
        raise ConfigError(key, f'expected a domain name such as "example.test", got {_show(text)}')
    return domain


def _address(value: object, key: str) -> Address:
    """An address ``local@domain`` as written in configuration: a dot-atom and a domain."""
    text = _string(value, key)
    try:
        address = Address.from_text(text)
    except ValueError:
        raise ConfigError(
            key, f"expected an address such as user@example.test, got {_show(text)}"
        ) from None
    if not _is_dot_atom(address.local_part):
        raise ConfigError(
            key,
            f"the local part of {_show(text)} is not a plain dot-atom "
            "(no quotes, spaces, @ or leading, trailing or double dots)",
        )
    if not is_domain_name(address.domain_key):
        raise ConfigError(key, f"the domain of {_show(text)} is not a valid domain name")
    return address


def _host_port(
    value: object, key: str, *, default_port: int | None = None, allow_port_zero: bool = False
) -> tuple[str, int]:
    text = _string(value, key)
    try:
        return split_host_port(text, default_port=default_port, allow_port_zero=allow_port_zero)
    except ValueError as exc:
        raise ConfigError(key, f"{_show(text)}: {exc}") from None


def _tls_mode(value: object, key: str) -> str:
    if value not in DELIVERY_TLS_MODES:
        choices = ", ".join(f'"{mode}"' for mode in DELIVERY_TLS_MODES)
        raise ConfigError(key, f"expected one of {choices}, got {_show(value)}")
    return str(value)


def _network(value: object, key: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    text = _string(value, key)
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ConfigError(
            key, f'{_show(text)} is not a network in CIDR notation (e.g. "192.0.2.0/24")'
        ) from None
    raise ConfigError(key, f'{_show(text)} has host bits set; did you mean "{loose}"?')


def _password_hash(value: object, key: str) -> str:
    # Never echo the value: it may be a plain-text password.
    make = "make a hash with `mailwright passwd`"
    if isinstance(value, str) and value.startswith("$argon2"):
        raise ConfigError(key, f"argon2 hashes are not supported; {make} (scrypt)")
    if not isinstance(value, str) or not value.startswith(passwords.PREFIX):
        raise ConfigError(
            key,
            f"expected a password hash starting with {passwords.PREFIX} "
            f"(plain-text passwords are refused; {make})",
        )
    try:
        passwords.parse_hash(value)
    except ValueError as exc:
        raise ConfigError(key, f"malformed {passwords.PREFIX} hash: {exc}; {make}") from None
    return value


def _send_as(value: object, key: str) -> tuple[str, ...]:
    """Addresses (keys) and ``@domain`` entries a user may use as envelope sender."""
    entries: dict[str, None] = {}
    for item in _strings(value, key):
        if item.startswith("@"):
            domain = item[1:].lower().removesuffix(".")
            if not is_domain_name(domain):
                raise ConfigError(key, f'expected "@domain" or an address, got {_show(item)}')
            entries[f"@{domain}"] = None
        else:
            entries[_address(item, key).key] = None
    return tuple(entries)


def _check_key_pair(certificate: Path, key: Path, certificate_key: str, key_key: str) -> None:
    """Load the pair once, so a wrong file stops start-up (and check-config) with a clear line."""
    import ssl  # here, not at the top: importing mailwright must not load ssl for protocol/

    try:
        text = certificate.read_text(encoding="ascii", errors="replace")
    except OSError as exc:  # pragma: no cover - just checked readable
        raise ConfigError(certificate_key, f"cannot read {certificate} ({exc})") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ConfigError(certificate_key, f"no PEM certificate in {certificate}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certificate, key)
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        raise ConfigError(
            key_key, f"{key} is not the private key of {certificate} ({reason})"
        ) from None


def _readable_file(value: object, key: str, base_dir: Path) -> Path:
    path = (base_dir / Path(_string(value, key)).expanduser()).resolve()
    try:
        with path.open("rb") as file:
            file.read(1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(key, f"cannot read {path} ({reason})") from None
    return path


# ---------------------------------------------------------------- the builder

_TOP_KEYS = (
    "hostname",
    "data_dir",
    "smtp",
    "submission",
    "tls",
    "domains",
    "mailboxes",
    "aliases",
    "forward",
    "relocated",
    "relay",
    "routes",
    "delivery",
    "queue",
)
_SMTP_KEYS = (
    "listen",
    "max_message_size",
    "max_recipients",
    "idle_timeout",
    "command_timeout",
    "data_timeout",
    "max_connections",
    "max_connections_per_ip",
    "max_errors",
    "max_line_length",
    "greet_delay",
    "max_received_headers",
    "max_body_line_length",
    "auth_failure_delay",
    "processes",
)


class _Builder:
    """Turns the parsed TOML document into a Config, section by section.

    Sections are read in dependency order (domains before the address maps that
    must be in them) so each error names the key that is actually wrong.
    """

    def __init__(self, raw: dict[str, Any], *, source: str, base_dir: Path) -> None:
        self.top = _Table(raw, "", _TOP_KEYS)
        self.source = source
        self.base_dir = base_dir
        self.local_domains: frozenset[str] = frozenset()
        self.auto_mailbox: frozenset[str] = frozenset()

    def build(self) -> Config:
        top = self.top
        hostname = top.get("hostname", _domain, DEFAULT_HOSTNAME)
        data_dir = top.get("data_dir", _string, DEFAULT_DATA_DIR)
        smtp = self._smtp(top.raw.get("smtp", {}))
        submission = self._submission(top.raw.get("submission", {}), smtp)
        tls = self._tls(top.raw.get("tls", _MISSING))
        if tls is None and (submission.listen or submission.implicit_tls):
            which = "listen" if submission.listen else "implicit_tls"
            raise ConfigError(
                f"submission.{which}",
                "submission needs TLS: set [tls] certificate and key (AUTH is only offered "
                "over TLS)",
            )
        self._domains(top.raw.get("domains", {}))
        mailboxes = self._mailboxes(top.raw.get("mailboxes", {}))
        aliases = self._address_map("aliases", self._alias_targets)
        forward = self._address_map("forward", _address)
        relocated = self._address_map("relocated", _address)
        self._check_overlaps(mailboxes, aliases, forward, relocated)
        self._check_references(mailboxes, aliases, forward, relocated)
        relay_networks = self._relay(top.raw.get("relay", {}))
        routes, route_tls = self._routes(top.raw.get("routes", {}))
        delivery = self._delivery(top.raw.get("delivery", {}))
        queue = self._queue(top.raw.get("queue", {}))
        return Config(
            hostname=hostname,
            data_dir=(self.base_dir / Path(data_dir).expanduser()).resolve(),
            smtp=smtp,
            submission=submission,
            tls=tls,
            local_domains=self.local_domains,
            auto_mailbox_domains=self.auto_mailbox,
            mailboxes=MappingProxyType(mailboxes),
            aliases=MappingProxyType(
                {key: tuple(str(a) for a in targets) for key, targets in aliases.items()}
            ),
            forward=MappingProxyType({key: str(a) for key, a in forward.items()}),
            relocated=MappingProxyType({key: str(a) for key, a in relocated.items()}),
            relay_networks=relay_networks,
            routes=MappingProxyType(routes),
            route_tls=MappingProxyType(route_tls),
            delivery=delivery,
            queue=queue,
            source=self.source,
        )

    def _smtp(self, raw: object) -> SmtpConfig:
        t = _Table(raw, "smtp", _SMTP_KEYS)
        listen = t.get("listen", self._listen, DEFAULT_LISTEN)
        return SmtpConfig(
            listen=listen,
            max_message_size=t.get("max_message_size", _positive_int, DEFAULT_MAX_MESSAGE_SIZE),
            max_recipients=t.get("max_recipients", _positive_int, DEFAULT_MAX_RECIPIENTS),
            idle_timeout=t.get("idle_timeout", _seconds, DEFAULT_IDLE_TIMEOUT),
            command_timeout=t.get("command_timeout", _seconds, DEFAULT_COMMAND_TIMEOUT),
            data_timeout=t.get("data_timeout", _seconds, DEFAULT_DATA_TIMEOUT),
            max_connections=t.get("max_connections", _positive_int, DEFAULT_MAX_CONNECTIONS),
            max_connections_per_ip=t.get(
                "max_connections_per_ip", _positive_int, DEFAULT_MAX_CONNECTIONS_PER_IP
            ),
            max_errors=t.get("max_errors", _positive_int, DEFAULT_MAX_ERRORS),
            max_line_length=t.get("max_line_length", _line_length, DEFAULT_MAX_LINE_LENGTH),
            greet_delay=t.get("greet_delay", _delay, DEFAULT_GREET_DELAY),
            max_received_headers=t.get(
                "max_received_headers", _positive_int, DEFAULT_MAX_RECEIVED_HEADERS
            ),
            auth_failure_delay=t.get("auth_failure_delay", _delay, DEFAULT_AUTH_FAILURE_DELAY),
            max_body_line_length=t.get("max_body_line_length", _body_line, DEFAULT_MAX_BODY_LINE),
            processes=t.get("processes", _processes, 1),
        )

    def _submission(self, raw: object, smtp: SmtpConfig) -> SubmissionConfig:
        t = _Table(raw, "submission", ("listen", "implicit_tls"))
        submission = SubmissionConfig(
            listen=t.get("listen", self._listen_or_none, ()),
            implicit_tls=t.get("implicit_tls", self._listen_or_none, ()),
        )
        seen: dict[tuple[str, int], str] = {}
        for name, items in (
            ("smtp.listen", smtp.listen),
            ("submission.listen", submission.listen),
            ("submission.implicit_tls", submission.implicit_tls),
        ):
            for item in items:
                host, port = split_host_port(item, allow_port_zero=True)
                endpoint = (host.lower(), port)
                if port and endpoint in seen and seen[endpoint] != name:
                    raise ConfigError(name, f"{_show(item)} is also in {seen[endpoint]}")
                seen[endpoint] = name
        return submission

    def _listen_or_none(self, value: object, key: str) -> tuple[str, ...]:
        return self._listen(value, key) if _list(value, key) else ()

    def _tls(self, raw: object) -> TlsConfig | None:
        if raw is _MISSING:
            return None
        t = _Table(raw, "tls", ("certificate", "key", "handshake_timeout"))
        for name in ("certificate", "key"):
            if name not in t.raw:
                raise ConfigError(t.key(name), "missing; [tls] needs both certificate and key")

        def readable(value: object, key: str) -> Path:
            return _readable_file(value, key, self.base_dir)

        certificate = t.get("certificate", readable, Path())
        key = t.get("key", readable, Path())
        _check_key_pair(certificate, key, t.key("certificate"), t.key("key"))
        return TlsConfig(
            certificate=certificate,
            key=key,
            handshake_timeout=t.get("handshake_timeout", _seconds, DEFAULT_TLS_HANDSHAKE_TIMEOUT),
        )

    @staticmethod
    def _listen(value: object, key: str) -> tuple[str, ...]:
        items = _strings(value, key, allow_empty=False)
        seen: set[tuple[str, int]] = set()
        for item in items:
            host, port = _host_port(item, key, allow_port_zero=True)
            endpoint = (host.lower(), port)
            if port and endpoint in seen:
                raise ConfigError(key, f"{_show(item)} is listed twice")
            seen.add(endpoint)
        return tuple(items)

    def _domains(self, raw: object) -> None:
        t = _Table(raw, "domains", ("local", "auto_mailbox"))
        self.local_domains = t.get("local", self._domain_set, frozenset(DEFAULT_LOCAL_DOMAINS))
        auto = t.get("auto_mailbox", self._domain_set, frozenset())
        if stray := sorted(auto - self.local_domains):
            raise ConfigError(
                t.key("auto_mailbox"), f"{_show(stray[0])} is not in domains.local; add it there"
            )
        self.auto_mailbox = auto

    @staticmethod
    def _domain_set(value: object, key: str) -> frozenset[str]:
        return frozenset(_domain(item, key) for item in _list(value, key))

    def _local_key(self, table: _Table, text: str) -> tuple[str, Address]:
        """Check a mapping key is an address in a local domain; return (dotted key, Address)."""
        key = table.key(text)
        address = _address(text, key)
        if address.domain_key not in self.local_domains:
            raise ConfigError(
                key, f"{_show(address.domain_key)} is not a local domain (see domains.local)"
            )
        return key, address

    def _address_map(
        self, section: str, convert: Callable[[Any, str], _T], *, names_directory: bool = False
    ) -> dict[str, _T]:
        """Read a table keyed by local address; ``names_directory`` keys become Maildirs."""
        t = _Table(self.top.raw.get(section, {}), section)
        result: dict[str, _T] = {}
        spelled: dict[str, str] = {}
        for text, value in t.raw.items():
            key, address = self._local_key(t, text)
            if names_directory and not is_safe_local_part(address.local_part):
                raise ConfigError(
                    key,
                    "a mailbox name must start with a letter or digit and use only letters, "
                    "digits and . _ + - (it names a directory)",
                )
            if address.key in result:
                raise ConfigError(
                    key,
                    f"same address as {_show(spelled[address.key])} "
                    "(addresses are compared without regard to case)",
                )
            result[address.key] = convert(value, key)
            spelled[address.key] = text
        return result

    @staticmethod
    def _alias_targets(value: object, key: str) -> tuple[Address, ...]:
        targets: dict[str, Address] = {}
        for item in _strings(value, key, allow_empty=False):
            address = _address(item, key)
            targets.setdefault(address.key, address)
        return tuple(targets.values())

    def _mailboxes(self, raw: object) -> dict[str, MailboxConfig]:
        def convert(value: object, key: str) -> MailboxConfig:
            entry = _Table(value, key, ("password", "send_as"))
            return MailboxConfig(
                password_hash=entry.get("password", _password_hash, None),
                send_as=entry.get("send_as", _send_as, ()),
            )

        return self._address_map("mailboxes", convert, names_directory=True)

    def _check_overlaps(self, *maps: Mapping[str, object]) -> None:
        names = ("mailboxes", "aliases", "forward", "relocated")
        owner: dict[str, str] = {}
        for name, mapping in zip(names, maps, strict=True):
            for key in mapping:
                if key in owner:
                    raise ConfigError(
                        _dotted(name, key),
                        f"also in {owner[key]}; an address is one of mailbox, alias, "
                        "forward or relocated",
                    )
                owner[key] = name

    def _check_references(
        self,
        mailboxes: Mapping[str, object],
        aliases: Mapping[str, tuple[Address, ...]],
        forward: Mapping[str, Address],
        relocated: Mapping[str, object],
    ) -> None:
        """Refuse a local target nobody receives for: a typo would otherwise eat mail."""
        for key in relocated:
            if key.partition("@")[0] == "postmaster":
                raise ConfigError(
                    _dotted("relocated", key), "postmaster must always accept mail (RFC 5321 4.5.1)"
                )

        def check(key: str, target: Address) -> None:
            domain = target.domain_key
            if domain not in self.local_domains:
                return
            if target.key in relocated:
                raise ConfigError(
                    key, f"{_show(str(target))} is relocated and receives no mail here"
                )
            known = (
                target.key in mailboxes
                or target.key in aliases
                or target.key in forward
                or target.local_part.lower() == "postmaster"
                or (domain in self.auto_mailbox and is_safe_local_part(target.local_part))
            )
            if not known:
                raise ConfigError(
                    key,
                    f"{_show(str(target))} is in a local domain but is no mailbox, alias "
                    "or forward here",
                )

        for alias, targets in aliases.items():
            for target in targets:
                check(_dotted("aliases", alias), target)
        for source, target in forward.items():
            check(_dotted("forward", source), target)

    def _relay(self, raw: object) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        t = _Table(raw, "relay", ("networks",))

        def networks(value: object, key: str) -> tuple[Any, ...]:
            return tuple(dict.fromkeys(_network(item, key) for item in _list(value, key)))

        return t.get("networks", networks, ())

    def _routes(self, raw: object) -> tuple[dict[str, str], dict[str, str]]:
        """``[routes]``: domain -> "host:port", or a table ``{ next_hop = "...", tls = "..." }``.

        The table form sets the TLS policy of one destination (``tls`` alone keeps
        MX lookup for it); returns (next hops, TLS modes) by domain.
        """
        t = _Table(raw, "routes")
        routes: dict[str, str] = {}
        tls: dict[str, str] = {}
        for text, value in t.raw.items():
            key = t.key(text)
            domain = "*" if text == "*" else _domain(text, key)
            if domain in routes or domain in tls:
                raise ConfigError(key, f"the route for {_show(domain)} is given twice")
            if isinstance(value, dict):
                entry = _Table(value, key, ("next_hop", "tls"))
                if not entry.raw:
                    raise ConfigError(key, "a route table needs next_hop, tls or both")
                hop = entry.get("next_hop", _string, "")
                mode = entry.get("tls", _tls_mode, "")
                if mode:
                    tls[domain] = mode
                if not hop:
                    continue
                value, key = hop, f"{key}.next_hop"
            # Without a port the next hop is reached on delivery.port.
            _host_port(value, key, default_port=DEFAULT_DELIVERY_PORT)
            routes[domain] = value
        return routes, tls

    def _delivery(self, raw: object) -> DeliveryConfig:
        t = _Table(
            raw,
            "delivery",
            (
                "port",
                "dns_servers",
                "concurrency",
                "local_concurrency",
                "destination_concurrency",
                "connect_timeout",
                "attempt_timeout",
                "tls",
                "ca_file",
            ),
        )

        def dns_servers(value: object, key: str) -> tuple[str, ...]:
            items = _strings(value, key)
            for item in items:
                host, _ = _host_port(item, key, default_port=DNS_PORT)
                if not _is_ip(host):
                    raise ConfigError(key, f"{_show(item)}: a DNS server must be an IP address")
            return tuple(items)

        return DeliveryConfig(
            port=t.get("port", _port, DEFAULT_DELIVERY_PORT),
            dns_servers=t.get("dns_servers", dns_servers, ()),
            concurrency=t.get("concurrency", _positive_int, DEFAULT_DELIVERY_CONCURRENCY),
            local_concurrency=t.get("local_concurrency", _positive_int, DEFAULT_LOCAL_CONCURRENCY),
            destination_concurrency=t.get(
                "destination_concurrency", _positive_int, DEFAULT_DESTINATION_CONCURRENCY
            ),
            connect_timeout=t.get("connect_timeout", _seconds, DEFAULT_CONNECT_TIMEOUT),
            attempt_timeout=t.get("attempt_timeout", _attempt_timeout, DEFAULT_ATTEMPT_TIMEOUT),
            tls=t.get("tls", _tls_mode, DEFAULT_DELIVERY_TLS),
            ca_file=t.get(
                "ca_file", lambda value, key: _readable_file(value, key, self.base_dir), None
            ),
        )

    def _queue(self, raw: object) -> QueueConfig:
        t = _Table(raw, "queue", ("retry", "max_age"))

        def retry(value: object, key: str) -> tuple[int, ...]:
            items = _list(value, key, allow_empty=False)
            return tuple(_positive_int(item, key) for item in items)

        return QueueConfig(
            retry=t.get("retry", retry, DEFAULT_RETRY),
            max_age=t.get("max_age", _positive_int, DEFAULT_MAX_AGE),
        )
