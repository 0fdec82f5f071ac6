"""AUTH guessing across connections against a real server (issue 12, item 8).

Failures are counted per client address, not per connection: reconnecting
does not start over.  127.0.0.2 is a second client on Linux loopback
(``source_address``), to show that the lockout is the guessing address's alone
and never the account's.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from mailwright.passwords import hash_password
from mailwright.server.session import ListenerKind
from tests.helpers import RawClient, RunningServer
from tests.server.test_tls_auth import (
    ALICE,
    ALICE_PASSWORD,
    SERVER_NAME,
    TLS_CONFIG,
    address,
    ehlo,
    greet,
    plain,
    start_tls,
    write_pems,
)

DAVE = "dave@example.test"
DAVE_PASSWORD = "dave's own secret"
DAVE_HASH = hash_password(DAVE_PASSWORD, log2_n=10)
LOCKOUT_CONFIG = TLS_CONFIG.replace(
    '"dave@example.test" = {}', f'"dave@example.test" = {{ password = "{DAVE_HASH}" }}'
).replace("auth_failure_delay = 0.01", "auth_failure_delay = 0.01\nauth_max_failures = 5")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server(
    server_factory: Callable[..., RunningServer], tmp_path: Path, ca: trustme.CA
) -> RunningServer:
    write_pems(ca, tmp_path)
    return server_factory(base=LOCKOUT_CONFIG)


class TlsClient(RawClient):
    """A raw client on the implicit-TLS port, connecting from a chosen loopback address."""

    def __init__(self, server: RunningServer, context: ssl.SSLContext, source: str) -> None:
        plain_socket = socket.create_connection(
            address(server, ListenerKind.IMPLICIT_TLS), timeout=10, source_address=(source, 0)
        )
        self.sock = context.wrap_socket(plain_socket, server_hostname=SERVER_NAME)
        self.buf = b""
        assert self.read_reply() == "220 mx.example.test ESMTP mailwright"
        self.send(b"EHLO client.example\r\n")
        assert "AUTH PLAIN LOGIN" in self.read_reply()

    def auth(self, user: str, password: str) -> str:
        self.send(b"AUTH PLAIN " + plain(user, password) + b"\r\n")
        return self.read_reply()


def auth_once(
    server: RunningServer, context: ssl.SSLContext, user: str, password: str, source: str
) -> str:
    """One AUTH on a connection of its own, as a guesser that reconnects does."""
    client = TlsClient(server, context, source)
    try:
        return client.auth(user, password)
    finally:
        client.close()


@pytest.fixture
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def test_failures_over_separate_connections_lock_the_address_out_even_with_the_right_password(
    server: RunningServer, client_tls: ssl.SSLContext
) -> None:
    for attempt in range(5):
        reply = auth_once(server, client_tls, ALICE, f"guess {attempt}", "127.0.0.1")
        assert reply == "535 5.7.8 Authentication credentials invalid"
    reply = auth_once(server, client_tls, ALICE, ALICE_PASSWORD, "127.0.0.1")
    assert reply.startswith("454 4.7.0 Temporary authentication failure: too many failed")
    # Another account from another address is not affected...
    assert auth_once(server, client_tls, DAVE, DAVE_PASSWORD, "127.0.0.2").startswith("235 2.7.0")
    # ...and neither is the guessed account itself: only its guesser is locked out.
    assert auth_once(server, client_tls, ALICE, ALICE_PASSWORD, "127.0.0.2").startswith("235 2.7.0")
    assert auth_once(server, client_tls, DAVE, DAVE_PASSWORD, "127.0.0.1").startswith("454 4.7.0")


def test_a_locked_out_client_may_still_send_mail_without_auth(
    server: RunningServer, client_tls: ssl.SSLContext
) -> None:
    """The lockout answers AUTH only: port 25 mail for local users goes on in the same session."""
    for attempt in range(5):
        auth_once(server, client_tls, ALICE, f"guess {attempt}", "127.0.0.1")
    client = greet(server)
    try:
        ehlo(client)
        start_tls(client, client_tls)
        ehlo(client)
        client.send(b"AUTH PLAIN " + plain() + b"\r\n")
        assert client.read_reply().startswith("454 4.7.0 ")
        client.send(b"MAIL FROM:<x@remote.test>\r\nRCPT TO:<alice@example.test>\r\n")
        assert client.replies(2) == ["250 2.1.0 Ok", "250 2.1.5 Ok"]
    finally:
        client.close()
