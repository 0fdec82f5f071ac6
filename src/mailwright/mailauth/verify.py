"""Verdicts on inbound mail: SPF (RFC 7208) and DKIM (RFC 6376), every lookup through our Resolver.

The libraries made for this do the checking: pyspf evaluates the SPF record
(mechanisms, macros, the 10-lookup and void-lookup limits of RFC 7208 4.6.4),
dkimpy checks each DKIM-Signature.  Both are synchronous and look up DNS
themselves, so each runs in a worker thread and its lookups are sent back to
the event loop, to the one ``Resolver`` (``[dns] servers`` and ``timeout``),
and waited for there (``_Lookups``).  Nothing here blocks the event loop.

pyspf has no parameter for a DNS function (it calls a module global,
``spf.DNSLookup``); changing that global would send every other thread's SPF
check to this resolver too.  Instead ``_SpfQuery`` overrides the one method of
``spf.query`` that asks DNS (``dns``), keeping pyspf's caching, CNAME and
void-lookup rules as they are.

A lookup that times out or fails (``TemporaryDnsError``) is ``temperror``,
never ``pass`` or ``fail``: RFC 7208 2.6.6, RFC 6376 6.1.2 (TEMPFAIL).
"""

from __future__ import annotations

import asyncio
import binascii
import concurrent.futures
import logging
import re
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import dkim
import spf

from mailwright.config.schema import MAX_VERIFIED_SIGNATURES, SPF_TOTAL_SECONDS
from mailwright.mailauth.dkim import unusable_public_key
from mailwright.mailauth.dns import DnsError, PermanentDnsError, Resolver, TemporaryDnsError

log = logging.getLogger("mailwright.verify")

T = TypeVar("T")

#: The pyspf results we pass on as they are (RFC 7208 2.6; RFC 8601 2.7.2).
SPF_RESULTS = frozenset({"pass", "fail", "softfail", "neutral", "none", "permerror", "temperror"})


@dataclass(frozen=True, slots=True)
class SpfVerdict:
    """The SPF result for one identity: ``mailfrom`` (MAIL FROM) or ``helo`` (a null sender)."""

    result: str
    identity: str  # "mailfrom" or "helo"
    domain: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class DkimVerdict:
    """The result of one DKIM-Signature: pass, fail, neutral, temperror or permerror."""

    result: str
    domain: str | None
    selector: str | None
    reason: str = ""


class _Lookups:
    """Blocking DNS lookups for a worker thread, answered by the Resolver on ``loop``.

    Each waits at most the resolver's own timeout plus a second: the resolver
    answers (or fails) within its timeout, so the margin only guards against a
    stopped loop.  A wait that runs out is a TemporaryDnsError.
    """

    def __init__(self, resolver: Resolver, loop: asyncio.AbstractEventLoop) -> None:
        self.resolver = resolver
        self.loop = loop

    def run(self, coro: Coroutine[Any, Any, T], name: str, rdtype: str) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(self.resolver.timeout + 1.0)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TemporaryDnsError(name, rdtype, "no answer in time") from None


# ---------------------------------------------------------------- SPF


