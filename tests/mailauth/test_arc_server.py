"""ARC on a real server: ``[verify] arc = "record"`` and ``[arc] seal = true``.

Chains are sealed "upstream" by dkimpy (tests/mailauth/test_arc.py), their keys
and the forwarder's served by a loopback DNS server; forwarded mail reaches a
sink peer, where dkimpy's ``arc_verify`` checks the seal we added.
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable, Iterator
from pathlib import Path

import dkim
import pytest

from mailwright.protocol.reply import Reply
from tests.dns_server import LoopbackDns, silent_dns
from tests.helpers import RunningServer, maildir_messages, wait_for
from tests.mailauth.dkimdns import dkim_dnsfunc
from tests.mailauth.test_arc import BODY, HOP, ONE_SET, TWO_SETS, ZONE, sealed_by
from tests.mailauth.test_dkim import MESSAGE, World, send
from tests.mailauth.test_dkim_forward import SRS_DOMAIN, all_signature_tags, srs
from tests.sink import Behaviour, SinkServer

STRANGER = "sam@sender.test"
OURS = b"Authentication-Results: mx.example.test;"


@pytest.fixture
def world(tmp_path: Path, sink: SinkServer) -> Iterator[World]:
    """test_dkim.py's world; its DNS serves the upstream keys and ours."""
    world = World(tmp_path, sink)
    yield world
    world.stop()


def dns_of(world: World) -> str:
    """Start the world's DNS with the upstream zone and the world's keys; its [dns] table."""
    world.dns = LoopbackDns(ZONE + "\n" + "\n".join(world.records))
    return f'[dns]\nservers = ["{world.dns.address}"]\ntimeout = 2\n'


def fields(message: bytes) -> list[bytes]:
    """The header fields, unfolded, in order."""
    head = message.split(b"\r\n\r\n", 1)[0]
    return head.replace(b"\r\n\t", b" ").replace(b"\r\n ", b" ").split(b"\r\n")


def deliver(server: RunningServer, message: bytes, rcpt: str = "alice@example.test") -> bytes:
    """``message`` from a stranger to the local mailbox ``rcpt``; the copy stored there."""
    with smtplib.SMTP(server.host, server.port, timeout=30) as client:
        assert client.sendmail(STRANGER, [rcpt], message) == {}
    [stored] = wait_for(lambda: maildir_messages(server.data_dir, rcpt))
    return stored  # type: ignore[no-any-return]


def ours(message: bytes) -> bytes:
    [header] = [f for f in fields(message) if f.startswith(OURS)]
    return header


# ---------------------------------------------------------------- [verify] arc = "record"


def recording(server_factory: Callable[..., RunningServer], world: World) -> RunningServer:
    return server_factory(dns_of(world) + '[verify]\narc = "record"\n')


def test_a_sealed_message_is_recorded_arc_pass_even_with_spf_and_dkim_off(
    server_factory: Callable[..., RunningServer], world: World
) -> None:
    stored = deliver(recording(server_factory, world), TWO_SETS)
    assert ours(stored) == OURS + b" arc=pass smtp.remote-ip=127.0.0.1"
    assert stored.endswith(TWO_SETS)  # recorded, never sealed: no [arc] seal


def test_an_altered_body_or_a_broken_seal_is_recorded_arc_fail(
    server_factory: Callable[..., RunningServer], world: World
) -> None:
    server = recording(server_factory, world)
    altered = TWO_SETS.replace(b"Hello list.", b"Hello all.")
    assert ours(deliver(server, altered)) == OURS + b" arc=fail smtp.remote-ip=127.0.0.1"
    unsealed = TWO_SETS.replace(b"cv=pass", b"cv=none", 1)
    stored = deliver(server, unsealed, "dave@example.test")
    assert ours(stored) == OURS + b" arc=fail smtp.remote-ip=127.0.0.1"


def test_a_message_without_arc_is_recorded_arc_none(
    server_factory: Callable[..., RunningServer], world: World
) -> None:
    stored = deliver(recording(server_factory, world), BODY)
    assert ours(stored) == OURS + b" arc=none smtp.remote-ip=127.0.0.1"


def test_dns_that_never_answers_is_never_a_pass_and_the_mail_is_kept(
    server_factory: Callable[..., RunningServer],
) -> None:
    with silent_dns() as address:
        silent = f'[dns]\nservers = ["{address}"]\ntimeout = 0.5\n'
        server = server_factory(silent + '[verify]\narc = "record"\n')
        stored = deliver(server, TWO_SETS)
    assert ours(stored) == (
        OURS + b" arc=fail (key lookup failed for now) smtp.remote-ip=127.0.0.1"
    )


# ---------------------------------------------------------------- [arc] seal = true


def sealing(
    server_factory: Callable[..., RunningServer], world: World, extra: str = ""
) -> RunningServer:
    """SRS on, an RSA key for the SRS domain, ``[arc] seal = true``, [verify] left off."""
    world.key(SRS_DOMAIN, "fwd")
    config = world.config(relay_networks=False) + srs() + dns_of(world)
    return server_factory(config + "[arc]\nseal = true\n" + extra)


def forwarded(
    server_factory: Callable[..., RunningServer], world: World, message: bytes, extra: str = ""
) -> bytes:
    """``message`` from a stranger to bob@example.test (forwarded) through a sealing
    server; the copy the sink received."""
    server = sealing(server_factory, world, extra)
    send(server, ["bob@example.test"], message.decode(), sender=STRANGER)
    [received] = world.sink.wait_for_messages(1)
    assert str(received.sender).startswith("SRS0=")
    return received.body


