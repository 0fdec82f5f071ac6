"""Cross-checks: the rules that tie several keys together, run on the Config load.py read.

Each key was already checked on its own (values.py); these catch a file whose
keys are each fine but do not fit together: one port in two listeners,
submission without TLS, a key file that is not the certificate's, an address
in two roles, an alias to a local address nobody receives for.  Each raises
ConfigError naming the key to change, in the order below.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from mailwright.config.place import dotted, show
from mailwright.config.schema import Config, TlsConfig
from mailwright.errors import ConfigError
from mailwright.model import Address
from mailwright.syntax import is_safe_local_part, split_host_port

#: The tables keyed by local address; an address may be in one of them only.
_ADDRESS_TABLES = ("mailboxes", "aliases", "forward", "relocated")


def check(config: Config) -> None:
    """Raise ConfigError for the first rule ``config`` breaks."""
    listeners_apart(config)
    if config.tls is not None:
        key_pair(config.tls)
    submission_has_tls(config)
    one_role_per_address(config)
    targets_exist(config)
    dkim_keys(config)
    arc_seal_has_a_key(config)
    one_name_for_dns_servers(config)
    http_token_beyond_loopback(config)
    queue_backend_has_its_keys(config)


def deprecations(config: Config) -> list[str]:
    """One line per deprecated key the file sets, naming its replacement.

    Logged as a warning at start-up (app.py) and printed by ``check-config``
    (describe.py), so an operator learns of it before the old name goes away.
    """
    lines = []
    if config.delivery.dns_servers:
        lines.append("[delivery] dns_servers is deprecated: use [dns] servers instead")
    return lines


def http_token_beyond_loopback(config: Config) -> None:
    """The admin API can delete mail: beyond loopback it needs ``[http] token_file``."""
    if config.http.listen is None or config.http.token_file is not None:
        return
    host, _port = split_host_port(config.http.listen, allow_port_zero=True)
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: where it points may change
        loopback = host.lower() == "localhost"
    if not loopback:
        raise ConfigError(
            "http.listen", f"{show(config.http.listen)} is not loopback: set http.token_file"
        )


def queue_backend_has_its_keys(config: Config) -> None:
    """A PostgreSQL queue needs its URL; the SQLite queue would silently ignore one."""
    queue = config.queue
    if queue.backend == "postgresql" and queue.url is None:
        raise ConfigError(
            "queue.url", 'backend = "postgresql" needs url = "postgresql://user@host:5432/db"'
        )
    if queue.backend == "sqlite" and queue.url is not None:
        raise ConfigError("queue.url", 'only for backend = "postgresql"; the queue is SQLite')


def listeners_apart(config: Config) -> None:
    """A port listened on by two kinds of listener would take mail for one as the other."""
    seen: dict[tuple[str, int], str] = {}
    for name, items in (
        ("smtp.listen", config.smtp.listen),
        ("submission.listen", config.submission.listen),
        ("submission.implicit_tls", config.submission.implicit_tls),
    ):
        for item in items:
            host, port = split_host_port(item, allow_port_zero=True)
            endpoint = (host.lower(), port)
            if port and endpoint in seen and seen[endpoint] != name:
                raise ConfigError(name, f"{show(item)} is also in {seen[endpoint]}")
            seen[endpoint] = name


def key_pair(tls: TlsConfig) -> None:
    """Load the pair once, so a wrong file stops start-up (and check-config) with a clear line."""
    import ssl  # here, not at the top: importing mailwright must not load ssl for protocol/

    certificate, key = tls.certificate, tls.key
    try:
        text = certificate.read_text(encoding="ascii", errors="replace")
    except OSError as exc:  # pragma: no cover - just checked readable
        raise ConfigError("tls.certificate", f"cannot read {certificate} ({exc})") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ConfigError("tls.certificate", f"no PEM certificate in {certificate}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certificate, key)
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        raise ConfigError(
            "tls.key", f"{key} is not the private key of {certificate} ({reason})"
        ) from None


def submission_has_tls(config: Config) -> None:
    """AUTH is only offered over TLS (RFC 4954 4), and submission requires AUTH."""
    submission = config.submission
    if config.tls is None and (submission.listen or submission.implicit_tls):
        which = "listen" if submission.listen else "implicit_tls"
        raise ConfigError(
            f"submission.{which}",
            "submission needs TLS: set [tls] certificate and key (AUTH is only offered over TLS)",
        )


def one_role_per_address(config: Config) -> None:
    """An address is one of mailbox, alias, forward or relocated, never two."""
    owner: dict[str, str] = {}
    maps: tuple[Mapping[str, object], ...] = (
        config.mailboxes,
        config.aliases,
        config.forward,
        config.relocated,
    )
    for name, mapping in zip(_ADDRESS_TABLES, maps, strict=True):
        for key in mapping:
            if key in owner:
                raise ConfigError(
                    dotted(name, key),
                    f"also in {owner[key]}; an address is one of mailbox, alias, "
                    "forward or relocated",
                )
            owner[key] = name


def targets_exist(config: Config) -> None:
    """Refuse a local target nobody receives for: a typo would otherwise eat mail."""
    for key in config.relocated:
        if key.partition("@")[0] == "postmaster":
            raise ConfigError(
                dotted("relocated", key), "postmaster must always accept mail (RFC 5321 4.5.1)"
            )
    for alias, targets in config.aliases.items():
        for target in targets:
            _receives_here(config, dotted("aliases", alias), target)
    for source, target in config.forward.items():
        _receives_here(config, dotted("forward", source), target)


def one_name_for_dns_servers(config: Config) -> None:
    """The old and the new name together: which one was meant is anybody's guess."""
    if config.delivery.dns_servers and config.dns.servers:
        raise ConfigError(
            "delivery.dns_servers",
            "is the deprecated name of dns.servers, and both are set: keep only [dns] servers",
        )


