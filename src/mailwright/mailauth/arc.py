"""ARC (RFC 8617): the chain of inbound mail validated, and forwarded mail sealed.

The cryptography is dkimpy's (``dkim.ARC``, ``dkim.arc_sign``); what is ours is
what RFC 8617 5.2 asks around it and dkimpy leaves out or folds together:

- the structure of the chain is checked before any lookup (5.2 steps 1 to 3):
  at most 50 sets, each instance 1..N exactly once with its three fields, and
  ``cv=none`` on the first seal, ``cv=pass`` on the others (dkimpy accepts any
  ``cv`` but ``none`` above instance 1);
- the keys (the newest ARC-Message-Signature's and every ARC-Seal's) are
  fetched first, at most ``MAX_ARC_KEYS`` of them, through our Resolver, all at
  once on the event loop; dkimpy then gets a ``dnsfunc`` that answers from
  them and never asks the system resolver.  A key that could not be fetched
  for now makes the verdict temporary (``fail``, never ``pass``, and never
  sealed on), as DKIM's TEMPFAIL (RFC 6376 6.1.2);
- only the newest ARC-Message-Signature is checked (5.2 step 4): each one
  costs a hash of the whole body, and the older ones only serve the optional
  ``oldest-pass`` (step 5), which we do not report.

RFC 8617 names three results, ``none``, ``pass`` and ``fail`` (4.4); hostile
headers (junk tags, bad base64, gaps, duplicate instances, a ``cv=fail``
upstream) give ``fail``, a message without ARC fields ``none``, and nothing
here raises for what a message or the DNS holds.

Sealing (5.1) uses dkimpy's ``arc_sign``, which signs rsa-sha256 only: an
Ed25519 key for the SRS domain is refused at start-up (config/checks.py).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import dkim
from dkim.util import InvalidTagValueList, parse_tag_value

from mailwright.config.schema import MAX_ARC_KEYS, MAX_ARC_SETS
from mailwright.logfmt import kv
from mailwright.mailauth.dkim import SigningKey, unusable_public_key
from mailwright.mailauth.dns import DnsError, Resolver, TemporaryDnsError

log = logging.getLogger("mailwright.arc")

SEAL = b"arc-seal"
SIGNATURE = b"arc-message-signature"
RESULTS = b"arc-authentication-results"
_FIELDS = (SEAL, SIGNATURE, RESULTS)
#: An ARC header field at the start of a line of the header section (not a continuation).
_ARC_FIELD = re.compile(
    rb"^arc-(?:seal|message-signature|authentication-results)[ \t]*:", re.IGNORECASE | re.MULTILINE
)


@dataclass(frozen=True, slots=True)
class ArcVerdict:
    """The chain validation status of a message (RFC 8617 4.4): none, pass or fail.

    ``instances``: the highest instance found (0: no chain).  ``temporary``: a
    key could not be fetched for now, so the ``fail`` says nothing about the
    chain.  ``terminated``: the newest seal says ``cv=fail`` (5.1 step 1: the
    chain ends there).  ``remote_ip``: the client it came from, reported as
    ``smtp.remote-ip`` (RFC 8617 6 registers it for the ``arc`` method).
    """

    result: str
    instances: int = 0
    reason: str = ""
    temporary: bool = False
    terminated: bool = False
    remote_ip: str | None = None

    @property
    def may_seal(self) -> bool:
        """True when RFC 8617 5.1 lets us add the next set: not after a ``cv=fail``,
        not past instance 50, and not on a status we could not establish."""
        if self.temporary or self.terminated or self.instances >= MAX_ARC_SETS:
            return False
        # dkimpy counts instances as we do: none means no set, anything else at least one.
        return (self.result == "none") == (self.instances == 0)


@dataclass(frozen=True, slots=True)
class ArcPlan:
    """What ARC does with one message, decided when DATA starts (server/handler.py).

    The chain is always checked and recorded (``arc=`` in our
    Authentication-Results header); ``seal`` is the key that seals the message
    when it is forwarded (``[arc] seal``), else None.
    """

    client_ip: str
    seal: SigningKey | None = field(default=None, repr=False)


class _KeyUnavailable(Exception):
    """A key dkimpy needs could not be fetched for now: no verdict on the chain.

    Deliberately not a DKIMException, which dkimpy would turn into ``fail``."""


class _KeyRefused(Exception):
    """A key that would cost too much to verify with (dkim.unusable_public_key): ``fail``."""


class _NewestSignatureArc(dkim.ARC):  # type: ignore[misc]
    """dkimpy's ARC verifier, checking only the newest ARC-Message-Signature.

    RFC 8617 5.2 step 4 validates the AMS of the greatest instance; the older
    ones only feed ``oldest-pass`` (step 5, optional, not reported).  dkimpy
    checks each, and each hashes the whole body: 50 sets would hash it 50
    times.  An older one is reported as not valid without being computed,
    which dkimpy's chain verdict does not look at.
    """

    newest = 0

    def verify_sig(
        self, sig: dict[bytes, bytes], include_headers: Any, sig_header: Any, dnsfunc: Any
    ) -> Any:
        if sig_header[0].lower() == SIGNATURE:
            try:
                instance = int(sig.get(b"i", b""))
            except ValueError:
                return False
            if instance != self.newest:
                return False
        return super().verify_sig(sig, include_headers, sig_header, dnsfunc)


@dataclass(slots=True)
class _Chain:
    """A chain whose structure is valid, and the keys it needs (``selector._domainkey.domain``)."""

    verifier: _NewestSignatureArc
    instances: int
    key_names: list[str]


def _fail(
    reason: str, instances: int = 0, *, temporary: bool = False, terminated: bool = False
) -> ArcVerdict:
    return ArcVerdict("fail", instances, reason, temporary=temporary, terminated=terminated)


def _read_chain(message: bytes) -> ArcVerdict | _Chain:
    """In a worker thread: RFC 8617 5.2 steps 1 to 3, and the keys step 4 and 6 need."""
    end = message.find(b"\r\n\r\n")
    head = message if end == -1 else message[: end + 2]
    fields = len(_ARC_FIELD.findall(head))
    if fields == 0:
        return ArcVerdict("none", 0, "no ARC header fields")
    if fields > len(_FIELDS) * MAX_ARC_SETS:
        return _fail(f"more than {MAX_ARC_SETS} ARC sets")
    try:
        verifier = _NewestSignatureArc(message)
        newest, found = verifier.sorted_arc_headers()
    except dkim.DKIMException as exc:
        return _fail(f"message cannot be read: {exc}")
    if len(found) != fields:  # RFC 8617 4.2.1: every ARC field has an instance
        return _fail("an ARC header field without an instance (i=)", newest)
    if newest > MAX_ARC_SETS:  # step 1
        return _fail(f"instance {newest} is over {MAX_ARC_SETS}", newest)
    seals: dict[int, dict[bytes, bytes]] = {}
    for instance, (name, value) in found:
        if name.lower() == SEAL:
            try:
                seals.setdefault(instance, parse_tag_value(value))
            except InvalidTagValueList as exc:
                return _fail(f"ARC-Seal i={instance} unreadable: {exc}", newest)
    newest_cv = seals.get(newest, {}).get(b"cv", b"").lower()
    if newest_cv == b"fail":  # step 2
        return _fail("the newest ARC-Seal says cv=fail", newest, terminated=True)
    problem = _structure_problem(found, seals, newest)  # step 3
    if problem:
        return _fail(problem, newest)
    names = _key_names(found, seals, newest)
    if isinstance(names, ArcVerdict):
        return names
    verifier.newest = newest
    return _Chain(verifier, newest, names)


def _structure_problem(
    found: list[tuple[int, tuple[bytes, bytes]]], seals: dict[int, dict[bytes, bytes]], newest: int
) -> str:
    """RFC 8617 5.2 step 3: sets 1..N, each with one of each field; cv none, then pass."""
    counts = Counter((instance, name.lower()) for instance, (name, _) in found)
    for instance in range(1, newest + 1):
        for name in _FIELDS:
            if counts[(instance, name)] != 1:
                return f"ARC set {instance} has {counts[(instance, name)]} {name.decode()} fields"
    if len(found) != len(_FIELDS) * newest:
        return "an ARC instance outside 1..N"
    for instance in range(1, newest + 1):
        cv = seals[instance].get(b"cv", b"").lower()
        wanted = b"none" if instance == 1 else b"pass"
        if cv != wanted:
            return f"ARC-Seal i={instance} says cv={cv.decode('ascii', 'replace')[:10]}"
    return ""


def _key_names(
    found: list[tuple[int, tuple[bytes, bytes]]], seals: dict[int, dict[bytes, bytes]], newest: int
) -> list[str] | ArcVerdict:
    """The distinct key names of the newest ARC-Message-Signature and of every ARC-Seal."""
    tags = list(seals.values())
    for instance, (name, value) in found:
        if instance == newest and name.lower() == SIGNATURE:
            try:
                tags.append(parse_tag_value(value))
            except InvalidTagValueList as exc:
                return _fail(f"ARC-Message-Signature i={newest} unreadable: {exc}", newest)
    names: list[str] = []
    for tag in tags:
        selector, domain = tag.get(b"s"), tag.get(b"d")
        if not selector or not domain:
            return _fail("an ARC signature without s= or d=", newest)
        try:
            key = f"{selector.decode('ascii')}._domainkey.{domain.decode('ascii')}"
        except UnicodeDecodeError:
            return _fail("an ARC signature with a non-ASCII s= or d=", newest)
        key = key.rstrip(".").lower()
        if key not in names:
            names.append(key)
    if len(names) > MAX_ARC_KEYS:
        return _fail(f"the chain needs {len(names)} keys, more than {MAX_ARC_KEYS}", newest)
    return names


async def _fetch_keys(resolver: Resolver, names: list[str]) -> dict[str, bytes | None]:
    """Each key record as dkimpy reads it; b"" for none (or several, RFC 6376 3.6.2.2),
    None for a lookup that failed for now.  All at once: one timeout at most."""
    answers = await asyncio.gather(*(resolver.txt(name) for name in names), return_exceptions=True)
    keys: dict[str, bytes | None] = {}
    for name, answer in zip(names, answers, strict=True):
        if isinstance(answer, list):
            keys[name] = answer[0].encode("latin-1") if len(answer) == 1 else b""
        elif isinstance(answer, DnsError) and not isinstance(answer, TemporaryDnsError):
            keys[name] = b""
        elif isinstance(answer, asyncio.CancelledError):
            raise answer
        else:  # a temporary failure, or a fault of the lookup itself: no verdict
            keys[name] = None
    return keys


def _validate(chain: _Chain, keys: dict[str, bytes | None]) -> ArcVerdict:
    """In a worker thread: dkimpy's signature checks (5.2 steps 4 and 6), keys given."""

    def dnsfunc(name: bytes, timeout: float = 0) -> bytes:
        key = keys.get(name.decode("ascii", "replace").rstrip(".").lower())
        if key is None:
            raise _KeyUnavailable(name.decode("ascii", "replace"))
        problem = unusable_public_key(name, key) if key else None
        if problem is not None:
            raise _KeyRefused(f"key {name.decode('ascii', 'replace')} refused: {problem}")
        return key

    try:
        status, _results, reason = chain.verifier.verify(dnsfunc=dnsfunc)
    except _KeyUnavailable as exc:
        return _fail(f"key {exc} could not be fetched for now", chain.instances, temporary=True)
    except _KeyRefused as exc:
        return _fail(str(exc), chain.instances)
    if status == dkim.CV_Pass:
        return ArcVerdict("pass", chain.instances, "chain valid")
    return _fail(str(reason), chain.instances)


