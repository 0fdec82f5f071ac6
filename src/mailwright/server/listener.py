"""Listeners: accept connections, enforce connection limits, shut down gracefully."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter

from mailwright.logfmt import kv
from mailwright.protocol import replies
from mailwright.protocol.reply import Reply
from mailwright.server.session import SessionServices, SmtpSession

log = logging.getLogger("mailwright.smtpd")


class SmtpListener:
    """All listening sockets of the SMTP service and the sessions they accepted."""

    def __init__(self, services: SessionServices, listen: tuple[tuple[str, int], ...]) -> None:
        self.services = services
        self.listen = listen
        self.sessions: set[SmtpSession] = set()
        self._per_ip: Counter[str] = Counter()
        self._servers: list[asyncio.Server] = []

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The addresses actually bound (a configured port 0 becomes a real port)."""
        out = []
        for server in self._servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                out.append((host, port))
        return out

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for host, port in self.listen:
            server = await loop.create_server(
                self._new_session,
                host,
                port,
                family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                reuse_address=True,
                backlog=1024,
            )
            self._servers.append(server)
        for host, port in self.addresses:
            log.info(kv(event="listening", address=f"{host}:{port}"))

    def _new_session(self) -> SmtpSession:
        session = SmtpSession(self.services, on_close=self._closed, refuse_with=self._admit)
        self.sessions.add(session)
        return session

    def _admit(self, peer_host: str) -> Reply | None:
        """Count the connection; a reply when it is over a limit (then it is greeted with 421)."""
        smtp = self.services.config.smtp
        self._per_ip[peer_host] += 1
        if len(self.sessions) > smtp.max_connections:
            return replies.TOO_MANY_CONNECTIONS
        if self._per_ip[peer_host] > smtp.max_connections_per_ip:
            return replies.TOO_MANY_CONNECTIONS_FROM_IP
        return None

    def _closed(self, session: SmtpSession) -> None:
        self.sessions.discard(session)
        host = session.peer_host
        self._per_ip[host] -= 1
        if self._per_ip[host] <= 0:
            del self._per_ip[host]

    async def stop(self, grace: float) -> None:
        """Stop accepting, ask sessions to end (421 4.3.2 unless mid-DATA), wait ``grace``."""
        for server in self._servers:
            server.close()
        for session in list(self.sessions):
            session.request_stop()
        tasks = [s.task for s in list(self.sessions) if s.task is not None]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1)
        for server in self._servers:
            await server.wait_closed()
