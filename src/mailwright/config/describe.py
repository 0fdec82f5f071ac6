"""The operator's summary of a Config: printed by ``serve`` at start and by ``check-config``."""

from __future__ import annotations

from pathlib import Path

from mailwright.config.checks import deprecations
from mailwright.config.schema import Config, SpaceReserve


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
        f"  TLS             {_tls(config)}",
        f"  hostname        {config.hostname}",
        f"  data directory  {Path(config.data_dir).absolute()}",
        f"  free space      {_reserve(config.queue.min_free_space)}",
        f"  queue           {_queue(config)}",
        f"  local domains   {domains}",
        f"  addresses       {counts}",
        f"  relaying        {relaying}",
    ]
    if config.delivery.mailboxes_dir is not None:
        lines.append(f"  mailboxes       {config.mailboxes_dir}")
    if config.routes:
        routes = ", ".join(f"{dom} -> {hop}" for dom, hop in sorted(config.routes.items()))
        lines.append(f"  routes          {routes}")
    lines.append(f"  DNS             {_dns(config)}")
    lines += [f"  deprecated      {line}" for line in deprecations(config)]
    if config.dkim.keys:
        keys = ", ".join(f"{key.domain} (s={key.selector})" for key in config.dkim.keys)
        lines.append(f"  DKIM signing    {keys}")
    srs = config.srs
    if srs.secret or srs.secret_from_file:  # never the secret itself
        domain = srs.domain or config.hostname
        lines.append(f"  SRS             forwarded mail sent as SRS0=...@{domain}")
        if config.arc.seal:
            lines.append(f"  ARC sealing     forwarded mail sealed by {domain}")
    if config.http.listen is not None:
        guard = "token required for /api/" if config.http.token_file else "no token (loopback)"
        lines.append(f"  admin HTTP      {config.http.listen}: /metrics, /api/, the page; {guard}")
    return "\n".join(lines)


def _tls(config: Config) -> str:
    if config.tls is None:
        return "off (no [tls] certificate: no STARTTLS, no AUTH)"
    users = sum(1 for box in config.mailboxes.values() if box.password_hash)
    failures = config.smtp.auth_max_failures
    return (
        f"certificate {config.tls.certificate}; STARTTLS offered, "
        f"AUTH after TLS for {_plural(users, 'user')} "
        f"({_plural(failures, 'failure')} {'locks' if failures == 1 else 'lock'} a client out "
        f"for {config.smtp.auth_lockout:g} s)"
    )


def _dns(config: Config) -> str:
    servers = config.dns.servers or config.delivery.dns_servers
    asked = ", ".join(servers) if servers else "the system resolver"
    return f"{asked}, {config.dns.timeout:g} s per lookup"


def _reserve(reserve: SpaceReserve) -> str:
    if reserve.off:
        return "no reserve (min_free_space = 0): new mail may fill the disk"
    return f"new mail refused below {reserve}"


def _plural(count: int, noun: str) -> str:
    if count == 1:
        return f"1 {noun}"
    return f"{count} {noun}es" if noun.endswith(("s", "x")) else f"{count} {noun}s"


def _queue(config: Config) -> str:
    """The queue's backend; a PostgreSQL URL never holds a password (schema.postgresql_url)."""
    queue = config.queue
    if queue.backend != "postgresql":
        return "SQLite, in the data directory"
    import socket  # here: importing mailwright loads no socket (tests/protocol)

    node = queue.node or f"{socket.gethostname()} (the host name)"
    return f"PostgreSQL {queue.url}, node {node}, lease {queue.lease:g} s"
