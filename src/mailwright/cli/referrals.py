"""Where a 551 referral leads, and following it: ``send --follow-referrals``.

``send --follow-referrals`` sends to the address a 551 names (RFC 5321 3.4)
by the same route the delivery worker would take: a static route when one is
given (``--route``), else the domain's MX records (``--dns-server`` to ask a
particular resolver).  Both are options so that tests, and people checking a
split setup, can point referrals somewhere other than the public DNS.  Each
domain gets one transaction, as a delivery would make it; what became of
each original recipient is kept in an ``Outcome``.
"""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TextIO

from mailwright.cli.report import codes, explanation, suggested_address
from mailwright.client import ConnectError, SendResult, TransactionResult
from mailwright.config import (
    DEFAULT_DELIVERY_PORT,
    DNS_PORT,
    Config,
    DeliveryConfig,
    DnsConfig,
    is_domain_name,
    split_host_port,
)
from mailwright.errors import DeliveryError
from mailwright.model import Address


@dataclass(frozen=True, slots=True)
class Referral:
    """A recipient refused with 551 and the address the server suggested instead."""

    original: Address
    suggested: Address


@dataclass(frozen=True, slots=True)
class Target:
    """A server to send to, and the name its certificate must be valid for."""

    host: str
    port: int
    tls_name: str


#: One session's result, or the failure that ended it (already reported).
Sent = tuple[SendResult | None, Exception | None]
SendTo = Callable[[Target, list[Address]], Awaitable[Sent]]


@dataclass(slots=True)
class Outcome:
    """What became of each recipient given on the command line, by ``Address.key``."""

    lines: dict[str, str] = field(default_factory=dict)
    accepted: set[str] = field(default_factory=set)

    def refer(self, referral: Referral, status: str, *, accepted: bool = False) -> None:
        key = referral.original.key
        if accepted:
            self.accepted.add(key)
            self.lines[key] = f"accepted: {referral.original}, at <{referral.suggested}>"
        else:
            moved = f"moved to <{referral.suggested}>"
            self.lines[key] = f"refused: {referral.original} ({moved}; {status})"


def add_referral_options(parser: argparse.ArgumentParser) -> None:
    """``--follow-referrals`` and where it looks for the next hops: routes, DNS, port."""
    parser.add_argument(
        "--follow-referrals",
        action="store_true",
        help="send to the address a 551 reply suggests, at its domain's mail exchanger",
    )
    for flag, dest, kind, metavar, text in (
        ("--route", "routes", route, "DOMAIN=HOST[:PORT]", "send mail for DOMAIN (or *) to HOST"
         " instead of asking DNS"),
        ("--dns-server", "dns_servers", dns_server, "IP[:PORT]", "the DNS server to ask for MX"
         " records (default: the system's)"),
    ):  # fmt: skip
        parser.add_argument(
            flag,
            dest=dest,
            action="append",
            default=[],
            type=kind,
            metavar=metavar,
            help=f"for referrals: {text}",
        )
    parser.add_argument(
        "--mx-port",
        type=port_number,
        default=DEFAULT_DELIVERY_PORT,
        metavar="PORT",
        help="for referrals: the port of mail exchangers found in DNS"
        f" (default: {DEFAULT_DELIVERY_PORT})",
    )


def route(text: str) -> tuple[str, str]:
    """``DOMAIN=HOST[:PORT]`` (or ``*=HOST[:PORT]`` for every domain), as in ``[routes]``."""
    domain, sep, hop = text.partition("=")
    domain = domain.strip().lower().rstrip(".")
    if not sep or not hop:
        raise argparse.ArgumentTypeError(f"{text!r}: expected DOMAIN=HOST[:PORT]")
    if domain != "*" and not is_domain_name(domain):
        raise argparse.ArgumentTypeError(f"{text!r}: {domain!r} is not a domain name")
    try:
        split_host_port(hop, default_port=DEFAULT_DELIVERY_PORT)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    return domain, hop


