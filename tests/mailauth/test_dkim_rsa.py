"""RSA signatures made by cryptography are byte for byte dkimpy's, and verify.

RSASSA-PKCS1-v1_5 is deterministic (RFC 8017 8.2.1): the same key, message and
options give the same header, so every test signs the same input both ways
and compares the bytes.  A library-level test, bytes in and bytes out; the
server's own signing is tests/mailauth/test_dkim.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dkim
import pytest

from mailwright.mailauth.dkim import (
    DkimKeyError,
    SigningKey,
    generate_private_key,
    load_signing_key,
    public_key_value,
    record_line,
    record_text,
    signature_header,
    write_private_key,
)
from mailwright.mailauth.dkim_rsa import CryptographyRsaDKIM, CryptographyRsaSigning
from tests.dns_server import LoopbackDns
from tests.mailauth.dkimdns import dkim_dnsfunc

HEADER = (
    b"From: Alice <alice@example.test>\r\n"
    b"To: Carl <carl@elsewhere.test>,\r\n"
    b"\t Dora <dora@elsewhere.test>\r\n"
    b"Subject:   folded\r\n  and spaced  \r\n"
    b"Date: Fri, 04 Dec 2026 16:00:00 +0000\r\n"
    b"Message-ID: <m1@example.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
)
#: What signature_header signs for HEADER: the headers present, then From once more.
SIGNED = [b"From", b"To", b"Subject", b"Date", b"Message-ID", b"MIME-Version", b"Content-Type"]
BODIES = {
    "short": b"Hello Carl,\r\n\r\ntrailing  spaces \t\r\n\r\n\r\n",
    "64KiB": (b"y" * 76 + b"\r\n") * 840,
    "empty": b"",
}
SELECTOR = b"s1"
DOMAIN = b"example.test"
#: Tries to sign both ways within one second: t= is signed, and the clock may tick between.
SAME_SECOND_TRIES = 5
SIGNING_THREADS = 4
THREADED_SIGNATURES = 40


def make_key(folder: Path, name: str, bits: int = 2048) -> SigningKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private_key(folder / name, pem)
    return load_signing_key(DOMAIN.decode(), SELECTOR.decode(), folder / name)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[int, SigningKey]:
    folder = tmp_path_factory.mktemp("keys")
    return {bits: make_key(folder, f"rsa{bits}", bits) for bits in (1024, 2048, 3072)}


@pytest.fixture(scope="module")
def dns(keys: dict[int, SigningKey]) -> Iterator[Callable[..., bytes]]:
    """The 2048-bit key published as s1._domainkey.example.test."""
    line = record_line("example.test", "s1", record_text(*public_key_value(keys[2048].private)))
    server = LoopbackDns(line)
    yield dkim_dnsfunc(server)
    server.stop()


def tag(header: bytes, name: bytes) -> bytes:
    tags = (part.strip().partition(b"=") for part in b"".join(header.split()).split(b";"))
    return next(value for key, _, value in tags if key.split(b":")[-1] == name)


def within_one_second(sign_both: Callable[[], tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
    """Both signatures with the same t=: signed again when the clock ticked in between."""
    for _ in range(SAME_SECOND_TRIES):
        ours, dkimpys = sign_both()
        if tag(ours, b"t") == tag(dkimpys, b"t"):
            return ours, dkimpys
    raise AssertionError(f"the clock ticked between two signatures {SAME_SECOND_TRIES} times")


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
def test_signature_header_is_dkimpys_byte_for_byte_and_verifies(
    keys: dict[int, SigningKey], dns: Callable[..., bytes], body: bytes
) -> None:
    key, message = keys[2048], HEADER + body
    assert key.rsa_key is not None

    def both() -> tuple[bytes, bytes]:
        dkimpys: bytes = dkim.sign(
            message,
            SELECTOR,
            DOMAIN,
            key.private,
            canonicalize=(b"relaxed", b"relaxed"),
            signature_algorithm=b"rsa-sha256",
            include_headers=[*SIGNED, b"From"],
            linesep=b"\r\n",
        )
        return signature_header(message, key), dkimpys

    ours, dkimpys = within_one_second(both)
    assert ours == dkimpys
    assert tag(ours, b"a") == b"rsa-sha256"
    assert dkim.verify(ours + message, dnsfunc=dns)
    assert not dkim.verify(ours + message.replace(b"Alice", b"Alicia"), dnsfunc=dns)


OPTIONS: dict[str, dict[str, Any]] = {
    "relaxed/relaxed": {"canonicalize": (b"relaxed", b"relaxed")},
    "simple/simple": {"canonicalize": (b"simple", b"simple")},
    "relaxed/simple, l=": {"canonicalize": (b"relaxed", b"simple"), "length": True},
    "i= and oversigned": {
        "identity": b"alice@mail.example.test",
        "include_headers": [b"From", b"To", b"Subject", b"Subject", b"Reply-To", b"From"],
    },
}


@pytest.mark.parametrize("bits", [1024, 2048, 3072])
@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
@pytest.mark.parametrize("linesep", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_the_dkim_signer_matches_dkimpy_for_every_option_and_key_size(
    keys: dict[int, SigningKey], bits: int, options: dict[str, Any], linesep: bytes
) -> None:
    key, message = keys[bits], (HEADER + BODIES["short"]).replace(b"\r\n", linesep)
    assert key.rsa_key is not None
    rsa_key = key.rsa_key

    def both() -> tuple[bytes, bytes]:
        ours = CryptographyRsaDKIM(rsa_key, message, linesep=linesep)
        dkimpys = dkim.DKIM(message, linesep=linesep)
        return (
            ours.sign(SELECTOR, DOMAIN, key.private, **options),
            dkimpys.sign(SELECTOR, DOMAIN, key.private, **options),
        )

    ours, dkimpys = within_one_second(both)
    assert ours == dkimpys


def test_rsa_sha1_is_left_to_dkimpy_and_still_matches(keys: dict[int, SigningKey]) -> None:
    """Not ours to speed up (RFC 8301 3.1: rsa-sha1 must not be used to sign), but not broken."""
    key, message = keys[1024], HEADER + BODIES["short"]
    assert key.rsa_key is not None
    rsa_key = key.rsa_key

    def both() -> tuple[bytes, bytes]:
        sha1 = {"signature_algorithm": b"rsa-sha1"}
        return (
            CryptographyRsaDKIM(rsa_key, message, **sha1).sign(SELECTOR, DOMAIN, key.private),
            dkim.DKIM(message, **sha1).sign(SELECTOR, DOMAIN, key.private),
        )

    ours, dkimpys = within_one_second(both)
    assert ours == dkimpys and tag(ours, b"a") == b"rsa-sha1"


class CryptographyRsaARC(CryptographyRsaSigning, dkim.ARC):
    """The mixin on dkimpy's ARC sealer, as ARC sealing with the same keys would use it."""


