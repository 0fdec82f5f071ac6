"""dkimpy's DNS lookups answered by the test's loopback DNS server, never the system resolver."""

from __future__ import annotations

from collections.abc import Callable

import dns.message
import dns.query
import dns.rdatatype

from tests.dns_server import LoopbackDns


def dkim_dnsfunc(server: LoopbackDns) -> Callable[..., bytes]:
    """A ``dnsfunc`` for ``dkim.verify``: the TXT record of ``name`` from ``server``, or b"".

    The loopback server never truncates, so UDP carries a 2048-bit key's record whole.
    """

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        query = dns.message.make_query(name.decode("ascii"), dns.rdatatype.TXT)
        answer = dns.query.udp(query, "127.0.0.1", port=server.port, timeout=timeout)
        return b"".join(
            b"".join(rdata.strings)
            for rrset in answer.answer
            if rrset.rdtype == dns.rdatatype.TXT
            for rdata in rrset
        )

    return lookup
