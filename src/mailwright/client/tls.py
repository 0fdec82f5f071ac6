"""The client's TLS: what a policy asks of STARTTLS, the contexts it uses, what a handshake gave.

One vocabulary for every caller of ``open_session`` (client/connect.py): the
delivery worker (``delivery.tls`` and a route's ``tls``), ``mailwright send``
(``--starttls``, ``--no-starttls``, ``--no-verify``) and ``mailwright probe``.
"""

from __future__ import annotations

import enum
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class TlsMode(enum.Enum):
    """What to do about STARTTLS (RFC 3207).  The values are ``delivery.tls``'s words."""

    #: Never send STARTTLS, even when offered.
    NEVER = "never"
    #: STARTTLS when offered; when it fails, plain text, which is what the session
    #: would have had anyway (RFC 7435 opportunistic security).
    OPPORTUNISTIC = "opportunistic"
    #: STARTTLS or no session; the certificate is not checked.
    REQUIRED = "required"
    #: STARTTLS or no session, with a certificate valid for the server's name.
    VERIFY = "verify"


ContextFactory = Callable[[], ssl.SSLContext]


def verifying_context(cafile: str | Path | None = None) -> ssl.SSLContext:
    """Checks the chain and the host name (``ssl.create_default_context``), TLS 1.2 or later.

    ``cafile`` replaces the system's trust store, as it does for
    ``create_default_context(cafile=...)``.
    """
    context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def opportunistic_tls_context() -> ssl.SSLContext:
    """A context that encrypts without checking the certificate.

    For opportunistic STARTTLS (RFC 7435, RFC 3207 4.1): the alternative to an
    unauthenticated TLS session is plain text, not a verified one.  Also what
    ``required`` uses, and the second look ``probe`` takes at a certificate that
    did not verify.
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass(frozen=True, slots=True)
class TlsPolicy:
    """How ``open_session`` treats STARTTLS on one destination.

    ``contexts`` are tried in order, one handshake each, a new connection after
    each failed one (a failed handshake leaves the connection unusable); after
    the last, OPPORTUNISTIC goes on in plain text on a new connection and the
    other modes give up.  By default one context that fits the mode: checking
    (with ``cafile``) for VERIFY, encrypting only for the others.  A factory is
    called for each handshake, so no context is shared between connections.
    ``server_hostname`` is the name the certificate must be valid for (default:
    the host connected to).
    """

    mode: TlsMode = TlsMode.OPPORTUNISTIC
    contexts: tuple[ContextFactory, ...] = ()
    server_hostname: str | None = None
    cafile: str | Path | None = None

    @property
    def required(self) -> bool:
        return self.mode in (TlsMode.REQUIRED, TlsMode.VERIFY)

    def context_factories(self) -> tuple[ContextFactory, ...]:
        if self.contexts:
            return self.contexts
        if self.mode is TlsMode.VERIFY:
            cafile = self.cafile
            return (lambda: verifying_context(cafile),)
        return (opportunistic_tls_context,)


@dataclass(frozen=True, slots=True)
class TlsInfo:
    """What one completed handshake negotiated, kept after the connection closes.

    ``certificate`` is the server's certificate in DER, None when it sent none;
    ``verified`` says whether the context checked it (and so the chain and the
    name were good, or there would be no session).
    """

    version: str | None
    cipher: str | None
    verified: bool
    server_name: str | None
    certificate: bytes | None

    @classmethod
    def of(cls, ssl_object: object, context: ssl.SSLContext) -> TlsInfo:
        """From the transport's ``ssl_object`` (asyncio's and uvloop's both give one)."""
        verified = context.verify_mode == ssl.CERT_REQUIRED
        if not isinstance(ssl_object, ssl.SSLObject):
            return cls(None, None, verified, None, None)
        cipher = ssl_object.cipher()
        return cls(
            version=ssl_object.version(),
            cipher=cipher[0] if cipher else None,
            verified=verified,
            server_name=ssl_object.server_hostname,
            certificate=ssl_object.getpeercert(binary_form=True),
        )
