"""DKIM signing (RFC 6376) with RSA or Ed25519 keys (RFC 8463): keys, DNS records, signatures.

The signature itself is dkimpy's (``dkim.DKIM``): a DKIM implementation is
easy to get subtly wrong and dkimpy is the one receivers test against.  Only
the RSA operation inside it is cryptography's, for speed (dkim_rsa.py).  What is
ours is the policy around it: which key signs which message (the ``From:``
domain, or a parent of it, RFC 6376 3.10 lets ``d=`` be a parent of the
author's domain for DMARC's relaxed alignment), which headers are signed, and
key files kept private.

Key files are PEM (PKCS#8 as ``mailwright dkim keygen`` writes them, or PKCS#1
``RSA PRIVATE KEY`` as opendkim-genkey does); an Ed25519 key may also be the
base64 seed dkimpy's ``dknewkey`` writes.  cryptography reads and makes them;
dkimpy wants RSA as PKCS#1 PEM and Ed25519 as the base64 seed, so a loaded key
is kept in that form; an RSA key also as cryptography's key object, which signs.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.headerregistry import Address as HeaderAddress
from email.parser import BytesHeaderParser
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

from mailwright.logfmt import kv

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

log = logging.getLogger("mailwright.dkim")

Algorithm = Literal["rsa", "ed25519"]
ALGORITHMS: Final[tuple[Algorithm, ...]] = ("rsa", "ed25519")

#: RSA keys shorter than 1024 bits must not be used (RFC 8301 3.2); 2048 is the usual size.
DEFAULT_RSA_BITS: Final = 2048
MIN_RSA_BITS: Final = 1024
MAX_RSA_BITS: Final = 8192
#: The longest RSA public exponent a key from the DNS may have, as OpenSSL's
#: OPENSSL_RSA_MAX_PUBEXP_BITS (real keys use 65537, 17 bits).  dkimpy verifies with
#: Python's pow(), which holds the GIL: a hostile key record's exponent as long as its
#: modulus (12000 bits fit in a TXT record) would stop the event loop for seconds per
#: signature, and an ARC chain is 50 of them.
MAX_RSA_PUBLIC_EXPONENT_BITS: Final = 64

#: A TXT record is made of strings of at most 255 octets each (RFC 1035 3.3.14).
TXT_STRING_MAX: Final = 255

#: Owner read and write only: a DKIM key in other hands signs mail as the domain.
KEY_FILE_MODE: Final = 0o600

#: Headers signed when present (RFC 6376 5.4.1's list, trimmed to what mail clients set).
#: ``From`` is listed once more after them (oversigning, RFC 6376 8.15): a second
#: ``From:`` added on the way breaks the signature instead of slipping past it.
SIGNED_HEADERS: Final = (
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
)


class DkimKeyError(Exception):
    """A key file that cannot sign: the text says why, in one line."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One ``[[dkim.keys]]`` entry, loaded: ``d=``, ``s=`` and the key in dkimpy's form.

    ``rsa_key``: for RSA, ``private`` loaded once into cryptography, which
    makes the signature (dkim_rsa.py says why); None for Ed25519.  It is made
    from ``private`` here, so the two never disagree.
    """

    domain: str
    selector: str
    algorithm: Algorithm
    private: bytes = field(repr=False)
    rsa_key: RSAPrivateKey | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rsa_key = _cryptography_rsa_key(self.private) if self.algorithm == "rsa" else None
        object.__setattr__(self, "rsa_key", rsa_key)

    @property
    def signature_algorithm(self) -> bytes:
        return b"rsa-sha256" if self.algorithm == "rsa" else b"ed25519-sha256"


# ---------------------------------------------------------------- making keys


def generate_private_key(algorithm: Algorithm, bits: int = DEFAULT_RSA_BITS) -> bytes:
    """A new private key as unencrypted PKCS#8 PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if algorithm == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_key_value(private_pem: bytes) -> tuple[Algorithm, str]:
    """The ``k=`` and ``p=`` of the key record for a private key.

    RSA: the DER SubjectPublicKeyInfo (RFC 6376 3.6.1).  Ed25519: the raw
    32-octet public key, not wrapped in ASN.1 (RFC 8463 4).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    key = serialization.load_pem_private_key(private_pem, password=None)
    if isinstance(key, rsa.RSAPrivateKey):
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return "rsa", base64.b64encode(der).decode("ascii")
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return "ed25519", base64.b64encode(raw).decode("ascii")
    raise DkimKeyError("not an RSA or Ed25519 private key")


def record_text(algorithm: Algorithm, public: str) -> str:
    """The TXT record's text: ``v=DKIM1; k=...; p=...`` (RFC 6376 3.6.1)."""
    return f"v=DKIM1; k={algorithm}; p={public}"


def record_line(domain: str, selector: str, text: str) -> str:
    """The record in zone-file form, one line, split into strings of at most 255 octets."""
    pieces = [text[i : i + TXT_STRING_MAX] for i in range(0, len(text), TXT_STRING_MAX)]
    strings = " ".join(f'"{piece}"' for piece in pieces)
    return f"{selector}._domainkey.{domain.rstrip('.')}. IN TXT {strings}"


