"""Where mail for a domain goes: a static route from config, else MX lookup (RFC 5321 5.1).

- A static route (``[routes]``, exact domain, address literal or ``"*"``) wins over DNS.
- MX records are tried in preference order, equal preferences in random order.
- No MX records (NODATA): the domain's own A/AAAA records are the implicit MX.
- A null MX (``0 .``, RFC 7505) means the domain accepts no mail: a permanent failure.
- A domain that does not exist is a permanent failure; a DNS timeout or SERVFAIL
  is temporary.

Every lookup goes through the server's one resolver (mailauth/dns.py, ``[dns]``).
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Sequence
from dataclasses import dataclass

from mailwright.config import Config
from mailwright.errors import DeliveryError
from mailwright.mailauth.dns import DnsError, NoData, NoSuchName, PermanentDnsError, Resolver
from mailwright.protocol.reply import Reply
from mailwright.syntax import address_literal_key, is_address_literal, split_host_port


@dataclass(frozen=True, slots=True)
class NextHop:
    """One address to try, in order: ``host`` is the name for TLS and logs."""

    host: str
    address: str
    port: int
    preference: int


def _temporary(text: str) -> DeliveryError:
    return DeliveryError(Reply(451, "4.4.3", text), temporary=True)


def _permanent(code: int, enhanced: str, text: str) -> DeliveryError:
    return DeliveryError(Reply(code, enhanced, text), temporary=False)


class RouteResolver:
    """Turns a destination domain into the ordered list of next hops."""

    def __init__(
        self, config: Config, resolver: Resolver, *, rng: random.Random | None = None
    ) -> None:
        self.config = config
        self.port = config.delivery.port
        self.routes = {key.lower(): value for key, value in config.routes.items()}
        self.rng = rng or random.Random()
        self.resolver = resolver

    async def next_hops(self, domain: str) -> list[NextHop]:
        """Raises DeliveryError (temporary or permanent) when there is nowhere to go."""
        domain = domain.lower().rstrip(".")
        key = address_literal_key(domain) if is_address_literal(domain) else domain
        route = self.routes.get(key) or self.routes.get("*")
        if route is not None:
            host, port = split_host_port(route, default_port=self.port)
            return [NextHop(host, address, port, 0) for address in await self._addresses(host)]
        if domain.startswith("[") and domain.endswith("]"):
            literal = domain[1:-1]
            if literal.lower().startswith("ipv6:"):
                literal = literal[5:]
            return [NextHop(domain, literal, self.port, 0)]
        exchanges = await self._mx(domain)
        hops: list[NextHop] = []
        for preference, host in exchanges:
            try:
                addresses = await self._addresses(host)
            except DeliveryError:
                continue  # an MX host without addresses: try the next one
            hops.extend(NextHop(host, a, self.port, preference) for a in addresses)
        if not hops:
            raise _temporary(f"No address found for any mail exchanger of {domain}")
        return hops

    async def _mx(self, domain: str) -> list[tuple[int, str]]:
        try:
            records = await self.resolver.mx(domain)
        except NoSuchName:
            raise _permanent(550, "5.1.2", f"Domain {domain} does not exist") from None
        except NoData:
            return [(0, domain)]  # RFC 5321 5.1: the implicit MX
        except DnsError as exc:  # temporary: a timeout, SERVFAIL
            raise _temporary(f"DNS lookup of MX for {domain} failed: {exc.reason}") from None
        if any(host in ("", ".") for _, host in records):
            # RFC 7505 3: a null MX says the domain accepts no mail.
            raise _permanent(556, "5.1.10", f"Domain {domain} accepts no mail (null MX)")
        return _order(records, self.rng)

    async def _addresses(self, host: str) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        try:
            return await self.resolver.addresses(host)
        except PermanentDnsError:
            # Temporary all the same: the name of a next hop is the operator's or an MX
            # target, and either may be fixed before the message expires.
            raise _temporary(f"No address for host {host}") from None
        except DnsError as exc:
            raise _temporary(f"DNS lookup of {host} failed: {exc.reason}") from None


def _order(records: Sequence[tuple[int, str]], rng: random.Random) -> list[tuple[int, str]]:
    """By preference; equal preferences shuffled to spread load (RFC 5321 5.1)."""
    shuffled = list(records)
    rng.shuffle(shuffled)
    return sorted(shuffled, key=lambda r: r[0])
