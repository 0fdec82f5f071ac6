"""What the client tools say about TLS: the negotiated session and the certificate presented.

The client records what each handshake negotiated (``TlsInfo``: version,
cipher, whether the certificate was checked, and the certificate itself in
DER); this module turns that into lines, with x509.py reading the few fields
a person checks, and says in plain words why a handshake failed.
"""

from __future__ import annotations

import ssl
from datetime import datetime

from mailwright.cli.x509 import CertificateFormatError, fingerprint, summarize
from mailwright.client import TlsError, TlsInfo


def certificate_rejected(exc: TlsError) -> bool:
    """Whether the handshake failed because the server's certificate did not verify."""
    return isinstance(exc.__cause__, ssl.SSLCertVerificationError)


def failure_reason(exc: TlsError) -> str:
    """Why a handshake failed, in the words of OpenSSL's verifier when it was the certificate."""
    cause = exc.__cause__
    if isinstance(cause, ssl.SSLCertVerificationError) and cause.verify_message:
        return f"the certificate did not verify: {cause.verify_message}"
    if isinstance(cause, ssl.SSLError) and cause.reason:
        return f"the handshake failed: {cause.reason}"
    return str(exc)


def describe_session(info: TlsInfo, now: datetime, *, certificate: bool = True) -> list[str]:
    """Lines describing a handshake and (unless ``certificate`` is False) the certificate."""
    if info.verified:
        check = f"certificate verified for {info.server_name or 'the server'}"
    else:
        check = "certificate not verified"
    lines = [f"TLS: {info.version or '?'}, cipher {info.cipher or '?'}, {check}"]
    if certificate:
        lines += _describe_certificate(info.certificate, now)
    return lines


def _describe_certificate(der: bytes | None, now: datetime) -> list[str]:
    if der is None:
        return ["certificate: the server sent no certificate"]
    try:
        cert = summarize(der)
    except CertificateFormatError as exc:
        return [f"certificate: {exc}", f"certificate SHA-256: {fingerprint(der)}"]
    issuer = "(self-signed)" if cert.self_signed else cert.issuer
    lines = [
        f"certificate subject: {cert.subject or '(empty)'}",
        f"certificate names: {', '.join(cert.names) or '(none)'}",
        f"certificate issuer: {issuer}",
    ]
    if cert.not_after is not None:
        expiry = cert.not_after.strftime("%Y-%m-%d %H:%M:%S UTC")
        if cert.not_after < now:
            expiry += " (expired)"
        elif cert.not_before is not None and cert.not_before > now:
            expiry += " (not valid yet)"
        lines.append(f"certificate valid until: {expiry}")
    lines.append(f"certificate SHA-256: {fingerprint(der)}")
    return lines
