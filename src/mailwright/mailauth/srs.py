"""The Sender Rewriting Scheme: forwarded mail leaves with an envelope sender of ours.

A forwarder that relays ``someone@gmail.com``'s message from its own IP fails
SPF for gmail.com at the next hop, and DMARC with it.  SRS replaces the
envelope sender of the forwarded copy with an address at our own domain that
encodes the original, so SPF is checked against us, and a bounce sent to it
comes back here and is passed on to the original sender.

This is the guarded scheme of the SRS paper (libsrs2, Mail::SRS, postsrsd,
srslib), byte for byte::

    SRS0=HHHH=TT=orig.domain=orig-local@srs-domain

``TT`` is the day number (Unix time // 86400) modulo 1024 in two characters of
the base32 alphabet ``A-Z2-7``; ``HHHH`` is the first four characters of the
base64 HMAC-SHA1, keyed with the secret, of ``TT + orig.domain + orig-local``
in lower case.  A sender already rewritten by a first hop
(``SRS0=opaque@hop1``) becomes ``SRS1=HHHH=hop1==opaque@srs-domain``, hashed
over ``hop1 + "=opaque"``, so a bounce goes back to the first hop without the
address growing at each hop; an ``SRS1`` sender keeps its first hop and gets
our hash.  Reversing compares the hash case-insensitively (some hops lower-case
addresses), with the current secret and every previous one (rotation).

Why by hand rather than srslib (which the tests use to prove both directions
compatible): srslib reads the clock itself (``time.time`` through a private
attribute) where the router and delivery need a clock passed in to be pure and
testable; it works on ``str`` addresses split at the last ``@`` where mailwright
has parsed ``Address`` values; it reports a bad timestamp and an expired one
with the same exception and a malformed address as a ``ValueError`` whose text
echoes the address; and its last release is from 2017.  The scheme is sixty
lines; owning them costs less than adapting around those.

Local parts over 64 octets (RFC 5321 4.5.3.1.1): postsrsd in its default
(``original-envelope = embedded``) mode rewrites whatever the length and lets
the result exceed 64 octets; only its optional database mode keeps addresses
short.  ``forward`` does the same: an over-long result is still sent (most
receivers accept it), never truncated, since a truncated address could not be
reversed.  docs/authentication.md says what that means for bounces.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailwright.model import Address

if TYPE_CHECKING:
    from mailwright.config import Config

#: The separators libsrs2 accepts after the SRS0/SRS1 tag; we write "=".
SEPARATORS = "=+-"
SEPARATOR = "="
#: Characters of the hash written (libsrs2's hashlength) and the fewest accepted (hashmin).
HASH_LENGTH = 4
#: The 5-bit alphabet of the timestamp (the SRS paper's, not RFC 4648's encoding).
TIMESTAMP_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
#: Day numbers wrap at 2 ** 10: two characters of five bits.
TIMESTAMP_CYCLE = 1024
SECONDS_PER_DAY = 86400

#: The reasons a reversal fails; each is the text of the 550 5.1.1 sent for it.
INVALID = "invalid SRS address"
EXPIRED = "SRS address expired"
MALFORMED = "malformed SRS address"

_SRS0 = re.compile(r"SRS0[=+-]([^=]+)=([^=]+)=([^=]+)=(.+)", re.IGNORECASE | re.DOTALL)
_SRS1 = re.compile(r"SRS1[=+-]([^=]+)=([^=]+)=([=+-].+)", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"SRS[01][=+-]", re.IGNORECASE)


class SrsError(ValueError):
    """An address that cannot be reversed; ``reason`` is INVALID, EXPIRED or MALFORMED."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_srs(local_part: str) -> bool:
    """Whether a local part claims to be SRS (``SRS0=``/``SRS1=``, any case, any separator)."""
    return _TAG.match(local_part) is not None


