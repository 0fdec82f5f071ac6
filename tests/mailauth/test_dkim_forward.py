"""DKIM signing of forwarded mail: the SRS domain's key vouches for what we relayed.

A real server forwards ``bob@example.test`` (``[forward]`` in BASE_CONFIG) to a
sink peer; the sink's copy is verified with dkimpy against the key records
served by a loopback DNS server, with the helpers of test_dkim.py.
"""

from __future__ import annotations

import email
from collections.abc import Callable, Iterator
from pathlib import Path

import dkim
import pytest

from mailwright.mailauth.dkim import (
    MessageSigner,
    SigningPlan,
    generate_private_key,
    load_signing_key,
    write_private_key,
)
from tests.dns_server import LoopbackDns
from tests.helpers import RunningServer, maildir_messages, wait_for
from tests.mailauth.dkimdns import dkim_dnsfunc
from tests.mailauth.test_dkim import MESSAGE, World, send
from tests.sink import SinkServer

SRS_DOMAIN = "fwd.example.test"
STRANGER = "someone@remote.test"
FROM_STRANGER = MESSAGE.replace("alice@example.test", STRANGER)


@pytest.fixture
def world(tmp_path: Path, sink: SinkServer) -> Iterator[World]:
    """test_dkim.py's world: keys, the DNS that publishes them, and the sink."""
    world = World(tmp_path, sink)
    yield world
    world.stop()


def srs(domain: str | None = SRS_DOMAIN) -> str:
    """An ``[srs]`` table; ``domain`` None leaves the SRS domain to be ``hostname``."""
    line = f'domain = "{domain}"\n' if domain else ""
    return '[srs]\nsecret = "a-secret-of-some-length"\n' + line


def all_signature_tags(message: bytes, field: str = "DKIM-Signature") -> list[dict[str, str]]:
    """The tags of every DKIM-Signature header (or ``field``), topmost first."""
    parsed = email.message_from_bytes(message)
    result = []
    for header in parsed.get_all(field) or []:
        tags = (part.strip().partition("=") for part in "".join(header.split()).split(";"))
        result.append({name: value for name, _, value in tags if name})
    return result


def verifies(world: World, message: bytes, index: int) -> bool:
    """dkimpy's verdict on the ``index``-th signature (``World.verify`` checks only the first)."""
    if world.dns is None:
        world.verify(message)  # starts the DNS server with the records
    assert world.dns is not None
    return bool(dkim.DKIM(message).verify(idx=index, dnsfunc=dkim_dnsfunc(world.dns)))


def test_mail_a_stranger_sends_to_a_forward_leaves_signed_by_the_srs_domain(
    server_factory: Callable[..., RunningServer], world: World
) -> None:
    """No relay network, no AUTH: the author rule does not apply, the forwarder's does."""
    world.key("example.test", "s1")
    world.key(SRS_DOMAIN, "fwd")
    server = server_factory(world.config(relay_networks=False) + srs())
    send(server, ["bob@example.test"], FROM_STRANGER, sender=STRANGER)
    [received] = world.sink.wait_for_messages(1)
    assert received.sender is not None and received.sender.domain == SRS_DOMAIN
    assert received.sender.local_part.startswith("SRS0=")
    [tags] = all_signature_tags(received.body)
    assert tags["d"] == SRS_DOMAIN and tags["s"] == "fwd"
    assert world.verify(received.body)
    assert not world.verify(received.body.replace(b"Hello Carl", b"Hello Dave"))


def test_the_srs_domain_defaults_to_the_hostname_and_its_key_signs(
    server_factory: Callable[..., RunningServer], world: World
) -> None:
    world.key("mx.example.test", "s2", "ed25519")
    server = server_factory(world.config(relay_networks=False) + srs(domain=None))
    send(server, ["bob@example.test"], FROM_STRANGER, sender=STRANGER)
    [received] = world.sink.wait_for_messages(1)
    [tags] = all_signature_tags(received.body)
    assert tags["d"] == "mx.example.test" and tags["a"] == "ed25519-sha256"
    assert world.verify(received.body)


