"""Configuration: TOML (tomllib) -> a frozen, validated Config.

- schema.py: the dataclasses; each key declared once, with its default and converter
- values.py: the converters, one TOML value to one checked value
- place.py: where a value is read (its dotted key), and how a problem with it is named
- load.py: the file, and the walker that reads any schema dataclass from TOML
- checks.py: the rules that tie several keys together
- describe.py: the summary printed at start and by ``check-config``

The grammar of addresses, domains and ``host:port`` is mailwright.syntax's;
the names other modules import from here are re-exported below.
"""

from mailwright.config.describe import describe
from mailwright.config.load import EMBEDDED_DEFAULT_TOML, load_config, parse_config
from mailwright.config.schema import (
    AUTH_FAILURE_DELAY_MAX_STEPS,
    AUTH_TRACKED_ENTRIES,
    DEFAULT_AUTH_LOCKOUT,
    DEFAULT_AUTH_MAX_FAILURES,
    DEFAULT_DELIVERY_PORT,
    DEFAULT_DESTINATION_CONCURRENCY,
    DEFAULT_MAX_ALIAS_DEPTH,
    DEFAULT_RETRY,
    EMBEDDED_SOURCE,
    MAX_CONCURRENT_PASSWORD_CHECKS,
    Config,
    DeliveryConfig,
    DnsConfig,
    MailboxConfig,
    QueueConfig,
    SmtpConfig,
    SpaceReserve,
    SrsConfig,
    SubmissionConfig,
    TlsConfig,
)
from mailwright.config.values import DELIVERY_TLS_MODES
from mailwright.protocol.server import DEFAULT_MAX_MESSAGE_SIZE
from mailwright.syntax import DNS_PORT, is_domain_name, is_safe_local_part, split_host_port

__all__ = [
    "AUTH_FAILURE_DELAY_MAX_STEPS",
    "AUTH_TRACKED_ENTRIES",
    "DEFAULT_AUTH_LOCKOUT",
    "DEFAULT_AUTH_MAX_FAILURES",
    "DEFAULT_DELIVERY_PORT",
    "DEFAULT_DESTINATION_CONCURRENCY",
    "DEFAULT_MAX_ALIAS_DEPTH",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_RETRY",
    "DELIVERY_TLS_MODES",
    "DNS_PORT",
    "EMBEDDED_DEFAULT_TOML",
    "EMBEDDED_SOURCE",
    "MAX_CONCURRENT_PASSWORD_CHECKS",
    "Config",
    "DeliveryConfig",
    "DnsConfig",
    "MailboxConfig",
    "QueueConfig",
    "SmtpConfig",
    "SpaceReserve",
    "SrsConfig",
    "SubmissionConfig",
    "TlsConfig",
    "describe",
    "is_domain_name",
    "is_safe_local_part",
    "load_config",
    "parse_config",
    "split_host_port",
]
