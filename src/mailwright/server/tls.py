"""The server's TLS context: built from the configured PEM files, re-loadable on SIGHUP.

Every handshake uses ``current``, so a context re-loaded after a certificate
renewal serves every new handshake while sessions already in TLS keep the one
they started with: nobody is dropped.  STARTTLS and implicit TLS alike start
their handshake in the session (``loop.start_tls``) and read ``current`` then.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import cast

from mailwright.config import TlsConfig
from mailwright.logfmt import kv

log = logging.getLogger("mailwright")

#: RFC 8996 retired TLS 1.0 and 1.1; RFC 8314 4.1 asks for 1.2 or later.
MIN_TLS_VERSION = ssl.TLSVersion.TLSv1_2


def server_context(config: TlsConfig) -> ssl.SSLContext:
    """A server-side context: the system's secure ciphers, TLS 1.2 at least, no client certs."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = MIN_TLS_VERSION
    context.load_cert_chain(config.certificate, config.key)
    return context


class ServerTls:
    """The current server context, replaced as a whole by ``reload``."""

    def __init__(self, config: TlsConfig) -> None:
        self.config = config
        self.current = server_context(config)

    @property
    def handshake_timeout(self) -> float:
        return self.config.handshake_timeout

    def reload(self) -> bool:
        """Read the certificate and key again; on failure keep the old context and say so."""
        try:
            context = server_context(self.config)
        except (OSError, ssl.SSLError) as exc:
            log.error(
                kv(
                    event="tls-reload-failed",
                    certificate=self.config.certificate,
                    key=self.config.key,
                    error=exc,
                )
            )
            return False
        self.current = context
        log.info(kv(event="tls-reloaded", certificate=self.config.certificate))
        return True


async def upgrade(
    loop: asyncio.AbstractEventLoop,
    transport: asyncio.Transport,
    protocol: asyncio.Protocol,
    tls: ServerTls,
) -> asyncio.Transport | None:
    """STARTTLS's server-side handshake on a transport whose reading is paused.

    Uses ``tls.current``, so a certificate reloaded by SIGHUP serves from the
    next handshake on.  Raises OSError (ssl.SSLError, a reset, the handshake
    timeout) when it fails; None when the connection went away meanwhile.
    """
    upgraded = await loop.start_tls(
        transport,
        protocol,
        tls.current,
        server_side=True,
        ssl_handshake_timeout=tls.handshake_timeout,
    )
    return cast(asyncio.Transport, upgraded) if upgraded is not None else None


def negotiated(transport: asyncio.BaseTransport) -> tuple[str, str | None]:
    """The TLS version and cipher a transport runs, for the log."""
    ssl_object = transport.get_extra_info("ssl_object")
    cipher = transport.get_extra_info("cipher")
    version = ssl_object.version() if ssl_object is not None else None
    return version or "TLS", cipher[0] if cipher else None
