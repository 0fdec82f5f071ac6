"""The Prometheus instruments every stage counts into, built once per App (no globals).

Why prometheus_client's multiprocess mode, and not counters sent to the delivery process:
with ``[smtp] processes`` above 1, acceptor processes receive the mail and the server
process delivers and serves ``/metrics`` (server/processes.py).  In multiprocess mode
every process writes its values into small memory-mapped files of its own, in a
directory made fresh for each run of the supervisor (``data_dir/metrics``); the server
process reads and sums them at each scrape.  An increment is in the file the moment it
is made, so a message counted as accepted is counted exactly once, however many
processes run, with nothing to lose in flight and no channel to keep open; the files of
an acceptor that died and was restarted stay, so its counts are not lost either.  The
one gauge kept by the acceptors (open sessions) is summed over live processes only
(``livesum``): the supervisor drops the files of a process that exited.  A single
process (the default) keeps its values in memory, in a registry of its own App.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client import multiprocess as prometheus_multiprocess

from mailwright.durable import make_directories

#: Acceptance to final delivery, in seconds: from a local delivery's instant to the
#: retries of days ([queue] retry and max_age).
DELIVERY_SECONDS_BUCKETS = (
    0.1, 0.5, 1, 5, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 5 * 24 * 3600,
)  # fmt: skip
#: The folder of data_dir where the processes of one run keep their values.
METRICS_DIRECTORY = "metrics"


def use_shared_directory(directory: Path) -> None:
    """In a freshly forked process, before its App is built: keep values in ``directory``.

    prometheus_client picks where values live when a metric is made, from
    ``PROMETHEUS_MULTIPROC_DIR``; the library was imported (by the supervisor) before
    the variable was set, so its choice is made again here.
    """
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    values.ValueClass = values.MultiProcessValue(_ProcessId())


class _ProcessId:
    """This process's id for prometheus_client, asked on every increment; known, not a syscall.

    The library calls its ``process_identifier`` inside each ``inc()`` to notice a fork
    (then the values move to files of the new pid); ``os.getpid()`` is a system call
    each time (glibc caches no pid), a dozen per message received.  The id is taken
    once and again in the child of every fork (``os.register_at_fork``), so a fork is
    noticed exactly as before.
    """

    def __init__(self) -> None:
        self._pid = os.getpid()
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self._pid = os.getpid()

    def __call__(self) -> int:
        return self._pid


def prepare_shared_directory(data_dir: Path) -> Path:
    """The supervisor, at start: an empty ``data_dir/metrics`` (counters survive no restart)."""
    directory = data_dir / METRICS_DIRECTORY
    make_directories(directory, 0o700)  # data_dir's missing parents too, private as app.py's
    for leftover in directory.glob("*.db"):
        leftover.unlink()
    return directory


def process_exited(directory: Path, pid: int) -> None:
    """The supervisor, when a process ended: its open sessions no longer count."""
    prometheus_multiprocess.mark_process_dead(pid, str(directory))


def exposition_registry(metrics: Metrics, shared: Path | None) -> CollectorRegistry:
    """What ``/metrics`` shows: this process's registry, or the sum over every process's files."""
    if shared is None:
        return metrics.registry
    registry = CollectorRegistry()
    prometheus_multiprocess.MultiProcessCollector(registry, path=str(shared))
    return registry


class Metrics:
    """The instruments; each stage gets this object from app.py and counts what it sees."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()

        def counter(name: str, documentation: str, *labels: str) -> Counter:
            return Counter(name, documentation, labels, registry=registry)

        self.connections = counter(
            "mailwright_smtp_connections", "SMTP connections accepted, by listener kind", "listener"
        )
        self.sessions = Gauge(
            "mailwright_smtp_sessions",
            "SMTP sessions open now, by listener kind",
            ["listener"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.replies = counter(
            "mailwright_smtp_replies",
            "Replies the server sent, by the command they answer and their code",
            "command",
            "code",
        )
        self.messages = counter("mailwright_smtp_messages", "Messages accepted (queued, 250 sent)")
        self.message_bytes = counter(
            "mailwright_smtp_message_bytes", "Octets of the messages accepted"
        )
        self.tls_handshakes = counter(
            "mailwright_tls_handshakes",
            "TLS handshakes completed by the server, by listener kind and TLS version",
            "listener",
            "version",
        )
        self.auth_failures = counter("mailwright_auth_failures", "AUTH attempts refused")
        self.delivery_attempts = counter(
            "mailwright_delivery_attempts",
            "Delivery attempts by recipient, by relay (local, remote) and status",
            "relay",
            "status",
        )
        self.delivery_seconds = Histogram(
            "mailwright_delivery_seconds",
            "Seconds from acceptance to final delivery, per recipient delivered",
            buckets=DELIVERY_SECONDS_BUCKETS,
            registry=registry,
        )
        self.remote_replies = counter(
            "mailwright_remote_replies",
            "Replies of next hops that ended a delivery attempt, by code",
            "code",
        )
        # Every reply a session writes is counted (server/counting.py): the labelled
        # child of each (command, code) is looked up once, not per reply (``labels()``
        # validates and locks, four times the cost of ``inc()``).
        self._reply_children: dict[tuple[str, str], Any] = {}
        #: The same for what every connection counts, by listener kind.
        self._session_children: dict[str, tuple[Any, Any]] = {}

    def session_opened(self, listener: str) -> None:
        """A connection accepted on a ``listener`` of that kind; one more session open."""
        connections, sessions = self._session_counters(listener)
        connections.inc()
        sessions.inc()

    def session_closed(self, listener: str) -> None:
        self._session_counters(listener)[1].dec()

    def _session_counters(self, listener: str) -> tuple[Any, Any]:
        children = self._session_children.get(listener)
        if children is None:
            children = self._session_children[listener] = (
                self.connections.labels(listener),
                self.sessions.labels(listener),
            )
        return children

    def reply_sent(self, command: str, code: str) -> None:
        """One reply of ``code`` to ``command`` (``mailwright_smtp_replies_total``)."""
        child = self._reply_children.get((command, code))
        if child is None:
            child = self._reply_children[(command, code)] = self.replies.labels(command, code)
        child.inc()