class _SpfQuery(spf.query):  # type: ignore[misc]
    """pyspf's query with its DNS questions asked through our Resolver."""

    def __init__(self, lookups: _Lookups, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lookups = lookups

    def dns(
        self, name: str, qtype: str, cnames: object = None, ignore_void: bool = False
    ) -> list[Any]:
        """Records in pyspf's forms; [] for NXDOMAIN/NODATA (counted as void, RFC 7208
        4.6.4); ``spf.TempError`` for a temporary failure, which pyspf turns into temperror.
        The resolver follows CNAMEs itself, so pyspf's own CNAME chase is not needed."""
        if not name:
            raise spf.PermError("empty domain name")
        name = str(name).rstrip(".").lower()
        if not all(0 < len(label) < 64 for label in name.split(".")):
            return []  # not a DNS name: as pyspf does
        key = (name, qtype)
        cached = self.cache.get(key)
        if cached:
            return list(cached)
        rdtype = "TXT" if qtype == "SPF" else qtype  # type 99 is obsolete (RFC 7208 3.1)
        try:
            records = self._lookups.run(self._lookups.resolver.records(name, rdtype), name, rdtype)
        except TemporaryDnsError as exc:
            raise spf.TempError(f"DNS {exc}") from None
        except PermanentDnsError:
            records = []
        result = [_spf_form(rdtype, record) for record in records]
        if result:
            self.cache[key] = result
        elif not ignore_void:
            self.void_lookups += 1
            if self.void_lookups > spf.MAX_VOID_LOOKUPS:
                raise spf.PermError(f"Void lookup limit of {spf.MAX_VOID_LOOKUPS} exceeded")
        return list(result)


def _spf_form(rdtype: str, record: Any) -> Any:
    """One record as pyspf's dnspython driver gives it (spf.DNSLookup_dnspython)."""
    if rdtype in ("A", "AAAA"):
        return record.address
    if rdtype == "MX":
        return (record.preference, record.exchange.to_text(omit_final_dot=True))
    if rdtype == "PTR":
        return record.target.to_text(omit_final_dot=True)
    return tuple(record.strings)  # TXT: pyspf joins the character-strings


def _spf_check(lookups: _Lookups, ip: str, sender: str, helo: str) -> tuple[str, str]:
    """In a worker thread: pyspf's (result, explanation)."""
    query = _SpfQuery(
        lookups,
        i=ip,
        s=sender,
        h=helo,
        timeout=lookups.resolver.timeout,
        querytime=SPF_TOTAL_SECONDS,
    )
    result, _code, explanation = query.check()
    return str(result), str(explanation)


async def check_spf(
    resolver: Resolver, ip: str, sender: str | None, helo: str | None
) -> SpfVerdict:
    """The SPF verdict for the client ``ip``: the MAIL FROM domain, or the HELO name for
    a null sender (RFC 7208 2.4).  Never raises for what the DNS or the record hold."""
    helo_name = helo or ""
    if sender:
        identity, domain, checked = "mailfrom", sender.rpartition("@")[2], sender
    else:
        identity, domain, checked = "helo", helo_name, f"postmaster@{helo_name}"
    if not domain or domain.startswith("["):
        # An address literal HELO has no SPF record (RFC 7208 2.3): nothing to check.
        return SpfVerdict("none", identity, domain, "no domain to check")
    lookups = _Lookups(resolver, asyncio.get_running_loop())
    try:
        result, reason = await asyncio.to_thread(_spf_check, lookups, ip, checked, helo_name)
    except Exception as exc:  # a bug in the library is no verdict on the sender
        log.warning("spf check of %s for %s failed: %r", domain, ip, exc)
        return SpfVerdict("temperror", identity, domain, "check failed")
    if result not in SPF_RESULTS:  # pyspf's older names, never in a header
        result = {"error": "temperror", "unknown": "permerror"}.get(result, "temperror")
    return SpfVerdict(result, identity, domain, reason)


# ---------------------------------------------------------------- DKIM


def _dkim_one(message: bytes, idx: int, lookups: _Lookups) -> DkimVerdict:
    """In a worker thread: the verdict of the ``idx``th DKIM-Signature (RFC 6376 6.1).

    dkimpy folds a missing or unusable key and a DNS timeout into False; the
    key is fetched and read here first so those are told apart: temperror for
    a lookup that failed, permerror for no key or one that cannot be read.
    """
    verifier = dkim.DKIM(message)
    try:
        prep = verifier.verify_headerprep(idx)
    except dkim.DKIMException as exc:  # a signature badly formed
        return DkimVerdict("permerror", _text(verifier.domain), _selector(verifier), str(exc))
    if not prep:
        return DkimVerdict("none", None, None)
    sig, include_headers, sigheaders = prep
    domain, selector = _text(sig[b"d"]), _text(sig[b"s"])
    name = f"{selector}._domainkey.{domain}"
    try:
        records = lookups.run(lookups.resolver.txt(name), name, "TXT")
    except TemporaryDnsError as exc:
        return DkimVerdict("temperror", domain, selector, str(exc))
    except DnsError as exc:
        return DkimVerdict("permerror", domain, selector, f"no key: {exc}")
    if len(records) != 1:  # RFC 6376 3.6.2.2: several keys at one name is undefined
        return DkimVerdict("permerror", domain, selector, f"{len(records)} key records")
    key = records[0].encode("latin-1")
    try:
        dkim.evaluate_pk(name.encode("ascii", "replace"), key)
    except (dkim.DKIMException, binascii.Error, ValueError) as exc:
        return DkimVerdict("permerror", domain, selector, f"unusable key: {exc}")
    problem = unusable_public_key(name.encode("ascii", "replace"), key)
    if problem is not None:
        return DkimVerdict("permerror", domain, selector, f"unusable key: {problem}")

    def dnsfunc(_name: bytes, timeout: float = 0) -> bytes:
        return key

    try:
        good = verifier.verify_sig(sig, include_headers, sigheaders[idx], dnsfunc)
    except dkim.ValidationError as exc:  # a body hash that does not match
        return DkimVerdict("fail", domain, selector, str(exc))
    except dkim.DKIMException as exc:
        return DkimVerdict("permerror", domain, selector, str(exc))
    return DkimVerdict("pass" if good else "fail", domain, selector)


def _text(value: bytes | str | None) -> str | None:
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return value


def _selector(verifier: Any) -> str | None:
    # dkimpy's default selector before a signature is read is "default": not one we saw.
    value = getattr(verifier, "selector", None)
    return _text(value) if isinstance(value, bytes) else None


def _dkim_all(
    message: bytes, lookups: _Lookups, limit: int, first: Callable[[str], bool] | None
) -> list[DkimVerdict]:
    """In a worker thread: a verdict for each of ``limit`` signatures, in header order.

    Which ones: those whose ``d=`` satisfies ``first`` (DMARC passes ones aligned
    with the From: domain), then the others, topmost first.  Without it, a
    message with more signatures than the limit could hide its one aligned
    signature below junk ones and be refused by a DMARC policy it meets.
    """
    signatures = [
        value for name, value in dkim.DKIM(message).headers if name.lower() == b"dkim-signature"
    ]
    order = list(range(len(signatures)))
    if first is not None:
        order.sort(key=lambda idx: not first(_d_tag(signatures[idx])))  # stable
    verdicts = []
    for idx in sorted(order[:limit]):
        try:
            verdicts.append(_dkim_one(message, idx, lookups))
        except Exception as exc:  # dkimpy on hostile input: a verdict, never a crash
            log.warning("dkim check of signature %d failed: %r", idx, exc)
            verdicts.append(DkimVerdict("permerror", None, None, "check failed"))
    return verdicts


_D_TAG = re.compile(rb"(?:^|;)\s*d\s*=\s*([^;\s]*)")


def _d_tag(value: bytes) -> str:
    """The ``d=`` of a DKIM-Signature value, as written; "" when it has none."""
    match = _D_TAG.search(value)
    return match.group(1).decode("ascii", "replace") if match else ""


async def check_dkim(
    resolver: Resolver,
    message: bytes,
    limit: int = MAX_VERIFIED_SIGNATURES,
    first: Callable[[str], bool] | None = None,
) -> Sequence[DkimVerdict]:
    """A verdict per DKIM-Signature of ``message`` (at most ``limit``, those whose ``d=``
    satisfies ``first`` chosen first); empty: none signed."""
    lookups = _Lookups(resolver, asyncio.get_running_loop())
    try:
        return await asyncio.to_thread(_dkim_all, message, lookups, limit, first)
    except Exception as exc:  # the message could not even be parsed
        log.warning("dkim check failed: %r", exc)
        return [DkimVerdict("permerror", None, None, "message could not be read")]
