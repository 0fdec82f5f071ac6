"""The composition root: builds the queue, policy, listeners and workers from a Config.

Nothing else in mailwright constructs long-lived parts or keeps globals; tests
build an App exactly as ``mailwright serve`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Sequence
from typing import Literal

from mailwright.config import Config
from mailwright.config.checks import deprecations
from mailwright.delivery.dsn import DsnBouncer
from mailwright.delivery.remote import SmtpDeliverer
from mailwright.delivery.routes import RouteResolver
from mailwright.delivery.worker import DeliveryWorker
from mailwright.durable import make_directories
from mailwright.logfmt import kv
from mailwright.mailauth.dns import Resolver
from mailwright.policy.relay import RelayPolicy
from mailwright.policy.routing import Router
from mailwright.queue.choose import build_queue_store, wake_on_new_mail
from mailwright.server.listener import SmtpListener
from mailwright.server.services import SessionServices
from mailwright.server.tls import ServerTls

log = logging.getLogger("mailwright")

SHUTDOWN_GRACE = 10.0  # seconds a transaction in DATA may take to finish at shutdown
#: Mode of data_dir (and missing parents) when mailwright creates it: the queue, the
#: spool and the Maildirs in it are private, and so are their names (queue ids,
#: local parts).  An existing data_dir keeps the mode the operator gave it.
DATA_DIR_MODE = 0o700


#: "server" runs everything; "acceptor" only receives and enqueues, for a server
#: process of the same data_dir that delivers (server/processes.py).
AppRole = Literal["server", "acceptor"]


class App:
    def __init__(
        self,
        config: Config,
        *,
        role: AppRole = "server",
        sockets: Sequence[socket.socket] | None = None,
        wake_fd: int | None = None,
        receive: bool = True,
    ) -> None:
        """``sockets``: pre-bound listening sockets (else the listener binds its own).
        ``wake_fd``: a pipe to the server process: its read end for the server role
        (any byte wakes the delivery worker), its write end for an acceptor (one
        byte after each message it queued)."""
        self.config = config
        self.role = role
        self.receive = receive
        self._wake_fd = wake_fd
        self.store = build_queue_store(config, "server" if role == "server" else "acceptor")
        router = Router(config)
        bouncer = DsnBouncer(
            hostname=config.hostname,
            store=self.store,
            router=router,
            routed_domains=config.routes.keys(),
        )
        # The one resolver of every DNS lookup ([dns]), built here and passed down.
        self.dns = Resolver.from_config(config)
        self.remote = SmtpDeliverer(config, self.store, RouteResolver(config, self.dns))
        self.worker = DeliveryWorker(config, self.store, remote=self.remote, bouncer=bouncer)
        if role == "server":
            wake_on_new_mail(self.store, self.worker.wake)  # mail queued by the other nodes
        # Built once; SIGHUP re-reads the certificate and key (reload_tls).
        self.tls = ServerTls(config.tls) if config.tls is not None else None
        self.services = SessionServices(
            config=config,
            router=router,
            relay=RelayPolicy(config),
            store=self.store,
            on_enqueued=self.worker.wake if role == "server" else self._wake_server,
            tls=self.tls,
            resolver=self.dns,
        )
        self.listener = SmtpListener(
            self.services,
            config.smtp.listen_endpoints,
            submission=config.submission.listen_endpoints,
            implicit_tls=config.submission.implicit_tls_endpoints,
            sockets=sockets,
        )
        self._worker_task: asyncio.Task[None] | None = None
        self._stop_requested = asyncio.Event()

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return self.listener.addresses

    async def start(self) -> None:
        for line in deprecations(self.config) if self.role == "server" else ():
            log.warning(kv(event="deprecated", problem=line))
        make_directories(self.config.data_dir, DATA_DIR_MODE)
        await self.store.open()
        if self.receive:
            await self.listener.start()
        if self.role == "server":
            if self._wake_fd is not None:
                asyncio.get_running_loop().add_reader(self._wake_fd, self._woken)
            self._worker_task = asyncio.create_task(self.worker.run())
        log.info(kv(event="started", role=self.role, pid=os.getpid()))

    def _wake_server(self, queue_id: str) -> None:
        """Acceptor: tell the server process's delivery worker that mail is waiting."""
        if self._wake_fd is not None:
            # A full pipe already holds a wake-up; the worker also polls.
            with contextlib.suppress(BlockingIOError, BrokenPipeError):
                os.write(self._wake_fd, b"!")

    def _woken(self) -> None:
        assert self._wake_fd is not None
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_fd, 65536)
        self.worker.wake()

    async def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        log.info(kv(event="stopping", sessions=len(self.listener.sessions)))
        await self.listener.stop(grace)
        if self.role == "server" and self._wake_fd is not None:
            asyncio.get_running_loop().remove_reader(self._wake_fd)
        await self.worker.stop(grace)
        await self.remote.close()
        if self._worker_task is not None:
            self._worker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker_task
        await self.store.close()
        log.info(kv(event="stopped"))

    def request_stop(self) -> None:
        self._stop_requested.set()

    def reload_tls(self) -> None:
        """SIGHUP: re-read the certificate and key for new handshakes; sessions stay up."""
        if self.tls is not None:
            self.tls.reload()

    async def serve_forever(self, ready_fd: int | None = None) -> None:
        """Run until SIGTERM or SIGINT, then shut down gracefully; SIGHUP re-reads TLS files.

        ``ready_fd``: a pipe on which one byte says "started" (to the supervisor).
        """
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload_tls)
        await self.start()
        if ready_fd is not None:
            os.write(ready_fd, b"r")
            os.close(ready_fd)
        try:
            await self._stop_requested.wait()
        finally:
            await self.stop()
