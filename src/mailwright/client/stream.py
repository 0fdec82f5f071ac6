"""The one small stream interface the client talks through: read, write, start_tls, close.

All network access of the client role goes through ``Stream`` (as in
httpcore), and ``TcpStream`` maps the errors of asyncio, sockets and ssl to our
own (client/errors.py) in one place, ``_boundary``.  Every operation takes its
own timeout.

``TcpStream`` is an ``asyncio.Protocol`` rather than a StreamReader because of
STARTTLS: bytes the server sent after its 220 but before the handshake arrived
in plain text, and a StreamReader would hand them out afterwards as if they had
come through TLS (the STARTTLS command injection of CVE-2011-0411).  Owning the
buffer lets ``start_tls`` drop them (RFC 3207 4.2).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from typing import Protocol, cast

from mailwright.client.errors import (
    ConnectError,
    ConnectionLost,
    SmtpClientError,
    SmtpTimeout,
    TlsError,
)
from mailwright.client.tls import TlsInfo

#: Bytes received but not yet read above which we stop reading from the socket.
MAX_UNREAD = 256 * 1024
#: How long close() waits for the connection to finish closing before aborting it.
CLOSE_TIMEOUT = 5.0


class Stream(Protocol):
    """A connected byte stream.  Errors are SmtpClientError subclasses, never OSError.

    ``read`` returns ``b""`` once the peer closed; ``start_tls`` upgrades in
    place and discards anything received but not yet read.
    """

    @property
    def tls(self) -> bool: ...

    @property
    def tls_info(self) -> TlsInfo | None:
        """What the handshake negotiated; None before ``start_tls``."""
        ...

    @property
    def local_address(self) -> tuple[str, int]: ...

    async def read(self, max_bytes: int, timeout: float | None) -> bytes: ...

    async def write(self, data: bytes, timeout: float | None) -> None: ...

    async def start_tls(
        self, context: ssl.SSLContext, server_hostname: str | None, timeout: float | None
    ) -> None: ...

    async def close(self) -> None: ...


@contextlib.asynccontextmanager
async def _boundary(
    operation: str, timeout: float | None, failure: type[SmtpClientError] = ConnectionLost
) -> AsyncIterator[None]:
    """Run one operation under its timeout; translate the errors of the layers below."""
    try:
        async with asyncio.timeout(timeout):
            yield
    except SmtpClientError:
        raise
    except TimeoutError:
        raise SmtpTimeout(operation, timeout) from None
    except ssl.SSLError as exc:
        raise TlsError(f"{operation}: {exc}") from exc
    except OSError as exc:  # ConnectionError, socket.gaierror, unreachable ...
        raise failure(f"{operation}: {exc.strerror or exc}") from exc


class _Receiver(asyncio.Protocol):
    """Buffers what arrives and wakes the reader; pauses the socket when we fall behind."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: Exception | None = None
        self._reading_paused = False
        self._wakeup = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self.lost = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._wakeup.set()
        if len(self.buffer) > MAX_UNREAD and not self._reading_paused and self.transport:
            self.transport.pause_reading()
            self._reading_paused = True

    def eof_received(self) -> bool:
        self.eof = True
        self._wakeup.set()
        return False  # the server is done; let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wakeup.set()
        self._writable.set()
        self.lost.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def take(self, max_bytes: int) -> bytes:
        data = bytes(self.buffer[:max_bytes])
        del self.buffer[:max_bytes]
        self._resume_if_drained()
        return data

    def discard(self) -> None:
        self.buffer.clear()
        self._resume_if_drained()

    def _resume_if_drained(self) -> None:
        if self._reading_paused and len(self.buffer) <= MAX_UNREAD // 2 and self.transport:
            self._reading_paused = False
            self.transport.resume_reading()

    async def wait_readable(self) -> None:
        while not self.buffer and not self.eof:
            self._wakeup.clear()
            await self._wakeup.wait()

    async def wait_writable(self) -> None:
        await self._writable.wait()


class TcpStream:
    """A TCP connection (plain, then perhaps TLS), made with ``TcpStream.connect``."""

    def __init__(self, transport: asyncio.Transport, receiver: _Receiver, peer: str) -> None:
        self._transport = transport
        self._receiver = receiver
        self._peer = peer
        self._tls_info: TlsInfo | None = None

    @classmethod
    async def connect(cls, host: str, port: int, timeout: float | None) -> TcpStream:
        loop = asyncio.get_running_loop()
        peer = f"{host}:{port}"
        async with _boundary(f"connecting to {peer}", timeout, ConnectError):
            transport, receiver = await loop.create_connection(_Receiver, host, port)
        return cls(cast(asyncio.Transport, transport), receiver, peer)

    @property
    def tls(self) -> bool:
        return self._tls_info is not None

    @property
    def tls_info(self) -> TlsInfo | None:
        return self._tls_info

    @property
    def local_address(self) -> tuple[str, int]:
        sockname = self._transport.get_extra_info("sockname") or ("0.0.0.0", 0)
        return str(sockname[0]), int(sockname[1])

    async def read(self, max_bytes: int, timeout: float | None) -> bytes:
        receiver = self._receiver
        async with _boundary(f"reading from {self._peer}", timeout):
            await receiver.wait_readable()
        if receiver.buffer:
            return receiver.take(max_bytes)
        if receiver.error is not None:
            raise ConnectionLost(f"reading from {self._peer}: {receiver.error}")
        return b""

    async def write(self, data: bytes, timeout: float | None) -> None:
        receiver = self._receiver
        if self._transport.is_closing() or receiver.lost.is_set():
            raise ConnectionLost(f"writing to {self._peer}: the connection is closed")
        async with _boundary(f"writing to {self._peer}", timeout):
            self._transport.write(data)
            await receiver.wait_writable()
        if receiver.error is not None:
            raise ConnectionLost(f"writing to {self._peer}: {receiver.error}")

    async def start_tls(
        self, context: ssl.SSLContext, server_hostname: str | None, timeout: float | None
    ) -> None:
        """Upgrade to TLS in place; unread plain-text bytes are dropped (RFC 3207 4.2)."""
        loop = asyncio.get_running_loop()
        receiver = self._receiver
        if receiver.lost.is_set():
            raise ConnectionLost(f"starting TLS with {self._peer}: the connection is closed")
        receiver.discard()
        async with _boundary(f"TLS handshake with {self._peer}", timeout, TlsError):
            transport = await loop.start_tls(
                self._transport, receiver, context, server_hostname=server_hostname
            )
        if transport is None:
            raise ConnectionLost(f"TLS handshake with {self._peer}: the connection closed")
        self._transport = transport
        receiver.transport = transport
        self._tls_info = TlsInfo.of(transport.get_extra_info("ssl_object"), context)

    async def close(self) -> None:
        """Close, waiting a little for TLS close_notify and FIN; abort if that hangs."""
        self._transport.close()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._receiver.lost.wait()
        except TimeoutError:
            self._transport.abort()