async def check_arc(resolver: Resolver, message: bytes, remote_ip: str | None = None) -> ArcVerdict:
    """The chain validation status of ``message`` (RFC 8617 5.2).  Never raises for
    what the message or the DNS hold."""
    try:
        chain = await asyncio.to_thread(_read_chain, message)
        if isinstance(chain, _Chain):
            keys = await _fetch_keys(resolver, chain.key_names)
            chain = await asyncio.to_thread(_validate, chain, keys)
    except Exception as exc:  # dkimpy on hostile input: a verdict, never a crash
        log.warning(kv(event="arc-check-failed", error=repr(exc)))
        chain = _fail("the chain could not be checked")
    return replace(chain, remote_ip=remote_ip)


# ---------------------------------------------------------------- sealing


def _seal(message: bytes, key: SigningKey, authserv_id: str) -> bytes:
    """In a worker thread: the ARC set dkimpy makes for ``message``, b"" when it makes none.

    dkimpy takes the AAR and the ``cv=`` from the Authentication-Results header of
    ``authserv_id`` on top of ``message`` (ours), and the instance from the chain.
    """
    try:
        fields: list[bytes] = dkim.arc_sign(
            message,
            key.selector.encode("ascii"),
            key.domain.encode("ascii"),
            key.private,
            authserv_id.encode("ascii"),
            linesep=b"\r\n",
        )
    except Exception as exc:  # a message dkimpy cannot seal leaves unsealed, never lost
        log.warning(kv(event="arc-seal-failed", domain=key.domain, error=repr(exc)))
        return b""
    return b"".join(fields)


async def seal(
    plan: ArcPlan | None,
    verdict: ArcVerdict | None,
    results_header: bytes | None,
    message: bytes,
    authserv_id: str,
) -> bytes:
    """The ARC set (ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results) to put
    on top of ``message``, or b"" when it gets none (RFC 8617 5.1).

    ``results_header`` is our Authentication-Results header, whose verdicts (the
    chain's among them) become the AAR.  Not sealed: no seal planned, a chain that
    ended upstream (cv=fail) or is full, or a status we could not establish now.
    """
    if plan is None or plan.seal is None or verdict is None or not results_header:
        return b""
    if not verdict.may_seal:
        log.info(kv(event="arc-not-sealed", arc=verdict.result, reason=verdict.reason))
        return b""
    sealed = await asyncio.to_thread(_seal, results_header + message, plan.seal, authserv_id)
    if sealed:
        log.info(
            kv(
                event="arc-sealed",
                domain=plan.seal.domain,
                instance=verdict.instances + 1,
                cv=verdict.result,
            )
        )
    return sealed
