"""One name per client for per-client limits: an IPv4 address, or an IPv6 /64.

Counting per IPv6 address is no limit at all: one customer line is routinely
given a /64 (RFC 6177 recommends at least a /64 per site, usually a /56 or
/48), so an attacker has 2**64 addresses to rotate through.  Every per-client
table in mailwright (connection limits, AUTH failures) is keyed with
``client_key`` so that one /64 counts as one client.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

#: Prefix length of the IPv6 network that counts as one client.
IPV6_CLIENT_PREFIX = 64


@lru_cache(maxsize=4096)  # asked at every connect and close; parsing costs microseconds
def client_key(ip: str) -> str:
    """The key of the client at ``ip``: IPv4 as it is, IPv6 as its /64 network.

    An IPv4 peer seen through an IPv6 socket (``::ffff:192.0.2.1``) is the
    IPv4 client it is.  A peer that is not an IP address (a Unix socket, "?")
    is keyed by its text, so it is still one client, never an error.
    """
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])  # drop a zone: fe80::1%eth0
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        network = ipaddress.IPv6Network((address, IPV6_CLIENT_PREFIX), strict=False)
        return str(network)
    return str(address)