@pytest.mark.parametrize("standardize", [False, True])
def test_the_mixin_seals_an_arc_set_byte_for_byte_as_dkimpy(
    keys: dict[int, SigningKey], dns: Callable[..., bytes], standardize: bool
) -> None:
    """ARC-Message-Signature and ARC-Seal (RFC 8617 4.1) both go through gen_header.

    ARC takes its timestamp as an argument, so no clock is involved here.
    """
    key = keys[2048]
    assert key.rsa_key is not None
    message = (
        b"Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=alice@example.test\r\n"
        + HEADER
        + BODIES["short"]
    )
    seal = {
        "include_headers": [b"from", b"to", b"subject"],
        "timestamp": 1796400000,
        "standardize": standardize,
    }
    srv_id = b"mx.example.test"
    ours = CryptographyRsaARC(key.rsa_key, message).sign(
        SELECTOR, DOMAIN, key.private, srv_id, **seal
    )
    dkimpys = dkim.ARC(message).sign(SELECTOR, DOMAIN, key.private, srv_id, **seal)
    assert len(ours) == 3 and ours == dkimpys
    cv, _, reason = dkim.arc_verify(b"".join(ours) + message, dnsfunc=dns)
    assert cv == dkim.CV_Pass, reason


def test_the_signature_is_made_by_the_cryptography_key_not_the_pem(
    keys: dict[int, SigningKey], dns: Callable[..., bytes]
) -> None:
    """dkimpy still reads the PEM; proof that it does not sign: a different key object
    signs, and only that key's record verifies the result."""
    published, other = keys[2048], keys[3072]
    assert published.rsa_key is not None
    message = HEADER + BODIES["short"]
    signer = CryptographyRsaDKIM(published.rsa_key, message)
    header = signer.sign(SELECTOR, DOMAIN, other.private, include_headers=[b"From"])
    assert dkim.verify(header + message, dnsfunc=dns)


def test_one_key_object_signs_in_several_threads_at_once(
    keys: dict[int, SigningKey], dns: Callable[..., bytes]
) -> None:
    """The server signs in worker threads (asyncio.to_thread) with the key loaded once."""
    key = keys[2048]
    messages = [HEADER + b"message %d\r\n" % n for n in range(THREADED_SIGNATURES)]
    with ThreadPoolExecutor(max_workers=SIGNING_THREADS) as pool:
        headers = list(pool.map(lambda message: signature_header(message, key), messages))
    assert all(dkim.verify(h + m, dnsfunc=dns) for h, m in zip(headers, messages, strict=True))


def test_a_loaded_rsa_key_holds_the_same_key_for_cryptography(tmp_path: Path) -> None:
    """Loaded once at start-up; equality (``one key never signs twice``) ignores it."""
    from cryptography.hazmat.primitives import serialization

    write_private_key(tmp_path / "rsa", generate_private_key("rsa"))
    write_private_key(tmp_path / "ed", generate_private_key("ed25519"))
    first = load_signing_key("example.test", "s1", tmp_path / "rsa")
    again = load_signing_key("example.test", "s1", tmp_path / "rsa")
    assert first.rsa_key is not None and again.rsa_key is not first.rsa_key
    assert first == again and hash(first) == hash(again)
    from_file = serialization.load_pem_private_key((tmp_path / "rsa").read_bytes(), None)
    assert first.rsa_key.private_numbers() == from_file.private_numbers()  # type: ignore[union-attr]
    assert load_signing_key("example.test", "s1", tmp_path / "ed").rsa_key is None
    assert "rsa_key" not in repr(first)


def test_an_rsa_signing_key_that_cryptography_cannot_read_is_refused_when_made() -> None:
    """At start-up, with a reason, not later as unsigned mail."""
    with pytest.raises(DkimKeyError, match="not a usable RSA private key"):
        SigningKey("example.test", "s1", "rsa", b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n")
    ed25519_pem = generate_private_key("ed25519")
    with pytest.raises(DkimKeyError, match=r"algorithm rsa but a .*Ed25519"):
        SigningKey("example.test", "s1", "rsa", ed25519_pem)
