"""The key under which per-client limits count a connecting address.

An IPv4 client is one address.  An IPv6 client is its /64: a site is given at
least a /64 (RFC 6177) and a single host can pick any address in it (RFC 8981
temporary addresses), so counting single IPv6 addresses would let one machine
open 2**64 "clients".  An IPv4-mapped IPv6 address counts as its IPv4 address.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

IPV6_CLIENT_PREFIX = 64


@lru_cache(maxsize=4096)
def client_key(host: str) -> str:
    """``192.0.2.7`` -> ``192.0.2.7``; ``2001:db8::1`` -> ``2001:db8::/64``; others unchanged."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host  # not an address (a Unix socket, "?"): count it as given
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        network = ipaddress.IPv6Network((address, IPV6_CLIENT_PREFIX), strict=False)
        return str(network)
    return str(address)