def write_private_key(path: Path, pem: bytes) -> None:
    """Create ``path`` with mode 0600 from the start; FileExistsError rather than overwrite.

    O_EXCL: an existing key may already be published; replacing it would make
    every signature fail until DNS is changed.  The mode is given to open(), so
    the key is never readable by others, not even for an instant.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, KEY_FILE_MODE)
    try:
        os.fchmod(fd, KEY_FILE_MODE)  # the umask may have taken bits away; never added any
        with os.fdopen(fd, "wb") as handle:
            fd = -1
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
    finally:
        if fd != -1:
            os.close(fd)


# ---------------------------------------------------------------- loading keys


def load_signing_key(domain: str, selector: str, path: Path) -> SigningKey:
    """Read and check a key file; DkimKeyError with the reason when it cannot sign.

    Refused: a file that cannot be read, that group or others may read or
    write (a key others can read is no longer a secret), or that holds no RSA
    or Ed25519 private key.
    """
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise DkimKeyError(f"cannot read {path} ({exc.strerror or type(exc).__name__})") from None
    if not stat.S_ISREG(mode):
        raise DkimKeyError(f"{path} is not a regular file")
    if mode & 0o077:
        raise DkimKeyError(
            f"{path} is readable or writable by group or others (mode {stat.S_IMODE(mode):04o});"
            f" chmod 600 it"
        )
    algorithm, private = _dkimpy_form(data, path)
    return SigningKey(
        domain=domain.lower(), selector=selector, algorithm=algorithm, private=private
    )


def _dkimpy_form(data: bytes, path: Path) -> tuple[Algorithm, bytes]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    if b"-----BEGIN" not in data:
        seed = _base64_seed(data)
        if seed is None:
            raise DkimKeyError(f"{path} holds no PEM private key")
        return "ed25519", base64.b64encode(seed)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise DkimKeyError(f"{path} holds no usable private key ({exc})") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise DkimKeyError(f"{path}: RSA keys under {MIN_RSA_BITS} bits are refused (RFC 8301)")
        pkcs1 = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        return "rsa", pkcs1
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return "ed25519", base64.b64encode(raw)
    raise DkimKeyError(f"{path} holds a private key that is neither RSA nor Ed25519")


def _base64_seed(data: bytes) -> bytes | None:
    """dknewkey's Ed25519 format: the 32-octet seed in base64, alone in the file."""
    try:
        seed = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return seed if len(seed) == 32 else None