def test_forwarded_mail_is_not_signed_without_a_key_for_the_srs_domain(
    server_factory: Callable[..., RunningServer], world: World
) -> None:
    """example.test is a parent of the SRS domain, but its key is not the SRS domain's."""
    world.key("example.test", "s1")
    server = server_factory(world.config(relay_networks=False) + srs())
    send(server, ["bob@example.test"], FROM_STRANGER, sender=STRANGER)
    [received] = world.sink.wait_for_messages(1)
    assert str(received.sender).startswith("SRS0=")
    assert b"DKIM-Signature" not in received.body
    assert received.body.endswith(FROM_STRANGER.encode())


def test_forwarded_mail_is_not_signed_by_this_rule_when_srs_is_off(
    server_factory: Callable[..., RunningServer], world: World
) -> None:
    """A key for the hostname, which would be the SRS domain, but no [srs] secret."""
    world.key("mx.example.test", "s1")
    server = server_factory(world.config(relay_networks=False))
    send(server, ["bob@example.test"], FROM_STRANGER, sender=STRANGER)
    [received] = world.sink.wait_for_messages(1)
    assert str(received.sender) == STRANGER
    assert b"DKIM-Signature" not in received.body


def test_local_only_mail_is_not_signed_with_the_srs_domain_key(
    server_factory: Callable[..., RunningServer], world: World
) -> None:
    world.key(SRS_DOMAIN, "fwd")
    server = server_factory(world.config(relay_networks=False) + srs())
    send(server, ["dave@example.test"], FROM_STRANGER, sender=STRANGER)
    [stored] = wait_for(lambda: maildir_messages(server.data_dir, "dave@example.test"))
    assert b"DKIM-Signature" not in stored
    assert stored.endswith(FROM_STRANGER.encode())


def test_relayed_mail_that_is_not_forwarded_gets_no_srs_domain_signature(
    server_factory: Callable[..., RunningServer], world: World
) -> None:
    """A relay-network client writing to carl@elsewhere.test: signed as its author only."""
    world.key("example.test", "s1")
    world.key(SRS_DOMAIN, "fwd")
    server = server_factory(world.config() + srs())
    send(server, ["carl@elsewhere.test"], MESSAGE)
    [received] = world.sink.wait_for_messages(1)
    assert [tags["d"] for tags in all_signature_tags(received.body)] == ["example.test"]


def test_own_mail_forwarded_gets_both_signatures_and_both_verify(
    server_factory: Callable[..., RunningServer], world: World
) -> None:
    """From: alice@example.test, by a relay-network client, to a forward: author and forwarder."""
    world.key("example.test", "s1")
    world.key(SRS_DOMAIN, "fwd")
    server = server_factory(world.config() + srs())
    send(server, ["bob@example.test"], MESSAGE)
    [received] = world.sink.wait_for_messages(1)
    domains = [tags["d"] for tags in all_signature_tags(received.body)]
    assert domains == [SRS_DOMAIN, "example.test"]
    assert verifies(world, received.body, 0) and verifies(world, received.body, 1)


def test_one_key_never_signs_twice(tmp_path: Path) -> None:
    """The SRS domain is the author's domain: one signature, not two of the same key."""
    write_private_key(tmp_path / "k", generate_private_key("ed25519"))
    key = load_signing_key("example.test", "s1", tmp_path / "k")
    signer = MessageSigner((key,))
    message = MESSAGE.encode()
    assert [k for k, _ in signer.sign(message, SigningPlan(author=True, forwarder=key))] == [key]
    assert signer.sign(message, SigningPlan(author=False, forwarder=None)) == []


def test_a_forwarded_message_gets_our_verdict_and_the_forwarders_signature(
    server_factory: Callable[..., RunningServer], world: World
) -> None:
    """[verify] and the forwarder's key together: our Authentication-Results under our
    Received:, the signature beside it, and the signature verifies at the next hop."""
    world.key(SRS_DOMAIN, "fwd")
    world.dns = LoopbackDns("\n".join(world.records))
    verify = f'[dns]\nservers = ["{world.dns.address}"]\ntimeout = 2\n[verify]\ndkim = "record"\n'
    server = server_factory(world.config(relay_networks=False) + srs() + verify)
    send(server, ["bob@example.test"], FROM_STRANGER, sender=STRANGER)
    [received] = world.sink.wait_for_messages(1)
    head = received.body.split(b"\r\n\r\n", 1)[0].decode()
    assert "Authentication-Results: mx.example.test;" in head and "dkim=none" in head
    [tags] = all_signature_tags(received.body)
    assert tags["d"] == SRS_DOMAIN
    assert verifies(world, received.body, 0)
