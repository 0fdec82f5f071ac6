"""Hostile DKIM keys for the verification tests, made with cryptography."""

from __future__ import annotations

import math
import secrets

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def huge_exponent_rsa_key(bits: int = 2048) -> bytes:
    """A working RSA key (PKCS#1 PEM) whose public exponent is as long as its modulus.

    Signatures made with it verify, but each verification is a pow() with that
    exponent: a key record with a 12000-bit modulus and exponent (what 4096 octets
    of TXT can hold) takes seconds of CPU per signature.
    """
    base = rsa.generate_private_key(public_exponent=65537, key_size=bits).private_numbers()
    p, q = base.p, base.q
    lcm = (p - 1) * (q - 1) // math.gcd(p - 1, q - 1)
    exponent = 2
    while math.gcd(exponent, lcm) != 1:
        exponent = secrets.randbits(bits - 8) | 1 | 1 << (bits - 9)
    d = pow(exponent, -1, lcm)
    numbers = rsa.RSAPrivateNumbers(
        p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p), rsa.RSAPublicNumbers(exponent, p * q)
    )
    key = numbers.private_key(unsafe_skip_rsa_key_validation=True)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
