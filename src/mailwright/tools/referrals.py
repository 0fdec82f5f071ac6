"""Where a 551 referral leads: the suggested address's domain, resolved like a delivery.

``send --follow-referrals`` sends to the address a 551 names (RFC 5321 3.4)
by the same route the delivery worker would take: a static route when one is
given (``--route``), else the domain's MX records (``--dns-server`` to ask a
particular resolver).  Both are options so that tests, and people checking a
split setup, can point referrals somewhere other than the public DNS.
"""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType

from mailwright.config import (
    DEFAULT_DELIVERY_PORT,
    DNS_PORT,
    Config,
    DeliveryConfig,
    is_domain_name,
    split_host_port,
)
from mailwright.model import Address


@dataclass(frozen=True, slots=True)
class Referral:
    """A recipient refused with 551 and the address the server suggested instead."""

    original: Address
    suggested: Address


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
    rules ``config.parse_config`` applies to ``[routes]`` and ``[delivery]``.
    """
    table: dict[str, str] = {}
    for domain, hop in routes:
        table.setdefault(domain, hop)  # the first --route for a domain wins
    return Config(
        routes=MappingProxyType(table),
        delivery=DeliveryConfig(port=mx_port, dns_servers=tuple(dns_servers)),
    )


def group_by_domain(referrals: Sequence[Referral]) -> dict[str, list[Referral]]:
    """One transaction per destination domain, as a delivery would make them."""
    groups: dict[str, list[Referral]] = {}
    for referral in referrals:
        groups.setdefault(referral.suggested.domain_key, []).append(referral)
    return groups
