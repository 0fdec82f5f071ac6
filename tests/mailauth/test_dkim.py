"""DKIM signing by a real server: mail our clients send out arrives signed, and dkimpy agrees.

Each test runs a mailwright server on loopback with a ``[[dkim.keys]]`` entry,
relaying to a sink peer; the sink's copy is verified with dkimpy against the
key record served by a loopback DNS server (tests/dns_server.py).
"""

from __future__ import annotations

import email
import smtplib
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import dkim
import pytest
import trustme

from mailwright.mailauth.dkim import (
    Algorithm,
    author_domain,
    generate_private_key,
    public_key_value,
    record_line,
    record_text,
    write_private_key,
)
from mailwright.passwords import hash_password
from mailwright.protocol.reply import Reply
from tests.dns_server import LoopbackDns
from tests.helpers import BASE_CONFIG, RunningServer, maildir_messages, wait_for
from tests.mailauth.dkimdns import dkim_dnsfunc
from tests.sink import Behaviour, SinkServer

ALICE_PASSWORD = "correct horse battery"
MESSAGE = (
    "From: Alice <alice@example.test>\r\n"
    "To: Carl <carl@elsewhere.test>\r\n"
    "Subject: signed on the way out\r\n"
    "Date: Fri, 04 Dec 2026 16:00:00 +0000\r\n"
    "Message-ID: <m1@example.test>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "Hello Carl,\r\n"
    "\r\n"
    "trailing blank lines and  double  spaces are canonicalised.  \r\n"
    "\r\n"
    "\r\n"
)


class World:
    """A server with DKIM keys, the sink it relays to, and the DNS that publishes the keys."""

    def __init__(self, tmp_path: Path, sink: SinkServer) -> None:
        self.tmp_path = tmp_path
        self.sink = sink
        self.records: list[str] = []
        self.keys: list[str] = []
        self.dns: LoopbackDns | None = None

    def key(self, domain: str, selector: str, algorithm: Algorithm = "rsa") -> None:
        pem = generate_private_key(algorithm)
        write_private_key(self.tmp_path / f"{domain}.{selector}.key", pem)
        self.records.append(record_line(domain, selector, record_text(*public_key_value(pem))))
        self.keys.append(
            f'[[dkim.keys]]\ndomain = "{domain}"\nselector = "{selector}"\n'
            f'key = "{domain}.{selector}.key"\n'
        )

    def config(self, *, relay_networks: bool = True) -> str:
        networks = '[relay]\nnetworks = ["127.0.0.0/8"]\n' if relay_networks else ""
        return (
            f'[routes]\n"elsewhere.test" = "127.0.0.1:{self.sink.port}"\n'
            "[queue]\nretry = [1]\nmax_age = 60\n" + networks + "".join(self.keys)
        )

    def verify(self, message: bytes) -> bool:
        if self.dns is None:
            self.dns = LoopbackDns("\n".join(self.records))
        return bool(dkim.verify(message, dnsfunc=dkim_dnsfunc(self.dns)))

    def stop(self) -> None:
        if self.dns is not None:
            self.dns.stop()


@pytest.fixture
def world(tmp_path: Path, sink: SinkServer) -> Iterator[World]:
    world = World(tmp_path, sink)
    yield world
    world.stop()


def send(
    server: RunningServer, rcpts: list[str], message: str, sender: str = "alice@example.test"
) -> None:
    with smtplib.SMTP(server.host, server.port, timeout=10) as s:
        assert s.sendmail(sender, rcpts, message.encode()) == {}


def signature_tags(message: bytes) -> dict[str, str]:
    parsed = email.message_from_bytes(message)
    [header] = parsed.get_all("DKIM-Signature")
    tags = (part.strip().partition("=") for part in "".join(header.split()).split(";"))
    return {name: value for name, _, value in tags if name}


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_relay_network_client_mail_arrives_signed_and_verifies(
    server_factory: Callable[..., RunningServer], world: World, algorithm: Algorithm
) -> None:
    world.key("example.test", "s1", algorithm)
    server = server_factory(world.config())
    send(server, ["carl@elsewhere.test"], MESSAGE)
    [received] = world.sink.wait_for_messages(1)
    assert world.verify(received.body)
    tags = signature_tags(received.body)
    assert tags["d"] == "example.test" and tags["s"] == "s1"
    assert tags["a"] == f"{algorithm}-sha256" and tags["c"] == "relaxed/relaxed"
    assert tags["h"].lower() == ("from:to:subject:date:message-id:mime-version:content-type:from")
    altered = received.body.replace(b"Hello Carl", b"Hello Dave")
    assert not world.verify(altered)