@dataclass(frozen=True, slots=True)
class Srs:
    """The rewriting of one server: its secrets, its SRS domain and how long addresses last."""

    secret: bytes
    domain: str
    previous_secrets: tuple[bytes, ...] = ()
    max_age_days: int = 21

    def forward(self, sender: Address, now: float) -> Address:
        """The SRS form of ``sender`` at our domain, as of Unix time ``now``.

        A sender at our own SRS domain is returned unchanged (it is ours
        already, and rewriting it would only make it longer).
        """
        if sender.domain_key == self.domain:
            return sender
        local, host = sender.local_part, sender.domain
        if match := _SRS1.fullmatch(local):
            first_hop, opaque = match.group(2), match.group(3)
            return self._srs1(first_hop, opaque)
        if local[:4].upper() == "SRS0" and _TAG.match(local) and len(local) > len("SRS0="):
            return self._srs1(host, local[4:])  # the first hop's part, its separator first
        stamp = timestamp(now)
        digest = self._hash(self.secret, stamp + host + local)
        return Address(SEPARATOR.join(("SRS0", digest, stamp, host, local)), self.domain)

    def reverse(self, address: Address, now: float) -> Address:
        """The address an SRS address of ours stands for; SrsError when it is not one.

        The domain of ``address`` is not looked at (libsrs2 does not either):
        the caller decides which domains are ours.  The hash is checked before
        the timestamp, so a forged address learns nothing about our clock.
        """
        local = address.local_part
        if match := _SRS0.fullmatch(local):
            digest, stamp, host, orig_local = match.groups()
            upper = stamp.upper()  # "ß".upper() is "SS": check the form compared, not the input
            if len(upper) != 2 or any(c not in TIMESTAMP_ALPHABET for c in upper):
                raise SrsError(MALFORMED)
            self._check(digest, stamp + host + orig_local)
            if self._age(stamp, now) >= self.max_age_days:
                raise SrsError(EXPIRED)
            return Address(orig_local, host)
        if match := _SRS1.fullmatch(local):
            digest, first_hop, opaque = match.groups()
            self._check(digest, first_hop + opaque)
            return Address("SRS0" + opaque, first_hop)
        raise SrsError(MALFORMED)

    def _srs1(self, first_hop: str, opaque: str) -> Address:
        digest = self._hash(self.secret, first_hop + opaque)
        return Address(SEPARATOR.join(("SRS1", digest, first_hop, opaque)), self.domain)

    @staticmethod
    def _hash(secret: bytes, data: str, length: int = HASH_LENGTH) -> str:
        mac = hmac.new(secret, data.lower().encode("utf-8"), hashlib.sha1).digest()
        return base64.b64encode(mac)[:length].decode("ascii")

    def _check(self, digest: str, data: str) -> None:
        """SrsError(INVALID) unless ``digest`` is the hash of ``data`` under one of our secrets."""
        if not HASH_LENGTH <= len(digest) <= len(base64.b64encode(bytes(20))):
            raise SrsError(INVALID)
        given = digest.lower().encode("ascii", "replace")
        for secret in (self.secret, *self.previous_secrets):
            expected = self._hash(secret, data, len(digest)).lower().encode("ascii")
            if hmac.compare_digest(given, expected):
                return
        raise SrsError(INVALID)

    @staticmethod
    def _age(stamp: str, now: float) -> int:
        """Days since ``stamp`` was written; the cycle wraps, so a future stamp looks old."""
        high, low = (TIMESTAMP_ALPHABET.index(c) for c in stamp.upper())
        then = high << 5 | low
        return (day_number(now) - then) % TIMESTAMP_CYCLE


def day_number(now: float) -> int:
    return int(now // SECONDS_PER_DAY) % TIMESTAMP_CYCLE


def timestamp(now: float) -> str:
    """The two-character day stamp of Unix time ``now``."""
    day = day_number(now)
    return TIMESTAMP_ALPHABET[day >> 5 & 31] + TIMESTAMP_ALPHABET[day & 31]


def from_config(config: Config) -> Srs | None:
    """The rewriting ``[srs]`` configures, or None when no secret is set (SRS off)."""
    srs = config.srs
    secret = srs.secret or srs.secret_from_file
    if secret is None:
        return None
    return Srs(
        secret=secret.encode("utf-8"),
        domain=(srs.domain or config.hostname).lower().rstrip("."),
        previous_secrets=tuple(s.encode("utf-8") for s in srs.previous_secrets),
        max_age_days=srs.max_age_days,
    )
