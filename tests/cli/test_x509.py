"""The small DER reader that shows which certificate a server presented."""

from __future__ import annotations

import hashlib
import ssl
from datetime import UTC, datetime

import pytest
import trustme

from mailwright.cli.x509 import CertificateFormatError, fingerprint, summarize


def der(pem: bytes) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.decode("ascii"))


def test_a_leaf_certificate(ca: trustme.CA) -> None:
    leaf = ca.issue_cert(
        "mx.example.test", "192.0.2.7", "2001:db8::1", common_name="mx.example.test"
    )
    summary = summarize(der(leaf.cert_chain_pems[0].bytes()))
    assert summary.names == ("DNS:mx.example.test", "IP:192.0.2.7", "IP:2001:db8::1")
    assert "CN=mx.example.test" in summary.subject
    assert summary.issuer.startswith("O=trustme")
    assert not summary.self_signed
    assert summary.not_after is not None and summary.not_after > datetime(2100, 1, 1, tzinfo=UTC)


def test_a_self_signed_certificate(ca: trustme.CA) -> None:
    summary = summarize(der(ca.cert_pem.bytes()))
    assert summary.self_signed and summary.names == ()


def test_the_fingerprint_is_sha256_of_the_der_bytes(ca: trustme.CA) -> None:
    data = der(ca.cert_pem.bytes())
    assert fingerprint(data).replace(":", "") == hashlib.sha256(data).hexdigest().upper()
    assert len(fingerprint(data).split(":")) == 32


@pytest.mark.parametrize(
    "data",
    [b"", b"\x30", b"\x30\x05\x02\x01", b"\x30\x84\xff\xff\xff\xff", b"\x04\x00", b"\x30\x00"],
)
def test_garbage_is_a_format_error_not_a_crash(data: bytes) -> None:
    with pytest.raises(CertificateFormatError):
        summarize(data)


def test_a_truncated_certificate_is_a_format_error(ca: trustme.CA) -> None:
    data = der(ca.cert_pem.bytes())
    for cut in (10, len(data) // 2, len(data) - 1):
        with pytest.raises(CertificateFormatError):
            summarize(data[:cut])