def dns_server(text: str) -> str:
    """``IP[:PORT]`` of a DNS server to ask for MX records (port 53 by default)."""
    try:
        host, _ = split_host_port(text, default_port=DNS_PORT)
        ipaddress.ip_address(host)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    return text


def port_number(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a port from 1 to 65535")
    return int(text)


def resolver_config(
    routes: Sequence[tuple[str, str]], dns_servers: Sequence[str], mx_port: int
) -> Config:
    """The part of a Config that ``delivery.routes.RouteResolver`` reads, from the options.

    Each value was already checked by the argument types above, with the
    rules ``config.parse_config`` applies to ``[routes]``, ``[delivery]`` and ``[dns]``.
    """
    table: dict[str, str] = {}
    for domain, hop in routes:
        table.setdefault(domain, hop)  # the first --route for a domain wins
    return Config(
        routes=MappingProxyType(table),
        delivery=DeliveryConfig(port=mx_port),
        dns=DnsConfig(servers=tuple(dns_servers)),
    )


def group_by_domain(referrals: Sequence[Referral]) -> dict[str, list[Referral]]:
    """One transaction per destination domain, as a delivery would make them."""
    groups: dict[str, list[Referral]] = {}
    for referral in referrals:
        groups.setdefault(referral.suggested.domain_key, []).append(referral)
    return groups


def referrals_of(txn: TransactionResult) -> list[Referral]:
    """Each recipient refused with a 551 that names an address to try."""
    found = []
    for rcpt in txn.refused:
        if rcpt.reply is not None and rcpt.reply.code == 551:
            address = suggested_address(rcpt.reply, rcpt.address)
            if address is not None:
                found.append(Referral(rcpt.address, address))
    return found


async def follow(
    out: TextIO,
    config: Config,
    lang: str,
    referrals: list[Referral],
    outcome: Outcome,
    send_to: SendTo,
) -> None:
    """Send to each suggested address at its domain's next hop; update ``outcome``."""
    from mailwright.delivery.routes import RouteResolver  # dnspython, only when needed
    from mailwright.mailauth.dns import Resolver

    resolver = RouteResolver(config, Resolver.from_config(config))
    for domain, group in group_by_domain(referrals).items():
        print(file=out)
        for referral in group:
            print(f"referral: {referral.original} -> {referral.suggested}", file=out)
        try:
            hops = await resolver.next_hops(domain)
        except DeliveryError as exc:
            print(f"error: no next hop for {domain}: {exc.reply}", file=out)
            print(explanation(exc.reply, lang), file=out)
            for referral in group:
                outcome.refer(referral, f"no next hop for {domain}: {codes(exc.reply)}")
            continue
        recipients = unique([r.suggested for r in group])
        result = None
        for hop in hops:
            result, failure = await send_to(Target(hop.address, hop.port, hop.host), recipients)
            if not isinstance(failure, ConnectError):
                break  # only a connection that could not be made is worth another hop
        for referral in group:
            accepted, status = _referral_status(result, referral.suggested)
            outcome.refer(referral, status, accepted=accepted)


def _referral_status(result: SendResult | None, address: Address) -> tuple[bool, str]:
    """Whether the suggested address took the message, and what to say about it."""
    if result is None:
        return False, "its server could not be reached"
    rcpt = next((r for r in result.transaction.recipients if r.address == address), None)
    if rcpt is None or rcpt.reply is None:
        return False, "not tried"
    if not rcpt.accepted:
        return False, f"refused there too ({codes(rcpt.reply)})"
    if not result.delivered:
        return False, "the message was not accepted there"
    return True, "accepted there"


def unique(addresses: Sequence[Address]) -> list[Address]:
    """Each address once (compared as the server would, ``Address.key``), in the order given."""
    first: dict[str, Address] = {}
    for address in addresses:
        first.setdefault(address.key, address)
    return list(first.values())
