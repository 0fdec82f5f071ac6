"""dkimpy's signer with the RSA operation done by cryptography (C, the GIL released).

Why: dkimpy makes its rsa-sha256 signature (RSASSA-PKCS1-v1_5, RFC 8017 8.2)
with its own pure-Python RSA, ``pow()`` on big integers, which holds the GIL
the whole time: a signature run in a worker thread (``asyncio.to_thread``)
still stops the event loop and every session on it.  cryptography signs in C
(OpenSSL) and releases the GIL meanwhile (a counting loop kept nine tenths of
its pace beside a thread signing without pause).  ``benchmarks/dkim_sign.py``, RSA-2048,
before (dkimpy's RSA) and after (this module), run back to back on 2 shared
cores; "loop" is how late a 1 ms timer on the event loop fires while two
threads sign, median / worst::

                     before                          after
    1 KiB message    7.5 ms/sig  133/s  loop 8.2 / 22.7 ms   0.51 ms  1960/s  loop 0.4 / 4.5 ms
    64 KiB message   8.6 ms/sig  117/s  loop 7.1 / 21.9 ms   2.35 ms   430/s  loop 1.6 / 7.2 ms

(On a quiet machine before: 6.1 ms, 163/s, worst 26 ms.)  Ed25519 is left to
dkimpy: it signs with pynacl (C) already, 0.15 ms for 1 KiB.  What remains of
the 64 KiB cost is dkimpy's own Python, the same for both algorithms: of the
2.35 ms, the regular expressions that split the message and canonicalise the
body take about 1.9 ms, the RSA operation about 0.3 ms.

The seam: every dkimpy signer (``DKIM`` and ``ARC``) builds its header in one
method, ``DomainSigner.gen_header``, which hashes the canonical headers and
calls the module's ``RSASSA_PKCS1_v1_5_sign``.  ``CryptographyRsaSigning``
overrides that one method, on our instances only; replacing the module's
function instead would change every user of dkimpy in the process.
Everything else (canonicalisation, header selection, tags, folding) stays
dkimpy's, called as dkimpy calls it.  PKCS#1 v1.5 is deterministic, so the
header is byte for byte the one dkimpy makes from the same key:
tests/mailauth/test_dkim_rsa.py proves it for DKIM and ARC.

dkimpy's ``sign`` still parses the PEM key into its own form, in Python (about
0.12 ms of the 0.51 ms above): avoiding it would mean copying ``sign`` too,
sixty lines of dkimpy to keep in step with it, against the 6 ms gained here.
That parsed key is what a call this class does not handle (rsa-sha1, ARC's
``standardize``) is signed with, by dkimpy.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import dkim
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, utils

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

Field = tuple[bytes, bytes]


class CryptographyRsaSigning(dkim.DomainSigner):  # type: ignore[misc]  # dkimpy is untyped
    """A mixin for a dkimpy signer: rsa-sha256 signatures made by ``rsa_key``.

    Put it before the dkimpy class (``class X(CryptographyRsaSigning, dkim.ARC)``)
    and pass the key first; the other arguments are the dkimpy class's own.
    ``sign`` still takes the PEM key: dkimpy reads it, and it must be the
    same key as ``rsa_key``.
    """

    def __init__(self, rsa_key: RSAPrivateKey, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rsa_key = rsa_key

    def gen_header(
        self,
        fields: list[Field],
        include_headers: list[bytes] | tuple[bytes, ...],
        canon_policy: Any,
        header_name: bytes,
        pk: Any,
        standardize: bool = False,
    ) -> bytes:
        """dkimpy 1.1's ``DomainSigner.gen_header`` for rsa-sha256, step for step.

        The header is hashed with ``b=`` empty (RFC 6376 3.7), signed, and the
        signature put in ``b=``; the value is folded before hashing and again
        after, as dkimpy does (its comment: receivers that refold ``b=``).
        """
        if standardize or self.signature_algorithm != b"rsa-sha256":
            header: bytes = super().gen_header(
                fields, include_headers, canon_policy, header_name, pk, standardize
            )
            return header
        unsigned = dkim.fold(_joined(fields), namelen=len(header_name), linesep=b"\r\n")
        unsigned = dkim.RE_BTAG.sub(b"\\1", unsigned)
        digest = dkim.HashThrough(self.hasher(), self.debug_content)
        headers = canon_policy.canonicalize_headers(self.headers)
        self.signed_headers = dkim.hash_headers(
            digest,
            canon_policy,
            headers,
            include_headers,
            (header_name, b" " + unsigned),
            dict(fields),
        )
        signature = self.rsa_key.sign(
            digest.digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256())
        )
        # In place, as dkimpy does: DKIM.sign keeps ``fields`` as signature_fields.
        b_tag = next(i for i, (name, _) in enumerate(fields) if name == b"b")
        fields[b_tag] = (b"b", base64.b64encode(signature))
        signed: bytes = dkim.fold(
            _joined(fields) + self.linesep, namelen=len(header_name), linesep=self.linesep
        )
        return signed


class CryptographyRsaDKIM(CryptographyRsaSigning, dkim.DKIM):  # type: ignore[misc]
    """``dkim.DKIM`` signing rsa-sha256 with a cryptography key loaded once."""


def _joined(fields: list[Field]) -> bytes:
    return b"; ".join(b"=".join(field) for field in fields)