def _cryptography_rsa_key(pem: bytes) -> RSAPrivateKey:
    """``SigningKey.private`` of an RSA key (PKCS#1 PEM) as the key cryptography signs with."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise DkimKeyError(f"not a usable RSA private key ({exc})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise DkimKeyError(f"algorithm rsa but a {type(key).__name__} key")
    return key


def unusable_public_key(name: bytes, record: bytes) -> str | None:
    """Why the key record ``record`` of ``name`` must not verify anything: an RSA key longer
    than MAX_RSA_BITS (RFC 8301 3.2 asks verifiers for 1024 to 4096 bits, larger MAY be
    refused) or with an exponent longer than MAX_RSA_PUBLIC_EXPONENT_BITS, which would
    cost seconds of CPU per signature.  None when it may be used, or when dkimpy will
    refuse it anyway (it says why)."""
    import dkim

    try:
        key, bits, kind, _ = dkim.evaluate_pk(name, record)
    except Exception:  # dkimpy's own refusal comes when the key is used
        return None
    if kind != b"rsa":
        return None
    if bits > MAX_RSA_BITS:
        return f"an RSA key of {bits} bits, more than {MAX_RSA_BITS}"
    exponent_bits = int(key["publicExponent"]).bit_length()
    if exponent_bits > MAX_RSA_PUBLIC_EXPONENT_BITS:
        return (
            f"an RSA public exponent of {exponent_bits} bits,"
            f" more than {MAX_RSA_PUBLIC_EXPONENT_BITS}"
        )
    return None


# ---------------------------------------------------------------- signing


def author_domain(header_section: bytes) -> str | None:
    """The domain of the single ``From:`` address, lower-cased; None when there is not one.

    A message with several From: headers or addresses is not signed: which
    author would the signature vouch for (RFC 6376 does not say; DMARC,
    RFC 7489 6.6.1, refuses to pick)?
    """
    headers = BytesHeaderParser(policy=SMTP_POLICY).parsebytes(header_section)
    values = headers.get_all("From") or []
    if len(values) != 1:
        return None
    try:
        addresses: Sequence[HeaderAddress] = values[0].addresses
    except (AttributeError, IndexError, ValueError):
        return None
    if len(addresses) != 1 or not addresses[0].domain:
        return None
    return addresses[0].domain.rstrip(".").lower()


def key_for(keys: Sequence[SigningKey], domain: str) -> SigningKey | None:
    """The key of ``domain`` or of its nearest parent domain that has one."""
    best: SigningKey | None = None
    for key in keys:
        if (domain == key.domain or domain.endswith("." + key.domain)) and (
            best is None or len(key.domain) > len(best.domain)
        ):
            best = key
    return best


def signature_header(message: bytes, key: SigningKey) -> bytes:
    """The ``DKIM-Signature:`` header (CRLF-terminated) to put on top of ``message``.

    relaxed/relaxed (RFC 6376 3.4): survives the header refolding and
    whitespace changes relays make.  Only headers present are signed, plus the
    extra ``From`` that makes a second one fail verification.

    dkimpy makes the header; an RSA signature itself is made by ``key.rsa_key``
    (``CryptographyRsaDKIM``, the same bytes as ``dkim.sign`` in a tenth of
    the time and without holding the GIL).  CPU-bound all the same (0.5 ms
    for RSA-2048 and 1 KiB, benchmarks/dkim_sign.py): callers run it off the
    event loop.
    """
    import dkim

    from mailwright.mailauth.dkim_rsa import CryptographyRsaDKIM

    present = _present_headers(message)
    include = [name.encode("ascii") for name in SIGNED_HEADERS if name.lower() in present]
    include.append(b"From")
    options = {"signature_algorithm": key.signature_algorithm, "linesep": b"\r\n"}
    if key.rsa_key is None:
        signer = dkim.DKIM(message, **options)
    else:
        signer = CryptographyRsaDKIM(key.rsa_key, message, **options)
    signature: bytes = signer.sign(
        key.selector.encode("ascii"),
        key.domain.encode("ascii"),
        key.private,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=include,
    )
    return signature


def _present_headers(message: bytes) -> set[str]:
    end = message.find(b"\r\n\r\n")
    head = message if end == -1 else message[:end]
    names = set()
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            continue
        name, colon, _ = line.partition(b":")
        if colon:
            names.add(name.strip().decode("ascii", "replace").lower())
    return names


# ---------------------------------------------------------------- the server's signer


@dataclass(frozen=True, slots=True)
class SigningPlan:
    """Which signatures a message may get, decided from its envelope when DATA starts.

    ``author``: the key of the ``From:`` domain, if one fits (mail our own
    clients send out).  ``forwarder``: the SRS domain's key, for mail we
    forward (the forwarder vouches for what it relayed).  Both may apply: an
    authenticated user writing to a local address that forwards elsewhere.
    """

    author: bool
    forwarder: SigningKey | None


@dataclass(frozen=True, slots=True)
class MessageSigner:
    """The ``[[dkim.keys]]`` of a running server: which keys, if any, sign a message."""

    keys: tuple[SigningKey, ...]

    @classmethod
    def from_entries(cls, entries: Sequence[tuple[str, str, Path]]) -> MessageSigner:
        """Load ``(domain, selector, key file)`` entries; DkimKeyError for one that cannot sign."""
        return cls(tuple(load_signing_key(d, s, path) for d, s, path in entries))

    def __bool__(self) -> bool:
        return bool(self.keys)

    def key_of(self, domain: str) -> SigningKey | None:
        """The key whose domain is exactly ``domain``; a parent's key does not count.

        For the SRS domain: forwarded mail includes what strangers send, spam
        too, and signing it with the organisation's own key would tie that
        domain's reputation to it.  The operator opts in with a key of its own.
        """
        wanted = domain.rstrip(".").lower()
        return next((key for key in self.keys if key.domain == wanted), None)

    def sign(self, message: bytes, plan: SigningPlan) -> list[tuple[SigningKey, bytes]]:
        """The keys and ``DKIM-Signature:`` headers for ``message``, outermost first.

        The forwarder's signature comes first (the last one added on the way, as
        RFC 6376 5.6 prepends), then the author's.  Both are kept when both
        apply: receivers evaluate DMARC on the one aligned with ``From:``
        (RFC 7489 3.1.1), and the SRS domain's one, aligned with the rewritten
        envelope sender, builds the forwarder's own reputation.  RFC 6376 4.2
        allows several; one key never signs twice.
        """
        keys: list[SigningKey] = []
        if plan.forwarder is not None:
            keys.append(plan.forwarder)
        author = self._author_key(message) if plan.author else None
        if author is not None and author not in keys:
            keys.append(author)
        signatures = (self._signature(message, key) for key in keys)
        return [signed for signed in signatures if signed is not None]

    def _author_key(self, message: bytes) -> SigningKey | None:
        """The key of the ``From:`` domain (one address, RFC 5322 3.6.2), or None.

        None when that domain is neither a key's domain nor under it: signing
        another domain's mail as its author would vouch for what we cannot.
        """
        end = message.find(b"\r\n\r\n")
        domain = author_domain(message if end == -1 else message[: end + 4])
        return key_for(self.keys, domain) if domain else None

    @staticmethod
    def _signature(message: bytes, key: SigningKey) -> tuple[SigningKey, bytes] | None:
        import dkim

        try:
            return key, signature_header(message, key)
        except dkim.DKIMException as exc:  # a message dkimpy cannot sign leaves unsigned
            log.warning(kv(event="dkim-sign-failed", domain=key.domain, error=exc))
            return None
