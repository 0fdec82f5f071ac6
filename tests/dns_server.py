"""A DNS server on loopback for the MX path of delivery tests (dnslib), never the system resolver."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from dnslib import QTYPE, RCODE, RR, DNSLabel
from dnslib.server import BaseResolver, DNSLogger, DNSServer


class _ZoneResolver(BaseResolver):
    """Answers from a zone text: NODATA for a known name without the asked type, else NXDOMAIN.

    dnslib's own ZoneResolver answers NXDOMAIN in both cases, which would hide
    the difference RFC 5321 5.1 depends on (no MX records -> use the A record).
    Names listed in ``servfail`` answer SERVFAIL (a temporary DNS failure).
    """

    def __init__(self, zone: str, servfail: set[str]) -> None:
        self.records = RR.fromZone(zone)
        self.servfail = {DNSLabel(name) for name in servfail}
        self.questions: list[tuple[str, str]] = []  # (name, type) as asked, in order

    def resolve(self, request, handler):  # type: ignore[no-untyped-def]
        reply = request.reply()
        qname = request.q.qname
        self.questions.append((str(qname).rstrip(".").lower(), QTYPE[request.q.qtype]))
        if qname in self.servfail:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        known = False
        for rr in self.records:
            if rr.rname == qname:
                known = True
                if rr.rtype == request.q.qtype:
                    reply.add_answer(rr)
        if not known:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


class LoopbackDns:
    """A UDP DNS server on 127.0.0.1 and a free port; ``address`` is "127.0.0.1:PORT"."""

    def __init__(self, zone: str, *, servfail: set[str] | None = None) -> None:
        quiet = DNSLogger(log="-recv,-send,-request,-reply,-truncated,-error,-data", prefix=False)
        self.zone = _ZoneResolver(zone, servfail or set())
        self.server = DNSServer(self.zone, address="127.0.0.1", port=0, logger=quiet)
        self.server.start_thread()
        self.port = self.server.server.server_address[1]
        self.address = f"127.0.0.1:{self.port}"

    def asked(self, name: str, rdtype: str) -> int:
        """How many times the question (``name``, ``rdtype``) reached this server."""
        return self.zone.questions.count((name.rstrip(".").lower(), rdtype))

    def stop(self) -> None:
        self.server.stop()


@contextmanager
def silent_dns() -> Iterator[str]:
    """A DNS server that never answers (a UDP socket on loopback nobody reads): its
    "127.0.0.1:PORT", for lookups that must time out."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


__all__ = ["QTYPE", "LoopbackDns", "silent_dns"]