def arc_sets(message: bytes) -> list[dict[str, str]]:
    """The tags of each ARC-Seal, newest (topmost) first."""
    return all_signature_tags(message, "ARC-Seal")


def arc_verify(world: World, message: bytes) -> tuple[bytes | None, str]:
    assert world.dns is not None
    status, _results, reason = dkim.arc_verify(message, dnsfunc=dkim_dnsfunc(world.dns))
    return status, reason


def test_a_forwarded_chain_is_sealed_once_with_the_next_instance_and_verifies(
    server_factory: Callable[..., RunningServer], world: World
) -> None:
    received = forwarded(server_factory, world, TWO_SETS)
    seals = arc_sets(received)
    assert [(s["i"], s["cv"], s["d"]) for s in seals] == [
        ("3", "pass", SRS_DOMAIN),
        ("2", "pass", "hop.test"),
        ("1", "none", "up.test"),
    ]
    assert seals[0]["s"] == "fwd" and seals[0]["a"] == "rsa-sha256"
    assert arc_verify(world, received) == (dkim.CV_Pass, "success")
    head = fields(received)
    [aar] = [f for f in head if f.startswith(b"ARC-Authentication-Results: i=3;")]
    assert b"mx.example.test" in aar and b"arc=pass smtp.remote-ip=127.0.0.1" in aar
    # Under our Received: the seal, then our verdict, then the forwarder's DKIM signature.
    names = [f.split(b":", 1)[0] for f in head]
    assert names[:6] == [
        b"Received",
        b"ARC-Seal",
        b"ARC-Message-Signature",
        b"ARC-Authentication-Results",
        b"Authentication-Results",
        b"DKIM-Signature",
    ]
    assert received.endswith(TWO_SETS)
    altered = received.replace(b"Hello list.", b"Hello all.")
    assert arc_verify(world, altered)[0] == dkim.CV_Fail


def test_every_attempt_sends_the_same_sealed_bytes(
    server_factory: Callable[..., RunningServer], world: World
) -> None:
    """Sealed once, when queued: a retry sends the seal made for the first attempt."""
    world.sink.script(Behaviour(end_of_data=Reply(451, "4.3.0", "Try again later")))
    server = sealing(server_factory, world)
    send(server, ["bob@example.test"], ONE_SET.decode(), sender=STRANGER)
    first, second = world.sink.wait_for_messages(2, timeout=30)
    assert first.reply is not None and first.reply.code == 451
    assert first.body == second.body
    assert arc_verify(world, second.body) == (dkim.CV_Pass, "success")


def test_a_forwarded_message_without_a_chain_starts_one(
    server_factory: Callable[..., RunningServer], world: World
) -> None:
    received = forwarded(server_factory, world, BODY)
    [seal] = arc_sets(received)
    assert (seal["i"], seal["cv"], seal["d"]) == ("1", "none", SRS_DOMAIN)
    assert arc_verify(world, received) == (dkim.CV_Pass, "success")


def test_with_verify_on_too_the_seal_carries_every_verdict(
    server_factory: Callable[..., RunningServer], world: World
) -> None:
    received = forwarded(
        server_factory, world, ONE_SET, '[verify]\ndkim = "record"\narc = "record"\n'
    )
    [aar] = [f for f in fields(received) if f.startswith(b"ARC-Authentication-Results: i=2")]
    assert b"dkim=none" in aar and b"arc=pass" in aar
    assert arc_verify(world, received) == (dkim.CV_Pass, "success")
    assert [s["i"] for s in arc_sets(received)] == ["2", "1"]


def test_a_chain_that_arrived_with_cv_fail_is_not_extended(
    server_factory: Callable[..., RunningServer], world: World
) -> None:
    """RFC 8617 5.1 step 1: the newest seal says cv=fail, nobody adds a set after it."""
    failed = sealed_by(ONE_SET, "hop.test", "s2", HOP, arc="fail")
    received = forwarded(server_factory, world, failed)
    assert [s["i"] for s in arc_sets(received)] == ["2", "1"]  # upstream's only
    assert ours(received) == OURS + b" arc=fail smtp.remote-ip=127.0.0.1"


def test_a_broken_chain_is_sealed_with_cv_fail(
    server_factory: Callable[..., RunningServer], world: World
) -> None:
    """RFC 8617 5.1: our seal records what we found; a later validator sees the chain end."""
    altered = ONE_SET.replace(b"Hello list.", b"Hello all.")
    received = forwarded(server_factory, world, altered)
    seals = arc_sets(received)
    assert [(s["i"], s["cv"]) for s in seals] == [("2", "fail"), ("1", "none")]
    assert arc_verify(world, received)[0] is None  # dkimpy: the chain is terminated


def test_mail_that_is_not_forwarded_is_not_sealed(
    server_factory: Callable[..., RunningServer], world: World
) -> None:
    """Local delivery, and a relay-network client's mail to another host (relayed, not
    forwarded): no seal and, without [verify], no verdict."""
    world.key("example.test", "s1")
    server = sealing(server_factory, world, '[relay]\nnetworks = ["127.0.0.0/8"]\n')
    stored = deliver(server, ONE_SET, "alice@example.test")
    assert stored.endswith(ONE_SET) and not any(f.startswith(OURS) for f in fields(stored))
    send(server, ["carl@elsewhere.test"], MESSAGE)
    [received] = world.sink.wait_for_messages(1)
    assert b"ARC-Seal" not in received.body
