"""Several server processes on one machine, one per core, sharing the listening ports.

One asyncio process runs Python on one core at a time; on a busy server that
core is the limit while the others idle.  With ``[smtp] processes = N`` (or
"auto": one per core), ``mailwright serve`` becomes a small supervisor that,
before any thread or event loop exists:

1. binds every listening address N times with SO_REUSEPORT, so the kernel
   spreads new connections over N sockets (one per receiving process)
   instead of waking every process for each one;
2. forks the *server* process: it holds ``queue.lock``, recovers the queue
   and delivers; it takes no connections, so receiving never waits behind
   delivery work in one event loop (measured: with the server also receiving,
   its half of the sessions ran slower and delivery fell further behind);
3. once the server has opened the queue, forks N *acceptors*: they receive
   and enqueue only (queue role "acceptor", which shares the SQLite queue
   through its cross-process write lock) and write one byte into a pipe
   after each message to wake the server's delivery.

The supervisor then only waits: SIGTERM, SIGINT and SIGHUP are passed on to
every process (each shuts down gracefully, or reloads its configuration, app.py).
On SIGHUP the supervisor reads the file again too, silently (the processes log),
so that an acceptor it starts later runs what the others reloaded.  It writes the
pid file ``mailwright reload`` signals (server/pidfile.py).  An
acceptor that dies is started again; if the server process dies, the others
are stopped and ``serve`` exits 1, for the service manager to restart it.
Children get SIGTERM if the supervisor itself dies (Linux PR_SET_PDEATHSIG).

Connection limits (``max_connections``, ``max_connections_per_ip``) are
counted by each process for its own connections.  Metrics are kept by every
process in files of ``data_dir/metrics`` and summed by the server process's
``/metrics`` (metrics.py says why).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from mailwright.config import Config
from mailwright.config.reload import reread
from mailwright.errors import ConfigError, StorageError
from mailwright.logfmt import kv
from mailwright.metrics import prepare_shared_directory, process_exited, use_shared_directory
from mailwright.server.listener import configured_endpoints
from mailwright.server.pidfile import pid_file_of, remove_pid_file, write_pid_file

log = logging.getLogger("mailwright")

#: An acceptor that dies this soon after its start is restarted only after a pause,
#: so a process that cannot start does not spin.
RESTART_PAUSE = 1.0
_PR_SET_PDEATHSIG = 1

RunLoop = Callable[[Coroutine[Any, Any, None]], None]


def bind_sockets(endpoints: Sequence[tuple[str, int]], copies: int) -> list[list[socket.socket]]:
    """For each (host, port), ``copies`` sockets bound to one port with SO_REUSEPORT.

    A port 0 becomes the port the first socket got, so all copies share it.
    Raises OSError (closing what was bound) when an address cannot be bound.
    """
    groups: list[list[socket.socket]] = []
    try:
        for host, port in endpoints:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            if port:
                _refuse_if_taken(family, host, port)
            group: list[socket.socket] = []
            groups.append(group)
            for _ in range(copies):
                sock = socket.socket(family, socket.SOCK_STREAM)
                group.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((host, port))
                port = sock.getsockname()[1]
    except OSError:
        for group in groups:
            for sock in group:
                sock.close()
        raise
    return groups


def _refuse_if_taken(family: socket.AddressFamily, host: str, port: int) -> None:
    """OSError (address in use) when something already listens on (host, port).

    SO_REUSEPORT lets any process of the same user bind a port that sockets
    with that option hold: a second mailwright started by mistake would share
    the port with the first and take half its connections, into another
    queue.  A plain bind first fails as a single process's would.
    """
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        probe.bind((host, port))


def _die_with_parent(parent: int) -> None:
    """Ask Linux to send us SIGTERM when the supervisor dies (no orphans holding the port)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        os._exit(1)