def _receives_here(config: Config, key: str, target: Address) -> None:
    """A target in a local domain must be somebody here, and not a relocated address."""
    domain = target.domain_key
    if domain not in config.local_domains:
        return
    if target.key in config.relocated:
        raise ConfigError(key, f"{show(str(target))} is relocated and receives no mail here")
    known = (
        target.key in config.mailboxes
        or target.key in config.aliases
        or target.key in config.forward
        or target.local_part.lower() == "postmaster"
        or (domain in config.auto_mailbox_domains and is_safe_local_part(target.local_part))
    )
    if not known:
        raise ConfigError(
            key,
            f"{show(str(target))} is in a local domain but is no mailbox, alias or forward here",
        )


def dkim_keys(config: Config) -> None:
    """Load every DKIM key once: a key that cannot sign stops start-up, not the first message.

    Also one key per domain: two would leave which one signs to chance.
    """
    from mailwright.mailauth.dkim import DkimKeyError, load_signing_key

    seen: dict[str, int] = {}
    for index, entry in enumerate(config.dkim.keys):
        at = f"dkim.keys[{index}]"
        if entry.domain in seen:
            raise ConfigError(
                f"{at}.domain",
                f"{show(entry.domain)} already has a key in dkim.keys[{seen[entry.domain]}]",
            )
        seen[entry.domain] = index
        try:
            load_signing_key(entry.domain, entry.selector, entry.key)
        except DkimKeyError as exc:
            raise ConfigError(f"{at}.key", f"DKIM key for {entry.domain}: {exc}") from None


def arc_seal_has_a_key(config: Config) -> None:
    """``[arc] seal = true`` seals with the SRS domain's DKIM key: SRS must be on, that
    domain must have a key, and the key must be RSA (dkimpy's ``arc_sign`` makes
    rsa-sha256 seals only)."""
    if not config.arc.seal:
        return
    from mailwright.mailauth.dkim import load_signing_key

    if not (config.srs.secret or config.srs.secret_from_file):
        raise ConfigError(
            "arc.seal", "needs SRS: set [srs] secret (forwarded mail is sealed by the SRS domain)"
        )
    domain = (config.srs.domain or config.hostname).rstrip(".").lower()
    entry = next((e for e in config.dkim.keys if e.domain == domain), None)
    if entry is None:
        raise ConfigError(
            "arc.seal", f"needs a [[dkim.keys]] entry for the SRS domain {show(domain)}"
        )
    # dkim_keys() loaded it already: it loads.
    if load_signing_key(entry.domain, entry.selector, entry.key).algorithm != "rsa":
        raise ConfigError(
            "arc.seal",
            f"the key of the SRS domain {show(domain)} is Ed25519; ARC seals are made with"
            " RSA keys only (dkimpy): give that domain an RSA key",
        )
