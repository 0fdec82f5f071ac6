"""Listeners: accept connections, enforce connection limits, shut down gracefully.

One SmtpListener holds every listening socket (SMTP, submission, implicit TLS),
so the connection limits count all of them together.  Every connection counts
from the moment it is accepted.  For SMTP and submission that is the session's
``connection_made``.  Implicit TLS (RFC 8314) is accepted here, by an accept
loop of our own: the connection is counted (or closed at once, past a limit)
before a handshake is spent on it, then ``connect_accepted_socket`` runs the
handshake with the current certificate (server/tls.py, so SIGHUP reaches every
port) and the session starts inside TLS.  Silent clients that never finish a
handshake therefore fill no more than their share of the limits, for at most
``[tls] handshake_timeout``.  (Starting TLS from the session's
``connection_made`` instead loses a ClientHello that uvloop has already read.)
Per-address limits count an IPv6 client by its /64 (policy/clientkey.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from collections import Counter
from collections.abc import Sequence
from typing import Any

from mailwright.config import Config
from mailwright.logfmt import kv
from mailwright.policy.clientkey import client_key
from mailwright.protocol import replies
from mailwright.protocol.reply import Reply
from mailwright.server.services import ListenerKind, SessionServices
from mailwright.server.session import SmtpSession

log = logging.getLogger("mailwright.smtpd")

LISTEN_BACKLOG = 1024  # connections the kernel queues before we accept them
ACCEPT_RETRY_DELAY = 0.1  # seconds before accepting again after accept() failed (EMFILE ...)


def configured_endpoints(config: Config) -> tuple[tuple[ListenerKind, str, int], ...]:
    """Every address to listen on, in the listener's order: SMTP, submission, implicit TLS."""
    return (
        *((ListenerKind.SMTP, host, port) for host, port in config.smtp.listen_endpoints),
        *(
            (ListenerKind.SUBMISSION, host, port)
            for host, port in config.submission.listen_endpoints
        ),
        *(
            (ListenerKind.IMPLICIT_TLS, host, port)
            for host, port in config.submission.implicit_tls_endpoints
        ),
    )


