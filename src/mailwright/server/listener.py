"""Listeners: accept connections, enforce connection limits, shut down gracefully.

One SmtpListener holds every listening socket (SMTP, submission, implicit TLS),
so the connection limits count all of them together.  Every connection counts
from the moment it is accepted (``connection_made``): an implicit-TLS session
runs its handshake itself after that (server/session.py), so silent clients
that never finish a handshake fill no more than their share of the limits.
Per-address limits count an IPv6 client by its /64 (policy/clientkey.py).
"""

from __future__ import annotations

import asyncio
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
from mailwright.server.session import ListenerKind, SessionServices, SmtpSession

log = logging.getLogger("mailwright.smtpd")

LISTEN_BACKLOG = 1024  # connections the kernel queues before we accept them


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
    """All listening sockets of the SMTP service and the sessions they accepted."""

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
        return out

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for index, (kind, host, port) in enumerate(self.endpoints):
            where: dict[str, Any]
            if self._sockets is not None:
                where = {"sock": self._sockets[index]}
            else:
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                where = {"host": host, "port": port, "family": family, "reuse_address": True}
            server = await loop.create_server(
                lambda kind=kind: self._new_session(kind),
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
        )

    def _admit(self, peer_host: str) -> Reply | None:
        """Count the connection; a reply when it is over a limit (then it is greeted with 421)."""
        smtp = self.services.config.smtp
        self._per_ip[client_key(peer_host)] += 1
        if self._stopping:  # e.g. a TLS handshake that finished after stop() began
            return replies.SHUTTING_DOWN
        if len(self.sessions) > smtp.max_connections:
            return replies.TOO_MANY_CONNECTIONS
        if self._per_ip[client_key(peer_host)] > smtp.max_connections_per_ip:
            return replies.TOO_MANY_CONNECTIONS_FROM_IP
        return None

    def _closed(self, session: SmtpSession) -> None:
        self.sessions.discard(session)
        host = client_key(session.peer_host)
        self._per_ip[host] -= 1
        if self._per_ip[host] <= 0:
            del self._per_ip[host]

    async def stop(self, grace: float) -> None:
        """Stop accepting, ask sessions to end (421 4.3.2 unless mid-DATA), wait ``grace``."""
        self._stopping = True
        for _kind, server in self._servers:
            server.close()
        for session in list(self.sessions):
            session.request_stop()
        waiting = [s.done for s in list(self.sessions) if not s.done.done()]
        if waiting:
            await asyncio.wait(waiting, timeout=grace)
        for session in list(self.sessions):
            session.abort()  # still in DATA when the grace period ended
        for _kind, server in self._servers:
            await server.wait_closed()
