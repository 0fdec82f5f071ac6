"""Shared fixtures: a real mailwright server on a free loopback port, in a thread of its own."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import (
    BASE_CONFIG,
    RunningServer,
    make_config,
)
from tests.peers import ScriptedPeer, free_port
from tests.sink import SinkServer

#: A skip whose reason starts with this names something the machine lacks (root, a
#: mount, a service); CI has all of them, so there such a skip is a failure.
ENVIRONMENT_SKIP_PREFIX = "needs "


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Under CI (``CI`` set), a test skipped for want of root, a mount or a service fails."""
    outcome = yield
    report = outcome.get_result()
    if not os.environ.get("CI") or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    if reason.startswith(ENVIRONMENT_SKIP_PREFIX):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, where it must run: {reason}"


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    started: list[RunningServer] = []

    def start(extra: str = "", base: str = BASE_CONFIG) -> RunningServer:
        server = RunningServer(make_config(tmp_path, extra, base))
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def sink() -> Iterator[SinkServer]:
    """A scriptable SMTP peer on loopback (tests/sink.py)."""
    server = SinkServer()
    yield server
    server.stop()


@pytest.fixture
def scripted_peer() -> Iterator[Callable[[Callable[[socket.socket], None]], ScriptedPeer]]:
    """Start raw scripted peers (tests/peers.py); each is stopped and checked afterwards."""
    peers: list[ScriptedPeer] = []

    def start(script: Callable[[socket.socket], None], *, connections: int = 1) -> ScriptedPeer:
        peer = ScriptedPeer(script, connections=connections)
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        peer.stop()
        assert not peer.errors, peer.errors


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on."""
    return free_port()


@pytest.fixture
def server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    return server_factory()
