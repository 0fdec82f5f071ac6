"""Raw peers for tests: scripted TCP servers for hostile or odd behaviour, and free ports."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable


def free_port() -> int:
    """A loopback port nobody listens on: bound, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ScriptedPeer:
    """A raw TCP peer on loopback: ``script(sock)`` runs in a thread for each connection.

    For servers the core-based sink cannot be: hostile, buggy, or silent.  The
    first ``connections`` connections are served one after the other.
    """

    def __init__(self, script: Callable[[socket.socket], None], *, connections: int = 1) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        address = self._listener.getsockname()
        self.host: str = address[0]
        self.port: int = address[1]
        self.errors: list[BaseException] = []
        self.served = 0  # connections whose script has finished
        self._stopping = False
        self._thread = threading.Thread(target=self._run, args=(script, connections), daemon=True)
        self._thread.start()

    def _run(self, script: Callable[[socket.socket], None], connections: int) -> None:
        for _ in range(connections):
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            if self._stopping:  # the connection stop() made to wake us
                sock.close()
                return
            with sock:
                sock.settimeout(10)
                try:
                    script(sock)
                except OSError:
                    pass  # the client hung up: that is how these scripts end
                except BaseException as exc:
                    self.errors.append(exc)
            self.served += 1

    def stop(self) -> None:
        self._stopping = True
        if self._thread.is_alive():
            # Wake an accept() that never got its client, then let the script finish.
            with contextlib.suppress(OSError):
                socket.create_connection((self.host, self.port), timeout=1).close()
        self._thread.join(15)
        self._listener.close()


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


class Tarpit:
    """A TCP peer on loopback that accepts every connection and never says a word.

    It holds each connection open until ``stop()``, as a server that never
    greets: a delivery to it waits for a greeting that does not come.
    """

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self._listener.getsockname()[:2]
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self.accepted = 0  # connections accepted so far
        self._thread = threading.Thread(target=self._run, name="tarpit", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return  # stopped
            with self._lock:
                self._held.append(sock)
                self.accepted += 1

    def open_connections(self) -> int:
        """Connections the client has not closed yet (a closed one reads as EOF)."""
        with self._lock:
            held = list(self._held)
        open_now = 0
        for sock in held:
            try:
                sock.setblocking(False)
                if sock.recv(1, socket.MSG_PEEK) != b"":
                    open_now += 1  # it sent something (it never should): still open
            except BlockingIOError:
                open_now += 1  # nothing to read and not closed
            except OSError:
                pass  # reset
        return open_now

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(15)
        with self._lock:
            held, self._held = self._held, []
        for sock in held:
            sock.close()
