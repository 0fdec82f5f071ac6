"""DMARC verdicts on inbound mail (RFC 7489), from the SPF and DKIM verdicts of verify.py.

DMARC asks one question: did SPF or DKIM pass for a domain *aligned* with the
domain of the RFC5322.From address, the one a reader sees?  The From domain's
owner publishes a policy at ``_dmarc.<domain>`` (or at ``_dmarc.<organizational
domain>``, RFC 7489 6.6.3) saying what to do when neither did.

The organizational domain comes from the Public Suffix List shipped inside
the ``publicsuffixlist`` package (its ``public_suffix_list.dat``): nothing is
downloaded at run time (only that package's separate ``update`` script fetches
a new list, and we never call it).  Loading the list takes a moment, so it is
loaded once, in a worker thread, never on the event loop.

Lookups go through the one Resolver and are awaited on the event loop.  A
lookup that fails temporarily makes the verdict ``temperror``, never ``pass``
or ``fail`` (RFC 7489 6.6.3 leaves it to us; a retry may give a real answer).
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.utils import getaddresses

from publicsuffixlist import PublicSuffixList

from mailwright.config.schema import DMARC_MAX_FROM_OCTETS
from mailwright.mailauth.dns import PermanentDnsError, Resolver, TemporaryDnsError
from mailwright.mailauth.verify import DkimVerdict, SpfVerdict

#: RFC 7489 6.3: the p= and sp= values; anything else makes the record unusable.
POLICIES = frozenset({"none", "quarantine", "reject"})
_FROM_FIELD = re.compile(rb"^from[ \t]*:", re.IGNORECASE)
_DOMAIN = re.compile(r"^[a-z0-9_]([a-z0-9_.-]{0,252})$")


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    """The tags of a DMARC record that a verdict needs (RFC 7489 6.3).

    ``pct`` is not kept: it is treated as 100, as DMARCbis (which drops it) says.
    """

    policy: str  # p=
    subdomain_policy: str | None = None  # sp=
    strict_dkim: bool = False  # adkim=s
    strict_spf: bool = False  # aspf=s


@dataclass(frozen=True, slots=True)
class DmarcVerdict:
    """pass, fail, none, temperror or permerror for the From domain; ``policy`` is the one
    that applies to it (``sp=`` for a subdomain that found the organizational record)."""

    result: str
    from_domain: str | None
    policy: str | None = None
    reason: str = ""

    @property
    def disposition(self) -> str:
        """What the domain's owner asks a receiver to do with this message (RFC 7489 6.6.4,
        6.7): its policy when DMARC failed, else "none".  ``temperror`` is never a reason
        to refuse or quarantine: a retry may pass."""
        if self.result == "fail" and self.policy in ("quarantine", "reject"):
            return self.policy
        return "none"


def parse_record(text: str) -> DmarcRecord | None:
    """A DMARC record, or None when ``text`` is not a usable one (RFC 7489 6.3, 6.4).

    ``v=DMARC1`` must come first (6.6.3 step 2).  Unknown tags are ignored (6.3);
    a record without a valid ``p=`` has no policy and is ignored (6.6.3 step 6
    lets a record with a valid ``rua`` stand as p=none; we send no reports, so
    such a record means nothing to us).  Unusable ``sp``, ``adkim`` or ``aspf``
    values fall back to their defaults (6.3: discard syntax errors in favour of
    the defaults).  The first of repeated tags counts.
    """
    parts = [part.strip() for part in text.split(";")]
    if not parts or parts[0].replace(" ", "").replace("\t", "") != "v=DMARC1":
        return None
    tags: dict[str, str] = {}
    for part in parts[1:]:
        name, equals, value = part.partition("=")
        if equals:
            tags.setdefault(name.strip().lower(), value.strip().lower())
    policy = tags.get("p")
    if policy not in POLICIES:
        return None
    sub = tags.get("sp")
    return DmarcRecord(
        policy=policy,
        subdomain_policy=sub if sub in POLICIES else None,
        strict_dkim=tags.get("adkim") == "s",
        strict_spf=tags.get("aspf") == "s",
    )


@functools.cache
def _psl() -> PublicSuffixList:
    """The list shipped in the package (no ``source``: its own ``public_suffix_list.dat``)."""
    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    """RFC 7489 3.2: the public suffix plus one label; the domain itself when it is a
    public suffix or shorter.  A TLD not on the list counts as a public suffix."""
    domain = domain.rstrip(".").lower()
    return _psl().privatesuffix(domain) or domain


def aligned(domain: str | None, from_domain: str, strict: bool) -> bool:
    """RFC 7489 3.1: strict alignment is the same name; relaxed, the same organizational
    domain."""
    if not domain:
        return False
    domain = domain.rstrip(".").lower()
    if strict:
        return domain == from_domain
    return organizational_domain(domain) == organizational_domain(from_domain)


def from_domain(message: bytes) -> tuple[str | None, str]:
    """The RFC5322.From domain of ``message``, or (None, why not).

    RFC 5322 3.6 allows exactly one From: field.  RFC 7489 6.6.1 leaves messages
    without one, or with several, to the receiver ("MAY reject or ignore"), and
    lets one field with several addresses be checked when they share a domain.
    We give ``permerror`` for all of them: the message cannot be evaluated as it
    stands, and saying so is more useful to a reader than ``none``, which would
    mean the domain has no policy.
    """
    fields = _from_fields(message)
    if len(fields) != 1:
        return None, f"{len(fields)} From: fields"
    if len(fields[0]) > DMARC_MAX_FROM_OCTETS:
        return None, "From: field too long"
    addresses = getaddresses([fields[0]])
    domains = {address.rpartition("@")[2].strip().rstrip(".").lower() for _, address in addresses}
    domains.discard("")
    if len(domains) != 1:
        return None, "no single From: domain"
    domain = domains.pop()
    if not _DOMAIN.match(domain) or "." not in domain:
        return None, "From: domain is not a domain name"
    return domain, ""


def _from_fields(message: bytes) -> list[str]:
    """The unfolded From: field values of the header section (up to the first empty line)."""
    end = message.find(b"\r\n\r\n")
    head = message if end == -1 else message[: end + 2]
    fields: list[bytearray] = []
    current: bytearray | None = None
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current += line
            continue
        current = None
        if _FROM_FIELD.match(line):
            current = bytearray(line.partition(b":")[2])
            fields.append(current)
    # Cut one octet past the limit: enough to tell "too long", never a huge string.
    return [
        bytes(field[: DMARC_MAX_FROM_OCTETS + 1]).decode("utf-8", "replace") for field in fields
    ]


async def _records(resolver: Resolver, domain: str) -> list[DmarcRecord] | None:
    """The usable DMARC records at ``_dmarc.<domain>``; None when there are none.
    TemporaryDnsError passes up."""
    try:
        texts = await resolver.txt(f"_dmarc.{domain}")
    except PermanentDnsError:  # NXDOMAIN or no TXT: no record
        return None
    records = [record for record in map(parse_record, texts) if record is not None]
    return records or None


async def discover(resolver: Resolver, domain: str) -> tuple[DmarcRecord | None, str, str]:
    """RFC 7489 6.6.3: the record for ``domain`` (then for its organizational domain),
    the policy that applies and why.  (None, "", reason) for no policy;
    TemporaryDnsError passes up."""
    org = await asyncio.to_thread(organizational_domain, domain)  # the list loads once
    records = await _records(resolver, domain)
    found_at = domain
    if records is None and org != domain:
        records = await _records(resolver, org)
        found_at = org
    if records is None:
        return None, "", "no DMARC record"
    if len(records) > 1:  # 6.6.3 step 5: several records: DMARC does not apply
        return None, "", f"{len(records)} DMARC records at _dmarc.{found_at}"
    record = records[0]
    policy = record.policy
    if found_at != domain and record.subdomain_policy is not None:
        policy = record.subdomain_policy  # 6.3 sp=: for subdomains of the org domain
    return record, policy, f"record at _dmarc.{found_at}"


def evaluate(
    record: DmarcRecord,
    domain: str,
    spf: SpfVerdict | None,
    dkim: Iterable[DkimVerdict],
) -> tuple[str, str]:
    """RFC 7489 4.2: pass when SPF or a DKIM signature passed for an aligned domain.

    Otherwise ``temperror`` when an aligned check failed only for now (a retry may
    pass: never a ``fail`` for a temporary failure), else ``fail``.
    """
    dkim = list(dkim)
    # SPF's MAIL FROM identity; for a null sender that is postmaster@HELO (RFC 7208 2.4).
    spf_aligned = spf is not None and aligned(spf.domain, domain, record.strict_spf)
    dkim_aligned = [v for v in dkim if aligned(v.domain, domain, record.strict_dkim)]
    if spf_aligned and spf is not None and spf.result == "pass":
        return "pass", f"spf aligned: {spf.domain}"
    for verdict in dkim_aligned:
        if verdict.result == "pass":
            return "pass", f"dkim aligned: {verdict.domain}"
    if (spf_aligned and spf is not None and spf.result == "temperror") or any(
        v.result == "temperror" for v in dkim_aligned
    ):
        return "temperror", "an aligned check failed temporarily"
    return "fail", "no aligned pass"


async def check_dmarc(
    resolver: Resolver,
    message: bytes,
    spf: SpfVerdict | None,
    dkim: Sequence[DkimVerdict],
) -> DmarcVerdict:
    """The DMARC verdict of ``message`` given its SPF and DKIM verdicts.  Never raises
    for what the message or the DNS hold."""
    domain, why = from_domain(message)
    if domain is None:
        return DmarcVerdict("permerror", None, None, why)
    try:
        record, policy, reason = await discover(resolver, domain)
    except TemporaryDnsError as exc:
        return DmarcVerdict("temperror", domain, None, str(exc))
    if record is None:
        return DmarcVerdict("none", domain, None, reason)
    result, detail = evaluate(record, domain, spf, dkim)  # the list is loaded: quick
    return DmarcVerdict(result, domain, policy, f"{reason}; {detail}")
