"""The configuration schema: every key of the TOML file, its default and its converter, once.

A field declared with ``setting(default, convert)`` is a key of its table: the
known keys of a table are its settings, in order, and load.py reads each one
with its converter or leaves its default.  Adding a key is one line here (and
its paragraph in docs/).  A key spelled differently from its field, or kept in
a sub-table of the file, says so with ``key=``: ``password`` for
``password_hash``, ``domains.local`` for ``local_domains``.  Rules that tie
several keys together are in checks.py.

Defaults of the session limits come from the protocol core (protocol/server.py),
which must work without any configuration and so cannot import this package;
every other default of a key is written here, once, and passed down from here
as an argument.  Other modules that need a default read it from the schema
(``DEFAULT_RETRY`` and the others at the end of this file).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, TypeVar, overload

from mailwright.config import values as v
from mailwright.config import values_auth as av
from mailwright.config.place import Convert, Place, show
from mailwright.model import Address
from mailwright.protocol.server import (
    DEFAULT_MAX_BODY_LINE,
    DEFAULT_MAX_ERRORS,
    DEFAULT_MAX_LINE,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_RECIPIENTS,
    DEFAULT_MAX_REFUSED_RECIPIENTS,
)
from mailwright.syntax import SMTP_PORT, split_host_port

T = TypeVar("T")

#: ``Config.source`` when no file was read.
EMBEDDED_SOURCE = "<embedded default>"


@dataclass(frozen=True, slots=True)
class Setting:
    """What load.py needs to read one field from TOML (kept in the field's metadata)."""

    convert: Convert[Any]
    #: The key in the file, dotted for a sub-table; None: the field's name.
    key: str | None = None
    #: For a field without a default: why it is needed, said when it is missing.
    required: str = ""


#: The metadata key under which a field's ``Setting`` is kept.
SETTING: Final = "mailwright.setting"


@overload
def setting(default: T, convert: Convert[T], *, key: str | None = None) -> T: ...
@overload
def setting(*, factory: Callable[[], T], convert: Convert[T], key: str | None = None) -> T: ...
def setting(
    default: Any = None,
    convert: Convert[Any] | None = None,
    *,
    factory: Callable[[], Any] | None = None,
    key: str | None = None,
) -> Any:
    """A field read from TOML with ``convert``; ``default`` (or ``factory()``) when absent."""
    if convert is None:
        raise TypeError("a setting needs a converter")
    metadata = {SETTING: Setting(convert, key)}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def required(convert: Convert[Any], why: str) -> Mapping[str, Setting]:
    """Metadata of a field without default: ``field(metadata=required(convert, why))``."""
    return {SETTING: Setting(convert, required=why)}


def section(cls: type[T]) -> T:
    """A sub-table read into ``cls``; all its defaults when the file leaves it out."""
    return setting(cls(), v.table(cls))


def _frozen_map() -> Mapping[str, Any]:
    return MappingProxyType({})


# ---------------------------------------------------------------- [smtp] and listeners


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """``[smtp]``: the listener for mail from other servers, and the limits of every session."""

    listen: tuple[str, ...] = setting(("127.0.0.1:2525",), v.listen_addresses)
    max_message_size: int = setting(DEFAULT_MAX_MESSAGE_SIZE, v.positive_int)
    max_recipients: int = setting(DEFAULT_MAX_RECIPIENTS, v.positive_int)
    idle_timeout: float = setting(300.0, v.seconds)
    command_timeout: float = setting(300.0, v.seconds)
    data_timeout: float = setting(600.0, v.seconds)
    max_connections: int = setting(1000, v.positive_int)
    max_connections_per_ip: int = setting(50, v.positive_int)
    max_refused_recipients: int = setting(DEFAULT_MAX_REFUSED_RECIPIENTS, v.positive_int)
    max_errors: int = setting(DEFAULT_MAX_ERRORS, v.positive_int)
    max_line_length: int = setting(DEFAULT_MAX_LINE, v.line_length)
    greet_delay: float = setting(0.0, v.delay)
    #: Loop detection (RFC 5321 6.3): more Received: fields than this and the message is refused.
    max_received_headers: int = setting(30, v.positive_int)
    max_body_line_length: int = setting(DEFAULT_MAX_BODY_LINE, v.body_line_length)
    #: Seconds of delay per recent failure of the same account, up to
    #: AUTH_FAILURE_DELAY_MAX_STEPS failures.
    auth_failure_delay: float = setting(1.0, v.delay)
    #: Failed AUTHs from one client (an IPv4 address, an IPv6 /64) before it is locked out.
    auth_max_failures: int = setting(5, v.positive_int)
    #: Seconds a locked-out client gets 454 to AUTH; failures are remembered as long.
    auth_lockout: float = setting(300.0, v.seconds)
    #: Server processes sharing the listening ports (SO_REUSEPORT); see server/processes.py.
    processes: int = setting(1, v.processes)
    #: Seconds a message body being received at SIGTERM may take to finish (and delivery
    #: attempts under way, at the same time); 0 ends everything at once (app.py).
    shutdown_timeout: float = setting(30.0, v.delay)

    @property
    def listen_endpoints(self) -> tuple[tuple[str, int], ...]:
        """``listen`` split into (host, port) pairs, IPv6 hosts without brackets.

        Port 0 asks the system for a free port (tests); the listener reports the real one.
        """
        return endpoints(self.listen)

    def auth_delay(self, failures: int) -> float:
        """Seconds an AUTH waits when its account has ``failures`` recent failures."""
        return self.auth_failure_delay * min(failures, AUTH_FAILURE_DELAY_MAX_STEPS)


def endpoints(items: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    """Listening addresses as (host, port) pairs; they were checked when read."""
    return tuple(split_host_port(item, allow_port_zero=True) for item in items)


@dataclass(frozen=True, slots=True)
class SubmissionConfig:
    """Listeners for mail submission by users (RFC 6409): AUTH is required on both kinds.

    ``listen`` speaks plain text first and needs STARTTLS before AUTH (port 587);
    ``implicit_tls`` starts TLS with the first byte (RFC 8314, port 465).
    """

    listen: tuple[str, ...] = setting((), v.optional_listen_addresses)
    implicit_tls: tuple[str, ...] = setting((), v.optional_listen_addresses)

    @property
    def listen_endpoints(self) -> tuple[tuple[str, int], ...]:
        return endpoints(self.listen)

    @property
    def implicit_tls_endpoints(self) -> tuple[tuple[str, int], ...]:
        return endpoints(self.implicit_tls)


_TLS_PAIR = "[tls] needs both certificate and key"


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """The server's certificate chain and private key (PEM files, absolute paths)."""

    certificate: Path = field(metadata=required(v.readable_file, _TLS_PAIR))
    key: Path = field(metadata=required(v.readable_file, _TLS_PAIR))
    #: Short: a handshake that has not finished holds a connection slot for nothing.
    handshake_timeout: float = setting(10.0, v.seconds)


# ---------------------------------------------------------------- addresses


@dataclass(frozen=True, slots=True)
class MailboxConfig:
    """A local mailbox; ``password_hash`` is set for users who may authenticate.

    ``send_as`` lists the other envelope senders the user may use once
    authenticated: address keys (``list@example.test``) and whole domains
    (``@example.org``).  Its own address is always allowed.
    """

    password_hash: str | None = setting(None, v.password_hash, key="password")
    send_as: tuple[str, ...] = setting((), v.send_as)


# ---------------------------------------------------------------- [delivery] and [queue]


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """``[delivery]``: how mail leaves for other servers."""

    port: int = setting(SMTP_PORT, v.port)
    #: Deprecated: the old name of ``[dns] servers`` (checks.py refuses both at once).
    dns_servers: tuple[str, ...] = setting((), v.dns_servers)
    #: Messages in delivery at once (Postfix's default_process_limit is 100 too).  A
    #: relay is bound by round trips and commits, not CPU: with 20, relayed mail left
    #: at 60 % of the rate it came in on the benchmark; with 100, as fast as it came.
    concurrency: int = setting(100, v.positive_int)
    #: Maildir writes at once: making files is disk- and kernel-bound, and more
    #: writers in parallel finish a backlog no sooner (docs/performance.md) while
    #: taking CPU and fsyncs from the sessions receiving mail.
    local_concurrency: int = setting(4, v.positive_int)
    #: Connections at once to one destination (its first next hop: the route's host
    #: or the primary MX), as Postfix's default_destination_concurrency_limit.  Big
    #: providers answer more connections from one client with 421, which would defer
    #: the excess for a whole retry interval; messages over the limit wait for a
    #: connection instead and reuse it.
    destination_concurrency: int = setting(20, v.positive_int)
    connect_timeout: float = setting(30.0, v.seconds)
    #: The longest one delivery attempt of a message may take, from its claim to its
    #: results: waiting for a connection or a Maildir writer, DNS, the SMTP session.  A
    #: destination that never answers then holds a delivery slot this long at most, and
    #: an attempt ends before the queue's claim on it lapses and could hand it out again.
    attempt_timeout: float = setting(720.0, v.attempt_timeout)
    tls: str = setting("opportunistic", v.tls_mode)
    #: PEM CAs trusted by tls = "verify"; None: the system's.
    ca_file: Path | None = setting(None, v.readable_file)
    #: Where the Maildirs of local mailboxes live; None: data_dir/mailboxes.  Nodes of
    #: one PostgreSQL queue point this at storage they all share (docs/cluster.md).
    mailboxes_dir: Path | None = setting(None, v.path)


@dataclass(frozen=True, slots=True)
class SpaceReserve:
    """``[queue] min_free_space``: free space new mail may not take.

    Results, bounces and the queue's own bookkeeping need room to be written;
    a disk filled by incoming mail would stop delivery itself.  The reserve is
    a number of octets, a percentage of the file system, or (the default) the
    smaller of both, so it stays sensible on a tiny disk and on a huge one.
    A field that is None does not apply; 0 octets turns the reserve off.
    """

    octets: int | None = 104_857_600
    percent: float | None = 5.0

    def required(self, total: int) -> int:
        """Octets to keep free on a file system of ``total`` octets."""
        limits = [] if self.octets is None else [self.octets]
        if self.percent is not None:
            limits.append(int(total * self.percent / 100))
        return min(limits)

    @property
    def off(self) -> bool:
        """True when nothing is kept back (0 octets or 0 %)."""
        return self.octets == 0 or self.percent == 0

    def __str__(self) -> str:
        parts = [] if self.octets is None else [f"{self.octets} octets"]
        if self.percent is not None:
            parts.append(f"{self.percent:g}% of the file system")
        return " or ".join(parts) + (", whichever is smaller" if len(parts) > 1 else "")


_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def space_reserve(value: object, at: Place) -> SpaceReserve:
    """Octets (an integer, 0 or more) or a percentage below 100 written ``"5%"``."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return SpaceReserve(octets=value, percent=None)
    if isinstance(value, str) and (match := _PERCENT.match(value)):
        percent = float(match.group(1))
        if percent < 100:
            return SpaceReserve(octets=None, percent=percent)
    raise at.fail(
        "expected a number of octets (104857600) or a percentage of the file system below "
        f'100 ("5%"), got {show(value)}'
    )


#: The queue stores: the embedded SQLite file, or a PostgreSQL database several nodes share.
QUEUE_BACKENDS = ("sqlite", "postgresql")


def queue_backend(value: object, at: Place) -> str:
    if value not in QUEUE_BACKENDS:
        raise at.fail(f"expected one of {', '.join(QUEUE_BACKENDS)}, got {show(value)}")
    return str(value)


def postgresql_url(value: object, at: Place) -> str:
    """A ``postgresql://`` URL that libpq can parse, without a password in it.

    The password comes from ``password_file`` or PGPASSWORD: a URL is shown in
    logs and in ``check-config``, a password must never be.
    """
    from psycopg.conninfo import conninfo_to_dict  # only a PostgreSQL queue needs psycopg

    text = v.string(value, at)
    if not text.startswith(("postgresql://", "postgres://")):
        raise at.fail(f"expected a postgresql://user@host:port/database URL, got {show(value)}")
    try:
        parts = conninfo_to_dict(text)
    except Exception as exc:  # psycopg.ProgrammingError: libpq's own words
        raise at.fail(f"not a valid PostgreSQL URL: {str(exc).strip()}") from None
    if parts.get("password"):
        raise at.fail("must not hold the password: put it in password_file or PGPASSWORD")
    # libpq reads the port only when it connects: a typo there would pass for a database
    # that is down (exit 75, retried for ever) rather than a mistake in the file.
    for port in str(parts.get("port") or "5432").split(","):
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise at.fail(f"not a valid PostgreSQL URL: port {port!r} is not a number 1-65535")
    return text


def node_name(value: object, at: Place) -> str:
    """A node's name in leases and logs: printable, no spaces, at most 64 characters."""
    text = v.string(value, at)
    if len(text) > 64 or not text.isprintable() or any(c.isspace() for c in text):
        raise at.fail(f"expected a name of at most 64 printable characters, got {show(value)}")
    return text


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """``[queue]``: where the queue is, how long and how often delivery is tried, when a
    delay is reported, and the space kept free."""

    retry: tuple[int, ...] = setting((60, 300, 900, 3600, 14400), v.retry_intervals)
    max_age: int = setting(432_000, v.positive_int)
    #: Seconds after arrival when a recipient still undelivered gets one "delayed" report
    #: (RFC 3464, when its NOTIFY asks for DELAY or is not given); 0: never.
    delay_warning: float = setting(14_400.0, v.delay)
    min_free_space: SpaceReserve = setting(SpaceReserve(), space_reserve)
    backend: str = setting("sqlite", queue_backend)
    #: The PostgreSQL queue (backend = "postgresql"): ``postgresql://user@host:5432/db``.
    url: str | None = setting(None, postgresql_url)
    #: A file holding the database password (else libpq's PGPASSWORD, or none).
    password_file: Path | None = setting(None, v.readable_file)
    #: This node's name in leases and logs; None: the host name.
    node: str | None = setting(None, node_name)
    #: PostgreSQL: how long a claim protects a delivery from other nodes.  The node renews
    #: it while the delivery runs, so this is how soon a dead node's work is taken over.
    lease: float = setting(60.0, v.seconds)
    #: The SQLite queue: a message for one local mailbox of at least this many octets is
    #: stored as its finished Maildir copy and linked into the Maildir (write once,
    #: docs/queue-and-delivery.md); a smaller one is kept in the database and copied.
    #: 0: every such message.
    write_once_from: int = setting(65_536, v.non_negative_int)


# ---------------------------------------------------------------- [dns]


@dataclass(frozen=True, slots=True)
class DnsConfig:
    """``[dns]``: the resolver every lookup uses (mailauth/dns.py): MX, A/AAAA, TXT."""

    #: ``IP[:port]`` of the servers to ask; empty: the system resolver (/etc/resolv.conf).
    servers: tuple[str, ...] = setting((), v.dns_servers)
    #: Seconds one whole lookup may take, every server and retry included; then it is a
    #: temporary error (a delivery retried later, an SPF temperror), never a verdict.
    timeout: float = setting(5.0, v.seconds)


# ---------------------------------------------------------------- [dkim]

_DKIM_KEY = "each [[dkim.keys]] entry needs domain, selector and key"


@dataclass(frozen=True, slots=True)
class DkimKeyConfig:
    """One ``[[dkim.keys]]`` entry: mail from ``domain`` (or a subdomain) is signed with ``key``.

    ``key`` is a private key file (``mailwright dkim keygen``), relative to the
    configuration's folder; checks.py refuses one that cannot sign.
    """

    domain: str = field(metadata=required(v.domain, _DKIM_KEY))
    selector: str = field(metadata=required(av.dkim_selector, _DKIM_KEY))
    key: Path = field(metadata=required(v.config_relative_file, _DKIM_KEY))


@dataclass(frozen=True, slots=True)
class DkimConfig:
    """``[dkim]``: the keys that sign mail leaving for other hosts (docs/authentication.md)."""

    keys: tuple[DkimKeyConfig, ...] = setting((), v.table_array(DkimKeyConfig))


# ---------------------------------------------------------------- [srs]


@dataclass(frozen=True, slots=True)
class SrsConfig:
    """``[srs]``: the Sender Rewriting Scheme of forwarded mail (mailauth/srs.py).

    SRS is on when a secret is set, in the file (``secret``) or in a file of its
    own (``secret_file``, relative to the configuration; read at load time).
    ``domain`` None means ``hostname``.
    """

    secret: str | None = setting(None, av.srs_secret)
    secret_from_file: str | None = setting(None, av.srs_secret_file, key="secret_file")
    domain: str | None = setting(None, v.domain)
    previous_secrets: tuple[str, ...] = setting((), av.srs_secrets)
    max_age_days: int = setting(21, v.positive_int)

    def __repr__(self) -> str:  # never print a secret
        return f"SrsConfig(domain={self.domain!r}, max_age_days={self.max_age_days})"


# ---------------------------------------------------------------- [verify]


@dataclass(frozen=True, slots=True)
class VerifyConfig:
    """``[verify]``: verdicts on mail from clients neither authenticated nor in
    ``[relay] networks`` (mailauth/verify.py).  ``"off"`` by default, so the
    embedded default never asks the DNS; ``"record"`` adds the verdict to the
    stored message's Authentication-Results header and accepts the mail;
    ``spf = "enforce"`` refuses MAIL on an SPF fail as well (RFC 7372 3.2);
    ``dmarc = "enforce"`` applies the From domain's policy (RFC 7489 6.7)."""

    spf: str = setting("off", av.spf_mode)
    dkim: str = setting("off", av.verify_mode)
    #: DMARC (RFC 7489) needs both verdicts: "record" here checks SPF and DKIM too, and
    #: reports them, whatever ``spf`` and ``dkim`` say (mailauth/dmarc.py).
    dmarc: str = setting("off", av.dmarc_mode)
    #: The ARC chain (RFC 8617 5.2), recorded as ``arc=`` (mailauth/arc.py).
    arc: str = setting("off", av.verify_mode)

    @property
    def any(self) -> bool:
        return self.spf != "off" or self.dkim != "off" or self.dmarc != "off" or self.arc != "off"

    @property
    def spf_on(self) -> bool:
        return self.spf != "off" or self.dmarc_on

    @property
    def spf_enforced(self) -> bool:
        return self.spf == "enforce"

    @property
    def dkim_on(self) -> bool:
        return self.dkim == "record" or self.dmarc_on

    @property
    def dmarc_on(self) -> bool:
        return self.dmarc != "off"

    @property
    def dmarc_enforced(self) -> bool:
        return self.dmarc == "enforce"


# ---------------------------------------------------------------- [arc]


@dataclass(frozen=True, slots=True)
class ArcConfig:
    """``[arc]``: sealing forwarded mail (RFC 8617 5.1, mailauth/arc.py).

    Off by default: ARC is being moved to historic at the IETF, and a seal only
    helps at receivers that still trust the sealer.  ``seal = true`` needs SRS
    on and a ``[[dkim.keys]]`` entry for the SRS domain (checks.py).
    """

    seal: bool = setting(False, v.boolean)


# ---------------------------------------------------------------- [http]


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """``[http]``: the admin listener (metrics, JSON API, web page; docs/operations.md).

    Off while ``listen`` is unset.  ``token_file`` holds the bearer token that the
    API and the page require; checks.py refuses a listener beyond loopback without one.
    """

    listen: str | None = setting(None, v.http_listen_address)
    token_file: Path | None = setting(None, v.readable_file)


# ---------------------------------------------------------------- the whole file


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated configuration.

    Address keys in the mappings are normalised with ``Address.key`` (local part
    and domain lower-cased) so lookups are case-insensitive; the target
    addresses keep the operator's spelling.  An address is at most one of
    mailbox, alias, forward or relocated (``parse_config`` refuses overlaps),
    and ``data_dir`` is absolute once parsed.  Fields are read in this order,
    so ``domains.local`` is known before the tables keyed by local address.
    """

    hostname: str = setting("localhost", v.domain)
    data_dir: Path = setting(Path("mailwright-data"), v.path)
    smtp: SmtpConfig = section(SmtpConfig)
    submission: SubmissionConfig = section(SubmissionConfig)
    tls: TlsConfig | None = setting(None, v.table(TlsConfig))
    local_domains: frozenset[str] = setting(
        frozenset({"localhost"}), v.domain_set, key="domains.local"
    )
    auto_mailbox_domains: frozenset[str] = setting(
        frozenset[str](), v.local_domain_set, key="domains.auto_mailbox"
    )
    mailboxes: Mapping[str, MailboxConfig] = setting(
        factory=_frozen_map, convert=v.local_map(v.table(MailboxConfig), names_directory=True)
    )
    aliases: Mapping[str, tuple[Address, ...]] = setting(
        factory=_frozen_map, convert=v.local_map(v.alias_targets)
    )
    forward: Mapping[str, Address] = setting(factory=_frozen_map, convert=v.local_map(v.address))
    relocated: Mapping[str, Address] = setting(factory=_frozen_map, convert=v.local_map(v.address))
    relay_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = setting(
        (), v.networks, key="relay.networks"
    )
    #: Both read ``[routes]``: next hops by domain, and the ``tls`` of its table entries.
    routes: Mapping[str, str] = setting(factory=_frozen_map, convert=v.next_hops)
    route_tls: Mapping[str, str] = setting(
        factory=_frozen_map, convert=v.route_tls_modes, key="routes"
    )
    delivery: DeliveryConfig = section(DeliveryConfig)
    queue: QueueConfig = section(QueueConfig)
    dns: DnsConfig = section(DnsConfig)
    dkim: DkimConfig = section(DkimConfig)
    srs: SrsConfig = section(SrsConfig)
    verify: VerifyConfig = section(VerifyConfig)
    arc: ArcConfig = section(ArcConfig)
    http: HttpConfig = section(HttpConfig)
    source: str = EMBEDDED_SOURCE

    @property
    def mailboxes_dir(self) -> Path:
        """The folder of the local Maildirs: ``[delivery] mailboxes_dir`` or data_dir/mailboxes."""
        return self.delivery.mailboxes_dir or self.data_dir / "mailboxes"


# ---------------------------------------------------------------- limits that are no keys

#: How many aliases deep an expansion may go before it is cut.
DEFAULT_MAX_ALIAS_DEPTH = 10
#: The AUTH delay (``smtp.auth_failure_delay`` per failure) stops growing after this many.
AUTH_FAILURE_DELAY_MAX_STEPS = 5
#: Entries kept in each AUTH failure table (per client, per client and account, per
#: account); the oldest is dropped beyond it, so a flood of names costs bounded memory.
AUTH_TRACKED_ENTRIES = 10_000
#: scrypt needs 32 MiB and a tenth of a second per check: bound how many run at once.
MAX_CONCURRENT_PASSWORD_CHECKS = 4
#: A message to be DKIM-signed waits for its end before it goes to the spool (the signature
#: goes on top): up to this many octets in memory, the rest in an unnamed file in data_dir.
DKIM_HELD_IN_MEMORY = 256 * 1024
#: DKIM-Signatures checked in one inbound message; the others are not looked at (RFC 6376
#: 6.1: a verifier MAY limit how many it checks: a message of 1000 signatures costs 5).
MAX_VERIFIED_SIGNATURES = 5
#: ARC sets in one inbound message: RFC 8617 4.2.1 limits the instance to 50; a chain
#: with more is ``fail`` without a lookup (5.2 step 1).
MAX_ARC_SETS = 50
#: Distinct keys looked up for one ARC chain (the newest ARC-Message-Signature's and
#: each ARC-Seal's); a chain that needs more is ``fail``.  As MAX_VERIFIED_SIGNATURES:
#: an honest chain has a handful of hops, a hostile one must not cost 50 lookups.
MAX_ARC_KEYS = 10
#: RFC 7208 4.6.4: an SPF check may be given at least 20 s in all, every lookup included.
SPF_TOTAL_SECONDS = 20.0
#: A From: field longer than this (unfolded) is not parsed for DMARC: permerror.  RFC 5322
#: allows long folded fields, but no honest author list needs this much, and the address
#: parser's time grows with the field.
DMARC_MAX_FROM_OCTETS = 8 * 1024

# ---------------------------------------------------------------- defaults named elsewhere
# Read from the declarations above, never written a second time.

DEFAULTS: Final = Config()
DEFAULT_DELIVERY_PORT: Final = DEFAULTS.delivery.port
DEFAULT_DESTINATION_CONCURRENCY: Final = DEFAULTS.delivery.destination_concurrency
DEFAULT_AUTH_MAX_FAILURES: Final = DEFAULTS.smtp.auth_max_failures
DEFAULT_AUTH_LOCKOUT: Final = DEFAULTS.smtp.auth_lockout
DEFAULT_RETRY: Final = DEFAULTS.queue.retry