class Supervisor:
    """Starts the server and acceptor processes, passes signals on, restarts acceptors."""

    def __init__(self, config: Config, run_loop: RunLoop) -> None:
        self.config = config
        self.count = config.smtp.processes
        self._run_loop = run_loop
        self._groups = bind_sockets(
            [(h, p) for _k, h, p in configured_endpoints(config)], self.count
        )
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._children: dict[int, int] = {}  # pid -> process index
        self._started: dict[int, float] = {}
        self._stopping = False
        self._metrics_dir = prepare_shared_directory(config.data_dir)

    @property
    def ports(self) -> list[int]:
        return [group[0].getsockname()[1] for group in self._groups]

    # ------------------------------------------------------------ children

    def _fork(self, index: int, ready_fd: int | None) -> int:
        supervisor = os.getpid()
        # What the supervisor has imported is shared with every child page by page;
        # a collection in a child would write to those pages (the gc's links live in
        # each object) and copy them.  Frozen objects are never collected.
        gc.freeze()
        pid = os.fork()
        if pid:
            self._children[pid] = index
            self._started[index] = time.monotonic()
            return pid
        code = 1
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            # Until the App handles it: a reload passed on now must not end the process.
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            _die_with_parent(supervisor)
            code = self._child(index, ready_fd)
        except (OSError, StorageError) as exc:  # e.g. the queue is held by another server
            print(f"mailwright: cannot start: {exc}", file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)

    def _child(self, index: int, ready_fd: int | None) -> int:
        from mailwright.app import App

        mine = []
        for group in self._groups:
            for position, sock in enumerate(group):
                if position == index - 1:  # acceptor i takes copy i-1; the server none
                    mine.append(sock)
                else:
                    sock.close()
        server = index == 0
        os.close(self._wake_write if server else self._wake_read)
        use_shared_directory(self._metrics_dir)
        app = App(
            self.config,
            role="server" if server else "acceptor",
            sockets=None if server else mine,
            receive=not server,
            wake_fd=self._wake_read if server else self._wake_write,
            shared_metrics=self._metrics_dir,
        )
        self._run_loop(app.serve_forever(ready_fd))
        return 0

    # ------------------------------------------------------------ supervisor

    def run(self) -> int:
        """Start every process and wait; the exit code for ``mailwright serve``."""
        ready_read, ready_write = os.pipe()
        server = self._fork(0, ready_write)
        os.close(ready_write)
        started = os.read(ready_read, 1)
        os.close(ready_read)
        if not started:  # the server process could not start; it said why
            _pid, status = os.waitpid(server, 0)
            self._children.clear()
            return os.waitstatus_to_exitcode(status) or 1
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        signal.signal(signal.SIGHUP, self._reload)
        pid_file = pid_file_of(self.config.data_dir)
        write_pid_file(pid_file)
        try:
            for index in range(1, self.count + 1):
                self._fork(index, None)
            log.info(kv(event="processes", count=self.count, supervisor=os.getpid()))
            return self._wait()
        finally:
            remove_pid_file(pid_file)

    def _reload(self, signum: int, _frame: object) -> None:
        """SIGHUP: keep the file's new content for acceptors started later, pass it on."""
        with contextlib.suppress(ConfigError):  # the processes say why; the old one stays
            self.config = reread(self.config).config
        self._pass_on(signum, None)

    def _stop(self, signum: int, _frame: object) -> None:
        self._stopping = True
        self._pass_on(signal.SIGTERM, None)

    def _pass_on(self, signum: int, _frame: object) -> None:
        for pid in list(self._children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _wait(self) -> int:
        result = 0
        while self._children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            index = self._children.pop(pid, None)
            if index is None:
                continue
            process_exited(self._metrics_dir, pid)
            code = os.waitstatus_to_exitcode(status)
            if self._stopping:
                result = result or (1 if code else 0)
                continue
            log.error(kv(event="process-exited", index=index, pid=pid, code=code))
            if index == 0:  # the server process: stop everything, let the manager restart us
                self._stop(signal.SIGTERM, None)
                result = 1
                continue
            if time.monotonic() - self._started[index] < RESTART_PAUSE:
                time.sleep(RESTART_PAUSE)
            if not self._stopping:
                self._fork(index, None)
        return result
