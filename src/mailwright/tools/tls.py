"""What the tools say about TLS: the negotiated session and the certificate presented.

The client library keeps its stream to itself, so the tools learn about a
handshake through the ``ssl.SSLContext`` they hand it: asyncio and uvloop both
wrap a connection with the documented ``SSLContext.wrap_bio``, and a context
that keeps the ``SSLObject`` it made can answer "which version, which cipher,
which certificate" afterwards.  One context is made per handshake.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from datetime import datetime

from mailwright.client import TlsError
from mailwright.tools.x509 import (
    CertificateFormatError,
    CertificateSummary,
    fingerprint,
    summarize,
)


class RecordingContext(ssl.SSLContext):
    """An SSLContext that remembers the SSLObject of the handshake it was used for."""

    ssl_object: ssl.SSLObject | None = None

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        obj = super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)
        self.ssl_object = obj
        return obj

    @property
    def verifies(self) -> bool:
        return self.verify_mode == ssl.CERT_REQUIRED


def verifying_context(cafile: str | None) -> RecordingContext:
    """Like ``ssl.create_default_context``: the chain and the host name are checked.

    ``cafile`` replaces the system's trust store, as it does for
    ``create_default_context(cafile=...)``.
    """
    context = RecordingContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname
    if cafile:
        context.load_verify_locations(cafile=cafile)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    return context


def unverified_context() -> RecordingContext:
    """Encrypts without checking the certificate: opportunistic TLS (RFC 7435), and
    the second look ``probe`` takes at a certificate that did not verify."""
    context = RecordingContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass(frozen=True, slots=True)
class TlsSession:
    """One completed handshake.  ``certificate`` is None when none was sent or it was unreadable
    (``certificate_problem`` then says why); ``fingerprint`` needs only the raw bytes."""

    version: str | None
    cipher: str | None
    verified: bool
    server_name: str | None
    certificate: CertificateSummary | None
    fingerprint: str | None
    certificate_problem: str | None


def session_of(context: RecordingContext) -> TlsSession | None:
    """The handshake ``context`` completed; None if it never started one or it failed."""
    obj = context.ssl_object
    if obj is None or obj.version() is None:  # no handshake, or it did not complete
        return None
    cipher = obj.cipher()
    der = obj.getpeercert(binary_form=True)
    summary = problem = None
    if der is None:
        problem = "the server sent no certificate"
    else:
        try:
            summary = summarize(der)
        except CertificateFormatError as exc:
            problem = str(exc)
    return TlsSession(
        version=obj.version(),
        cipher=cipher[0] if cipher else None,
        verified=context.verifies,
        server_name=obj.server_hostname,
        certificate=summary,
        fingerprint=fingerprint(der) if der else None,
        certificate_problem=problem,
    )


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


def describe_session(session: TlsSession, now: datetime, *, certificate: bool = True) -> list[str]:
    """Lines describing a handshake and (unless ``certificate`` is False) the certificate."""
    if session.verified:
        check = f"certificate verified for {session.server_name or 'the server'}"
    else:
        check = "certificate not verified"
    lines = [f"TLS: {session.version or '?'}, cipher {session.cipher or '?'}, {check}"]
    if not certificate:
        return lines
    cert = session.certificate
    if cert is not None:
        lines.append(f"certificate subject: {cert.subject or '(empty)'}")
        lines.append(f"certificate names: {', '.join(cert.names) or '(none)'}")
        issuer = "(self-signed)" if cert.self_signed else cert.issuer
        lines.append(f"certificate issuer: {issuer}")
        if cert.not_after is not None:
            expiry = cert.not_after.strftime("%Y-%m-%d %H:%M:%S UTC")
            if cert.not_after < now:
                expiry += " (expired)"
            elif cert.not_before is not None and cert.not_before > now:
                expiry += " (not valid yet)"
            lines.append(f"certificate valid until: {expiry}")
    elif session.certificate_problem:
        lines.append(f"certificate: {session.certificate_problem}")
    if session.fingerprint:
        lines.append(f"certificate SHA-256: {session.fingerprint}")
    return lines
