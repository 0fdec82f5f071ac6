"""The one DNS resolver of the server: MX and A/AAAA for delivery; TXT for SPF, DKIM, DMARC.

Every lookup goes through ``Resolver``, built once from ``[dns]`` in app.py and
passed down, so ``[dns] servers`` and ``[dns] timeout`` apply to all of them.

A lookup has three outcomes, and callers must keep them apart:

- an answer: the records, at most ``MAX_RECORDS`` of them;
- ``PermanentDnsError``: the name does not exist (``NoSuchName``, NXDOMAIN) or
  has no records of the type asked (``NoData``, NODATA);
- ``TemporaryDnsError``: a timeout, SERVFAIL, no server answering, a network
  error.  This is never a pass and never a permanent refusal: SPF's
  ``temperror`` (RFC 7208 2.6.6), a DKIM key that could not be fetched
  (RFC 6376 6.1.2: TEMPFAIL), a delivery retried later.

DNS answers come from the network and are untrusted: what is kept of one is
bounded (``MAX_RECORDS``, ``MAX_TXT_OCTETS``); dnspython bounds the message
itself (one UDP datagram or one TCP message, at most 65535 octets).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdata
import dns.resolver

from mailwright.syntax import DNS_PORT, split_host_port

if TYPE_CHECKING:
    from mailwright.config import Config

#: Records kept from one answer; the rest are ignored.  Legitimate MX, A, AAAA
#: and TXT sets are a handful; a hostile zone may hold thousands.
MAX_RECORDS = 50
#: Octets of one TXT record once its character-strings are joined.  A DKIM
#: record for a 4096-bit RSA key is under 800; a longer record is dropped,
#: never cut, since a cut key or policy would read as a different one.
MAX_TXT_OCTETS = 4096


class DnsError(Exception):
    """A lookup gave no records; ``name`` and ``rdtype`` say which lookup."""

    def __init__(self, name: str, rdtype: str, reason: str) -> None:
        super().__init__(f"DNS lookup of {rdtype} for {name}: {reason}")
        self.name = name
        self.rdtype = rdtype
        self.reason = reason


class TemporaryDnsError(DnsError):
    """Timeout, SERVFAIL, no server answering: try again later, never conclude from it."""


class PermanentDnsError(DnsError):
    """The DNS answered: there is nothing of this type at this name."""


class NoSuchName(PermanentDnsError):
    """NXDOMAIN: the name does not exist (RFC 8020: nor anything below it)."""


class NoData(PermanentDnsError):
    """The name exists but has no records of the type asked (NODATA, RFC 2308 2.2)."""


class Resolver:
    """dnspython's async resolver with our servers, our timeout and our three outcomes.

    ``servers``: ``IP[:port]`` items (checked by config); empty means the
    system resolver (/etc/resolv.conf).  ``timeout``: seconds for one whole
    lookup, every server and retry included (dnspython's ``lifetime``).
    """

    def __init__(self, servers: Sequence[str], timeout: float) -> None:
        self.servers = tuple(servers)
        self.timeout = timeout
        self._resolver = dns.asyncresolver.Resolver(configure=not self.servers)
        if self.servers:
            nameservers: list[str | dns.nameserver.Nameserver] = []
            for item in self.servers:
                host, port = split_host_port(item, default_port=DNS_PORT)
                nameservers.append(dns.nameserver.Do53Nameserver(host, port))
            self._resolver.nameservers = nameservers
        self._resolver.lifetime = timeout
        # One server's share of the lifetime; dnspython moves on to the next after it.
        self._resolver.timeout = min(self._resolver.timeout, timeout)

    @classmethod
    def from_config(cls, config: Config) -> Resolver:
        """``[dns] servers``, or the deprecated ``[delivery] dns_servers`` (checks.py
        refuses both at once)."""
        return cls(config.dns.servers or config.delivery.dns_servers, config.dns.timeout)

    async def records(self, name: str, rdtype: str) -> list[dns.rdata.Rdata]:
        """The records of ``rdtype`` at ``name`` (at most MAX_RECORDS), or a DnsError."""
        try:
            answer = await self._resolver.resolve(name, rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            raise NoSuchName(name, rdtype, "no such domain") from None
        except dns.resolver.NoAnswer:
            raise NoData(name, rdtype, "no records of this type") from None
        except (dns.name.NameTooLong, dns.name.EmptyLabel, dns.name.LabelTooLong) as exc:
            # A name DNS cannot even carry exists nowhere.
            raise NoSuchName(name, rdtype, f"not a valid DNS name ({exc})") from None
        except dns.exception.Timeout:
            raise TemporaryDnsError(name, rdtype, f"no answer within {self.timeout:g} s") from None
        except dns.resolver.NoNameservers as exc:
            raise TemporaryDnsError(name, rdtype, f"no server answered ({exc})") from None
        except (dns.exception.DNSException, OSError) as exc:
            raise TemporaryDnsError(name, rdtype, f"failed ({exc})") from None
        return list(answer)[:MAX_RECORDS]

    async def mx(self, domain: str) -> list[tuple[int, str]]:
        """(preference, exchange) pairs as published, unsorted; exchange "." is a null MX."""
        records = await self.records(domain, "MX")
        return [
            (r.preference, r.exchange.to_text(omit_final_dot=True))  # type: ignore[attr-defined]
            for r in records
        ]

    async def addresses(self, host: str) -> list[str]:
        """The A then AAAA addresses of ``host``.

        An answer for either type is an answer.  With none: a temporary error
        if either lookup failed temporarily (the other type may be there),
        NoSuchName if the name does not exist, else NoData.
        """
        found: list[str] = []
        failures: list[DnsError] = []
        for rdtype in ("A", "AAAA"):
            try:
                found.extend(r.address for r in await self.records(host, rdtype))  # type: ignore[attr-defined]
            except DnsError as exc:
                failures.append(exc)
        if found:
            return found[:MAX_RECORDS]
        for kind in (TemporaryDnsError, NoSuchName):
            for failure in failures:
                if isinstance(failure, kind):
                    raise failure
        raise NoData(host, "A/AAAA", "no address records")

    async def txt(self, name: str) -> list[str]:
        """Each TXT record at ``name`` as one string: its character-strings joined.

        RFC 7208 3.3 and RFC 6376 3.6.2.2: a record split into several strings
        (each at most 255 octets) is read as their concatenation, with nothing
        between.  Octets are read as Latin-1, so any byte survives for the
        caller's own syntax check.  Records over MAX_TXT_OCTETS are dropped.
        """
        joined = []
        for record in await self.records(name, "TXT"):
            strings: Sequence[bytes] = record.strings  # type: ignore[attr-defined]
            if sum(len(s) for s in strings) <= MAX_TXT_OCTETS:
                joined.append(b"".join(strings).decode("latin-1"))
        return joined


class SharedLookups(Resolver):
    """The resolver's answers for one message, each name and type asked once.

    The checks of one message ask overlapping questions: a DKIM key that also
    signs its ARC-Message-Signature, the same organizational domain's DMARC
    record for two checks, several signatures with one selector.  This asks
    the network once for each (name, type) and gives every later asker the
    same answer or the same DnsError; concurrent askers share the one lookup
    in flight.  It lives as long as the message's checks (a handful of
    entries, never more than the checks can ask: their own limits bound it),
    so no TTL applies: nothing is cached across messages.
    """

    def __init__(self, resolver: Resolver) -> None:  # Resolver.__init__ would build a new one
        # The same servers, timeout and dnspython resolver: only the answers are added.
        self.servers = resolver.servers
        self.timeout = resolver.timeout
        self._resolver = resolver._resolver
        self._answers: dict[tuple[str, str], asyncio.Future[list[dns.rdata.Rdata]]] = {}
        self.asked = 0  # lookups that went to the network: a test can prove the sharing

    async def records(self, name: str, rdtype: str) -> list[dns.rdata.Rdata]:
        key = (name.rstrip(".").lower(), rdtype.upper())
        answer = self._answers.get(key)
        if answer is None:
            self.asked += 1
            answer = asyncio.ensure_future(super().records(name, rdtype))
            self._answers[key] = answer
        # shield: one asker cancelled (its check gave up) does not cancel the others'.
        return list(await asyncio.shield(answer))
