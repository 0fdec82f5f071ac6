"""Peers for the client tests: the scriptable sink (plain and TLS) and raw scripted sockets."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator

import pytest
import trustme

from tests.sink import SinkServer


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("sink.test", "127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    """Trusts the test CA only, and checks the host name."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
def tls_sink(server_tls: ssl.SSLContext) -> Iterator[SinkServer]:
    server = SinkServer(tls=server_tls)
    yield server
    server.stop()


class ScriptedPeer:
    """A raw TCP peer on loopback: ``script(sock)`` runs in a thread for one connection.

    For servers the core-based sink cannot be: hostile, buggy, or silent.
    """

    def __init__(self, script: Callable[[socket.socket], None]) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        address = self._listener.getsockname()
        self.host: str = address[0]
        self.port: int = address[1]
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(script,), daemon=True)
        self._thread.start()

    def _run(self, script: Callable[[socket.socket], None]) -> None:
        try:
            sock, _ = self._listener.accept()
        except OSError:
            return
        with sock:
            sock.settimeout(10)
            try:
                script(sock)
            except OSError:
                pass  # the client hung up: that is how these scripts end
            except BaseException as exc:
                self.errors.append(exc)

    def stop(self) -> None:
        if self._thread.is_alive():
            # Wake an accept() that never got its client, then let the script finish.
            with contextlib.suppress(OSError):
                socket.create_connection((self.host, self.port), timeout=1).close()
        self._thread.join(15)
        self._listener.close()


@pytest.fixture
def scripted_peer() -> Iterator[Callable[[Callable[[socket.socket], None]], ScriptedPeer]]:
    peers: list[ScriptedPeer] = []

    def start(script: Callable[[socket.socket], None]) -> ScriptedPeer:
        peer = ScriptedPeer(script)
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        peer.stop()
        assert not peer.errors, peer.errors


def read_line(sock: socket.socket, buffer: bytearray) -> bytes:
    """One CRLF-terminated line from ``sock`` (without CRLF), keeping extra bytes in ``buffer``."""
    while b"\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("client closed")
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\r\n")
    buffer[:] = rest
    return line
