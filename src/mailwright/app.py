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
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from mailwright.config import Config
from mailwright.config import reload as config_reload
from mailwright.config.checks import deprecations
from mailwright.delivery.remote import SmtpDeliverer
from mailwright.delivery.reports import DsnReporter
from mailwright.delivery.routes import RouteResolver
from mailwright.delivery.worker import DeliveryWorker
from mailwright.durable import make_directories
from mailwright.errors import ConfigError
from mailwright.logfmt import kv
from mailwright.mailauth.dkim import DkimKeyError
from mailwright.mailauth.dns import Resolver
from mailwright.metrics import Metrics
from mailwright.policy.relay import RelayPolicy
from mailwright.policy.routing import Router
from mailwright.queue.choose import build_queue_store, wake_on_new_mail
from mailwright.server.listener import SmtpListener
from mailwright.server.pidfile import remove_pid_file, write_pid_file
from mailwright.server.services import SessionServices
from mailwright.server.tls import ServerTls

if TYPE_CHECKING:
    from mailwright.http.server import AdminServer

log = logging.getLogger("mailwright")

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
        shared_metrics: Path | None = None,
    ) -> None:
        """``sockets``: pre-bound listening sockets (else the listener binds its own).
        ``wake_fd``: a pipe to the server process: its read end for the server role
        (any byte wakes the delivery worker), its write end for an acceptor (one
        byte after each message it queued).  ``shared_metrics``: the folder where
        every process of a supervisor keeps its metrics (metrics.py), None alone."""
        self.config = config
        self.metrics = Metrics()
        self._shared_metrics = shared_metrics
        self.role = role
        self.receive = receive
        self._wake_fd = wake_fd
        self.store = build_queue_store(config, "server" if role == "server" else "acceptor")
        router = Router(config)
        self.reporter = DsnReporter(
            hostname=config.hostname,
            store=self.store,
            router=router,
            routed_domains=config.routes.keys(),
        )
        # The one resolver of every DNS lookup ([dns]), built here and passed down.
        self.dns = Resolver.from_config(config)
        self.remote = SmtpDeliverer(config, self.store, RouteResolver(config, self.dns))
        self.worker = DeliveryWorker(
            config, self.store, remote=self.remote, reporter=self.reporter, metrics=self.metrics
        )
        if role == "server":
            wake_on_new_mail(self.store, self.worker.wake)  # mail queued by the other nodes
        services = SessionServices(
            config=config,
            router=router,
            relay=RelayPolicy(config),
            store=self.store,
            on_enqueued=self.worker.wake if role == "server" else self._wake_server,
            tls=ServerTls(config.tls) if config.tls is not None else None,
            resolver=self.dns,
            metrics=self.metrics,
        )
        self.listener = SmtpListener(
            services,
            config.smtp.listen_endpoints,
            submission=config.submission.listen_endpoints,
            implicit_tls=config.submission.implicit_tls_endpoints,
            sockets=sockets,
        )
        self._worker_task: asyncio.Task[None] | None = None
        #: The admin listener ([http]), in the process that delivers; built at start.
        self.http: AdminServer | None = None
        self._stop_requested = asyncio.Event()

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return self.listener.addresses

    @property
    def services(self) -> SessionServices:
        """What new sessions and transactions read now (swapped whole by ``reload``)."""
        return self.listener.services

    @property
    def tls(self) -> ServerTls | None:
        return self.services.tls

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
            await self._start_http()
            self._worker_task = asyncio.create_task(self.worker.run())
        log.info(kv(event="started", role=self.role, pid=os.getpid()))

    async def _start_http(self) -> None:
        if self.config.http.listen is None:
            return
        from mailwright.http.server import AdminServer  # aiohttp only where it is used

        self.http = AdminServer(
            self.config,
            self.store,
            self.metrics,
            shared_metrics=self._shared_metrics,
            listening=lambda: not self.receive or bool(self.listener.addresses),
        )
        await self.http.start()

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

    async def stop(self, grace: float | None = None) -> None:
        """Shut down (SIGTERM); ``grace`` None: ``[smtp] shutdown_timeout``.

        At once: no new connection is accepted, sessions between commands get
        ``421 4.3.2`` and are closed, and no delivery is claimed.  For up to
        ``grace`` seconds, at the same time, a message body being received
        (DATA or BDAT) may finish, its 250 sent once the message is on disk, and
        delivery attempts under way may end.  Then whatever is left is cut: a
        session without a 250 (the client still has the message and retries), an
        attempt without its result, whose claim the next start releases (the
        queue's recovery), so it is tried again: never lost, at worst sent twice
        if it was cut after the end of its data (RFC 5321 6.1 allows a duplicate,
        never a loss).
        """
        if grace is None:
            grace = self.config.smtp.shutdown_timeout
        log.info(kv(event="stopping", sessions=len(self.listener.sessions), grace=grace))
        if self.http is not None:
            await self.http.stop()
        if self.role == "server" and self._wake_fd is not None:
            asyncio.get_running_loop().remove_reader(self._wake_fd)
        await asyncio.gather(self.listener.stop(grace), self.worker.stop(grace))
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
        """Re-read the certificate and key for new handshakes only; sessions stay up."""
        if self.tls is not None:
            self.tls.reload()

    def reload(self) -> bool:
        """SIGHUP: read the configuration file again and apply it; False when it is refused.

        What can change while running (config/reload.py) applies to new sessions
        and to the next transaction of open ones (SessionServices): one new
        SessionServices swapped into the listener, and delivery's routing
        swapped the same way.  No connection is dropped.  A file that does not
        load or check leaves everything as it was, with one error line naming
        the key.  Only the server role speaks of the file (an error, the keys that
        need a restart): the acceptors read the same file and would repeat it.
        Reading and checking take the event loop for a few milliseconds, once per
        reload; the swap itself is a few assignments with no await between them.
        """
        speaks = logging.ERROR if self.role == "server" else logging.DEBUG
        try:
            reread = config_reload.reread(self.config)
            services = self.listener.services.reloaded(reread.config)
        except ConfigError as exc:
            log.log(speaks, kv(event="reload-failed", key=exc.key, problem=exc.problem))
            return False
        except OSError as exc:  # ssl.SSLError too: a TLS file changed since its check
            log.log(speaks, kv(event="reload-failed", key="tls", problem=exc))
            return False
        except DkimKeyError as exc:  # a key file changed since its check
            log.log(speaks, kv(event="reload-failed", key="dkim.keys", problem=exc))
            return False
        config = reread.config
        if reread.needs_restart:
            log.log(
                logging.WARNING if self.role == "server" else logging.DEBUG,
                kv(event="reload-needs-restart", keys=",".join(reread.needs_restart)),
            )
        self.config = config
        self.listener.services = services
        self.remote.reload(config, RouteResolver(config, self.dns))
        self.reporter.reload(services.router, config.routes.keys())
        log.info(kv(event="reloaded", role=self.role, pid=os.getpid(), source=config.source))
        return True

    async def serve_forever(
        self, ready_fd: int | None = None, pid_file: Path | None = None
    ) -> None:
        """Run until SIGTERM or SIGINT, then shut down gracefully; SIGHUP reloads.

        ``ready_fd``: a pipe on which one byte says "started" (to the supervisor).
        ``pid_file``: written once started (SIGHUP is handled by then), removed at
        the end, for ``mailwright reload``.
        """
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        await self.start()
        if ready_fd is not None:
            os.write(ready_fd, b"r")
            os.close(ready_fd)
        if pid_file is not None:
            write_pid_file(pid_file)
        try:
            await self._stop_requested.wait()
        finally:
            await self.stop()
            if pid_file is not None:
                remove_pid_file(pid_file)
