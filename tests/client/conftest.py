"""Peers for the client tests: the scriptable sink (plain and TLS) and raw scripted sockets."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

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


