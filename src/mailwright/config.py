"""Configuration: TOML (tomllib) -> a frozen, validated Config.

Every default is named here, once.  Every limit the server enforces comes from
this file and is passed down as an argument, never written as a literal where it
is used.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

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
DEFAULT_MAX_RECEIVED_HEADERS = 30  # loop detection, RFC 5321 6.3
DEFAULT_LOCAL_DOMAINS = ("localhost",)
DEFAULT_DELIVERY_PORT = 25
DEFAULT_DELIVERY_CONCURRENCY = 20
DEFAULT_CONNECT_TIMEOUT = 30.0
DEFAULT_DELIVERY_TLS = "opportunistic"
DEFAULT_RETRY = (60, 300, 900, 3600, 14400)
DEFAULT_MAX_AGE = 432_000

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


@dataclass(frozen=True, slots=True)
class MailboxConfig:
    """A local mailbox; ``password_hash`` is set for users who may authenticate."""

    password_hash: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    port: int = DEFAULT_DELIVERY_PORT
    dns_servers: tuple[str, ...] = ()
    concurrency: int = DEFAULT_DELIVERY_CONCURRENCY
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    tls: str = DEFAULT_DELIVERY_TLS


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
    operator's spelling.
    """

    hostname: str = DEFAULT_HOSTNAME
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    smtp: SmtpConfig = SmtpConfig()
    local_domains: frozenset[str] = frozenset(DEFAULT_LOCAL_DOMAINS)
    auto_mailbox_domains: frozenset[str] = frozenset()
    mailboxes: Mapping[str, MailboxConfig] = field(default_factory=_frozen_map)
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=_frozen_map)
    forward: Mapping[str, str] = field(default_factory=_frozen_map)
    relocated: Mapping[str, str] = field(default_factory=_frozen_map)
    relay_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    routes: Mapping[str, str] = field(default_factory=_frozen_map)
    delivery: DeliveryConfig = DeliveryConfig()
    queue: QueueConfig = QueueConfig()
    source: str = "<embedded default>"