def test_a_second_from_header_added_later_breaks_the_signature(
    server_factory: Callable[..., RunningServer], world: World
) -> None:
    world.key("example.test", "s1")
    server = server_factory(world.config())
    send(server, ["carl@elsewhere.test"], MESSAGE)
    [received] = world.sink.wait_for_messages(1)
    head, _, body = received.body.partition(b"\r\n\r\n")
    forged = head + b"\r\nFrom: Mallory <boss@example.test>\r\n\r\n" + body
    assert world.verify(received.body) and not world.verify(forged)


def test_subdomain_from_is_signed_with_the_parent_key_and_a_large_body_too(
    server_factory: Callable[..., RunningServer], world: World
) -> None:
    """300 KiB: more than is held in memory, so the held body goes through a file."""
    world.key("example.test", "s1")
    server = server_factory(world.config())
    big = MESSAGE.replace("alice@example.test", "news@lists.example.test") + (
        "a line of the long body\r\n" * 12_000
    )
    send(server, ["carl@elsewhere.test"], big, sender="news@lists.example.test")
    [received] = world.sink.wait_for_messages(1)
    assert signature_tags(received.body)["d"] == "example.test"
    assert world.verify(received.body)


def test_from_another_domain_is_not_signed(
    server_factory: Callable[..., RunningServer], world: World
) -> None:
    world.key("example.test", "s1")
    server = server_factory(world.config())
    other = MESSAGE.replace("alice@example.test", "someone@notexample.test")
    send(server, ["carl@elsewhere.test"], other)
    [received] = world.sink.wait_for_messages(1)
    assert b"DKIM-Signature" not in received.body
    assert received.body.endswith(other.encode())


def test_unauthenticated_client_outside_relay_networks_is_not_signed(
    server_factory: Callable[..., RunningServer], world: World
) -> None:
    """bob@example.test forwards to elsewhere.test: relayed, but for a stranger, so unsigned."""
    world.key("example.test", "s1")
    server = server_factory(world.config(relay_networks=False))
    send(server, ["bob@example.test"], MESSAGE, sender="stranger@remote.test")
    [received] = world.sink.wait_for_messages(1)
    assert [str(r) for r in received.recipients] == ["bob@elsewhere.test"]
    assert b"DKIM-Signature" not in received.body


def test_local_only_mail_is_not_signed(
    server_factory: Callable[..., RunningServer], world: World
) -> None:
    world.key("example.test", "s1")
    server = server_factory(world.config())
    send(server, ["dave@example.test"], MESSAGE)
    [stored] = wait_for(lambda: maildir_messages(server.data_dir, "dave@example.test"))
    assert b"DKIM-Signature" not in stored
    assert stored.endswith(MESSAGE.encode())


def test_every_attempt_sends_the_same_signed_bytes(
    server_factory: Callable[..., RunningServer], world: World
) -> None:
    world.key("example.test", "s1")
    world.sink.script(Behaviour(end_of_data=Reply(451, "4.3.0", "Try again later")))
    server = server_factory(world.config())
    send(server, ["carl@elsewhere.test"], MESSAGE)
    first, second = world.sink.wait_for_messages(2, timeout=30)
    assert first.reply is not None and first.reply.code == 451
    assert first.body == second.body
    assert world.verify(second.body)


def test_authenticated_submission_is_signed(
    server_factory: Callable[..., RunningServer], world: World, tmp_path: Path
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("mx.example.test", "127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    cert.private_key_pem.write_to_path(tmp_path / "key.pem")
    world.key("example.test", "s1", "ed25519")
    base = BASE_CONFIG.replace(
        '"alice@example.test" = {}',
        f'"alice@example.test" = {{ password = "{hash_password(ALICE_PASSWORD, log2_n=10)}" }}',
    )
    tls = '[tls]\ncertificate = "cert.pem"\nkey = "key.pem"\n'
    server = server_factory(world.config(relay_networks=False) + tls, base=base)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with smtplib.SMTP(server.host, server.port, timeout=10) as s:
        s.starttls(context=context)
        s.login("alice@example.test", ALICE_PASSWORD)
        assert s.sendmail("alice@example.test", ["carl@elsewhere.test"], MESSAGE.encode()) == {}
    [received] = world.sink.wait_for_messages(1)
    assert world.verify(received.body)


@pytest.mark.parametrize(
    ("head", "domain"),
    [
        (b"From: A <a@Example.TEST>\r\n\r\n", "example.test"),
        (b"From: a@one.test, b@two.test\r\n\r\n", None),
        (b"From: a@one.test\r\nFrom: b@two.test\r\n\r\n", None),
        (b"Subject: no author\r\n\r\n", None),
        (b"From: not an address\r\n\r\n", None),
    ],
)
def test_author_domain_is_the_one_from_address_or_nothing(head: bytes, domain: str | None) -> None:
    assert author_domain(head) == domain