class SmtpListener:
    """All listening sockets of the SMTP service and the sessions they accepted.

    ``services`` is what new sessions and transactions read; a reload (app.py)
    replaces it with one assignment (see SessionServices).
    """

    def __init__(
        self,
        services: SessionServices,
        listen: tuple[tuple[str, int], ...],
        *,
        submission: tuple[tuple[str, int], ...] = (),
        implicit_tls: tuple[tuple[str, int], ...] = (),
        sockets: Sequence[socket.socket] | None = None,
    ) -> None:
        """``sockets``, when given, are already bound, one per endpoint in ``endpoints``
        order (server/processes.py binds them for several processes); else each
        endpoint is bound here."""
        if (submission or implicit_tls) and services.tls is None:
            raise ValueError("submission listeners need a TLS context")
        self.services = services
        self.listen = listen
        self.endpoints: tuple[tuple[ListenerKind, str, int], ...] = (
            *((ListenerKind.SMTP, host, port) for host, port in listen),
            *((ListenerKind.SUBMISSION, host, port) for host, port in submission),
            *((ListenerKind.IMPLICIT_TLS, host, port) for host, port in implicit_tls),
        )
        if sockets is not None and len(sockets) != len(self.endpoints):
            raise ValueError("one bound socket per endpoint is needed")
        self._sockets = sockets
        self.sessions: set[SmtpSession] = set()
        self._per_ip: Counter[str] = Counter()
        self._servers: list[tuple[ListenerKind, asyncio.Server]] = []
        #: Implicit-TLS listening sockets, each with the task that accepts on it.
        self._tls_listeners: list[tuple[socket.socket, asyncio.Task[None]]] = []
        #: Implicit-TLS sessions accepted and counted, their handshake not done yet.
        self._handshakes: dict[SmtpSession, asyncio.Task[None]] = {}
        self._stopping = False

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The addresses actually bound (a configured port 0 becomes a real port), SMTP first."""
        return [address for _kind, address in self._bound()]

    def addresses_of(self, kind: ListenerKind) -> list[tuple[str, int]]:
        return [address for bound_kind, address in self._bound() if bound_kind is kind]

    def _bound(self) -> list[tuple[ListenerKind, tuple[str, int]]]:
        out = []
        for kind, server in self._servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                out.append((kind, (host, port)))
        for sock, _task in self._tls_listeners:
            host, port = sock.getsockname()[:2]
            out.append((ListenerKind.IMPLICIT_TLS, (host, port)))
        return out

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for index, (kind, host, port) in enumerate(self.endpoints):
            if kind is ListenerKind.IMPLICIT_TLS:
                self._listen_tls(self._sockets[index] if self._sockets else None, host, port)
                continue
            where: dict[str, Any]
            if self._sockets is not None:
                where = {"sock": self._sockets[index]}
            else:
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                where = {"host": host, "port": port, "family": family, "reuse_address": True}
            server = await loop.create_server(
                functools.partial(self._new_session, kind),
                **where,
                backlog=LISTEN_BACKLOG,
            )
            self._servers.append((kind, server))
        for kind, (host, port) in self._bound():
            log.info(kv(event="listening", address=f"{host}:{port}", kind=kind.value))

    def _new_session(self, kind: ListenerKind) -> SmtpSession:
        return SmtpSession(
            self.services,
            on_open=self.sessions.add,
            on_close=self._closed,
            refuse_with=self._admit,
            kind=kind,
            current=self._current_services,
        )

    def _current_services(self) -> SessionServices:
        """What a session's next transaction reads: ``services``, swapped by a reload."""
        return self.services

    # ------------------------------------------------------- implicit TLS

    def _listen_tls(self, sock: socket.socket | None, host: str, port: int) -> None:
        if sock is None:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)
        sock.setblocking(False)
        task = asyncio.get_running_loop().create_task(self._accept_tls(sock))
        self._tls_listeners.append((sock, task))

    async def _accept_tls(self, listening: socket.socket) -> None:
        """Accept until stopped; one failed accept (out of descriptors ...) stops nothing."""
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                sock, peer = await loop.sock_accept(listening)
            except OSError as exc:
                log.error(kv(event="accept-error", kind="implicit_tls", error=exc))
                await asyncio.sleep(ACCEPT_RETRY_DELAY)
                continue
            self._tls_accepted(sock, str(peer[0]), int(peer[1]))

    def _tls_accepted(self, sock: socket.socket, host: str, port: int) -> None:
        session = SmtpSession(
            self.services,
            on_open=self._tls_opened,
            on_close=self._closed,
            refuse_with=self._admit,
            kind=ListenerKind.IMPLICIT_TLS,
            admitted=True,
            current=self._current_services,
        )
        session.peer_host, session.peer_port = host, port
        # Counted with the handshakes under way, itself included, like a session in ``sessions``.
        task = asyncio.get_running_loop().create_task(self._handshake(session, sock))
        self._handshakes[session] = task
        refusal = self._admit(host)
        if refusal is not None:
            # Nothing can be said before TLS, and the handshake is what the limit saves.
            task.cancel()  # before it ever ran: it cleans nothing up itself
            del self._handshakes[session]
            self._release(host)
            sock.close()
            log.info(kv(event="refused", client=f"{host}:{port}", reply=str(refusal), tls="none"))

    async def _handshake(self, session: SmtpSession, sock: socket.socket) -> None:
        tls = self.services.tls
        assert tls is not None
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: session,
                sock,
                ssl=tls.current,
                ssl_handshake_timeout=tls.handshake_timeout,
            )
        except (OSError, asyncio.CancelledError) as exc:  # ssl.SSLError and the timeout included
            # Cancelled only by stop(): the task ends here either way, nobody awaits it.
            if self._handshakes.pop(session, None) is not None:
                self._release(session.peer_host)
            sock.close()
            log.info(
                kv(
                    event="tls-failed",
                    client=f"{session.peer_host}:{session.peer_port}",
                    error=str(exc) or type(exc).__name__,
                )
            )

    def _tls_opened(self, session: SmtpSession) -> None:
        """The handshake is done: the session counts as open from now on."""
        self._handshakes.pop(session, None)
        self.sessions.add(session)

    # ------------------------------------------------------------- limits

    def _admit(self, peer_host: str) -> Reply | None:
        """Count the connection; a reply when it is over a limit (then it is greeted with 421)."""
        smtp = self.services.config.smtp
        key = client_key(peer_host)
        self._per_ip[key] += 1
        if self._stopping:
            return replies.SHUTTING_DOWN
        if len(self.sessions) + len(self._handshakes) > smtp.max_connections:
            return replies.TOO_MANY_CONNECTIONS
        if self._per_ip[key] > smtp.max_connections_per_ip:
            return replies.TOO_MANY_CONNECTIONS_FROM_IP
        return None

    def _closed(self, session: SmtpSession) -> None:
        self.sessions.discard(session)
        self._release(session.peer_host)

    def _release(self, peer_host: str) -> None:
        key = client_key(peer_host)
        self._per_ip[key] -= 1
        if self._per_ip[key] <= 0:
            del self._per_ip[key]

    async def stop(self, grace: float) -> None:
        """Stop accepting, ask sessions to end (421 4.3.2 unless mid-DATA), wait ``grace``."""
        self._stopping = True
        for _kind, server in self._servers:
            server.close()
        for sock, task in self._tls_listeners:
            task.cancel()
            sock.close()
        for task in list(self._handshakes.values()):
            task.cancel()  # a handshake not done yet: there is no session to end gracefully
        for session in list(self.sessions):
            session.request_stop()
        waiting = [s.done for s in list(self.sessions) if not s.done.done()]
        if waiting:
            await asyncio.wait(waiting, timeout=grace)
        for session in list(self.sessions):
            session.abort()  # still in DATA when the grace period ended
        for _kind, server in self._servers:
            await server.wait_closed()
