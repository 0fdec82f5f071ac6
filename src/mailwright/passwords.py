"""Password hashes for SMTP AUTH users: scrypt (RFC 7914), from hashlib.

scrypt is memory-hard: each guess costs an attacker ``128 * r * 2**ln`` bytes
of memory as well as time, which is why it is the only scheme accepted.  A
hash is one string, made by ``mailwright passwd`` and kept in the
configuration::

    $scrypt$ln=15,r=8,p=1$<salt>$<hash>

``ln`` is log2 of the CPU/memory cost N, ``r`` the block size, ``p`` the
parallelism; salt and hash are base64 (standard alphabet, padding optional).
Verifying takes about as long as hashing (a tenth of a second with the
defaults): callers on an event loop run it in a thread.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from dataclasses import dataclass

PREFIX = "$scrypt$"
DEFAULT_LOG2_N = 15  # N = 32768: 32 MiB per hash with r = 8
DEFAULT_R = 8
DEFAULT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
#: What a hash read from configuration may ask for; beyond this one login could exhaust memory.
MIN_LOG2_N = 10
MAX_LOG2_N = 20
MAX_R = 32
MAX_P = 16
MAX_MEMORY = 256 * 1024 * 1024  # bytes of scrypt working memory one verification may use
MIN_SALT_BYTES = 8
MIN_HASH_BYTES = 16

_PARAMS = re.compile(r"^ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})$")


@dataclass(frozen=True, slots=True)
class ScryptHash:
    """A parsed ``$scrypt$`` string."""

    log2_n: int
    r: int
    p: int
    salt: bytes
    digest: bytes = b""

    def __repr__(self) -> str:
        return f"ScryptHash(ln={self.log2_n}, r={self.r}, p={self.p})"

    def derive(self, password: str) -> bytes:
        n = 1 << self.log2_n
        return hashlib.scrypt(
            password.encode("utf-8"),
            salt=self.salt,
            n=n,
            r=self.r,
            p=self.p,
            dklen=len(self.digest) or HASH_BYTES,
            maxmem=_memory(self.log2_n, self.r, self.p) + 1024 * 1024,
        )

    def format(self) -> str:
        salt = _b64(self.salt)
        digest = _b64(self.digest)
        return f"{PREFIX}ln={self.log2_n},r={self.r},p={self.p}${salt}${digest}"


def _memory(log2_n: int, r: int, p: int) -> int:
    """Working memory of scrypt in bytes: V (128 r N) plus B (128 r p)."""
    return 128 * r * ((1 << log2_n) + p + 2)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the {what} is not base64") from None


def parse_hash(text: str) -> ScryptHash:
    """Parse and bound-check a ``$scrypt$`` hash; ValueError says what is wrong.

    The message never repeats the value: a mistake here may be a password
    pasted in the wrong place.
    """
    if not text.startswith(PREFIX):
        raise ValueError(f"it does not start with {PREFIX}")
    fields = text[len(PREFIX) :].split("$")
    if len(fields) != 3:
        raise ValueError("expected $scrypt$ln=..,r=..,p=..$<salt>$<hash>")
    params, salt_text, digest_text = fields
    m = _PARAMS.match(params)
    if m is None:
        raise ValueError("the parameters must read ln=<n>,r=<n>,p=<n>")
    log2_n, r, p = (int(g) for g in m.groups())
    if not MIN_LOG2_N <= log2_n <= MAX_LOG2_N:
        raise ValueError(f"ln must be from {MIN_LOG2_N} to {MAX_LOG2_N}")
    if not 1 <= r <= MAX_R or not 1 <= p <= MAX_P:
        raise ValueError(f"r must be from 1 to {MAX_R} and p from 1 to {MAX_P}")
    if _memory(log2_n, r, p) > MAX_MEMORY:
        raise ValueError(f"ln and r ask for more than {MAX_MEMORY // (1024 * 1024)} MiB")
    salt = _unb64(salt_text, "salt")
    digest = _unb64(digest_text, "hash")
    if len(salt) < MIN_SALT_BYTES:
        raise ValueError(f"the salt is shorter than {MIN_SALT_BYTES} bytes")
    if len(digest) < MIN_HASH_BYTES:
        raise ValueError(f"the hash is shorter than {MIN_HASH_BYTES} bytes")
    return ScryptHash(log2_n, r, p, salt, digest)


def hash_password(
    password: str,
    *,
    log2_n: int = DEFAULT_LOG2_N,
    r: int = DEFAULT_R,
    p: int = DEFAULT_P,
    salt: bytes | None = None,
) -> str:
    """A new ``$scrypt$`` string for ``password`` with a random salt."""
    params = ScryptHash(log2_n, r, p, salt if salt is not None else os.urandom(SALT_BYTES))
    digest = params.derive(password)
    return ScryptHash(log2_n, r, p, params.salt, digest).format()


def verify_password(password: str, encoded: str | None) -> bool:
    """Whether ``password`` matches ``encoded`` (compared in constant time).

    ``encoded`` None (no such user, or a user without a password) still costs
    one derivation with the default parameters and returns False, so the time
    a login takes does not tell whether the user exists.
    """
    if encoded is None:
        ScryptHash(DEFAULT_LOG2_N, DEFAULT_R, DEFAULT_P, bytes(SALT_BYTES)).derive(password)
        return False
    stored = parse_hash(encoded)
    return hmac.compare_digest(stored.derive(password), stored.digest)
