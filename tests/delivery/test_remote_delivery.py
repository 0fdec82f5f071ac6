"""Forwarded and relayed mail leaving through the queue: real sink peers and a loopback DNS."""

from __future__ import annotations

import email
import logging
import smtplib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailwright.protocol.reply import Reply
from tests.dns_server import LoopbackDns
from tests.helpers import BASE_CONFIG, RunningServer, maildir_messages, wait_for
from tests.peers import free_port
from tests.sink import HANG_UP, Behaviour, SinkServer


def routed(sink: SinkServer, extra: str = "") -> str:
    return f"""
[routes]
"elsewhere.test" = "127.0.0.1:{sink.port}"
[queue]
retry = [1]
max_age = 60
{extra}
"""


def send(server: RunningServer, sender: str, rcpts: list[str], body: str) -> None:
    with smtplib.SMTP(server.host, server.port, timeout=10) as s:
        assert s.sendmail(sender, rcpts, body) == {}


def test_forwarded_message_arrives_at_next_hop_intact(server_factory, sink: SinkServer) -> None:
    server = server_factory(routed(sink))
    body = "Subject: moved\r\n\r\n.leading dot\r\nline two\r\n"
    with smtplib.SMTP(server.host, server.port, timeout=10) as s:
        s.ehlo("client.example")
        s.mail("sender@remote.test")
        assert s.rcpt("bob@example.test")[0] == 251
        assert s.data(body)[0] == 250
    [msg] = sink.wait_for_messages(1)
    assert str(msg.sender) == "sender@remote.test"
    assert [str(r) for r in msg.recipients] == ["bob@elsewhere.test"]
    assert msg.body.startswith(
        b"Received: from client.example ([127.0.0.1])\r\n\tby mx.example.test"
    )
    assert msg.body.endswith(b"Subject: moved\r\n\r\n.leading dot\r\nline two\r\n")
    assert msg.helo == "mx.example.test"
    wait_for(lambda: server.call(lambda: server.app.store.list()) == [])


def test_451_twice_then_250_delivers_exactly_once(server_factory, sink: SinkServer) -> None:
    later = Reply(451, "4.3.0", "Try again later")
    sink.script(Behaviour(rcpt=later), Behaviour(rcpt=later))
    server = server_factory(routed(sink))
    send(server, "sender@remote.test", ["bob@example.test"], "Subject: retry\r\n\r\nx\r\n")
    wait_for(lambda: server.call(lambda: server.app.store.list()) == [], timeout=30)
    delivered = [m for m in sink.messages if m.reply is not None and m.reply.code == 250]
    assert len(delivered) == 1
    assert delivered[0].body.endswith(b"Subject: retry\r\n\r\nx\r\n")


def dsn_for(server: RunningServer, address: str) -> email.message.Message:
    [raw] = wait_for(lambda: maildir_messages(server.data_dir, address), timeout=30)
    return email.message_from_bytes(raw)


def test_550_bounces_to_local_sender_with_original_headers(
    server_factory, sink: SinkServer
) -> None:
    sink.default = Behaviour(rcpt=Reply(550, "5.1.1", "No such user here"))
    server = server_factory(routed(sink))
    send(
        server,
        "alice@example.test",
        ["bob@example.test"],
        "Subject: doomed\r\nX-Trace: 42\r\n\r\nbody\r\n",
    )
    dsn = dsn_for(server, "alice@example.test")
    assert dsn["From"].startswith("Mail Delivery System <MAILER-DAEMON@mx.example.test>")
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    raw = dsn.as_bytes()
    assert b"Return-Path: <>" in maildir_messages(server.data_dir, "alice@example.test")[0]
    assert b"Final-Recipient: rfc822; bob@elsewhere.test" in raw
    assert b"Original-Recipient: rfc822; bob@example.test" in raw
    assert b"Status: 5.1.1" in raw
    assert b"Diagnostic-Code: smtp; 550 5.1.1 No such user here" in raw
    parts = [p.get_content_type() for p in dsn.get_payload()]
    assert parts == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    headers = dsn.get_payload()[2].get_payload()
    assert "Subject: doomed" in str(headers) and "X-Trace: 42" in str(headers)
    wait_for(lambda: server.call(lambda: server.app.store.list()) == [])


def test_551_from_next_hop_bounces_naming_the_address(server_factory, sink: SinkServer) -> None:
    sink.default = Behaviour(
        rcpt=Reply(551, "5.1.6", "User not local; please try <bob@third.test>")
    )
    server = server_factory(routed(sink))
    send(server, "alice@example.test", ["bob@example.test"], "Subject: s\r\n\r\nb\r\n")
    raw = dsn_for(server, "alice@example.test").as_bytes()
    assert b"551 5.1.6 User not local; please try <bob@third.test>" in raw
    assert len([m for m in sink.messages if m.reply is not None and m.reply.code == 250]) == 0


def test_a_next_hop_without_smtputf8_bounces_a_non_ascii_address_at_once(
    server_factory, sink: SinkServer
) -> None:
    """RFC 6531 3.2: a message to a non-ASCII address cannot go to a server without
    SMTPUTF8, and it never will: 5.6.7 (RFC 6531 3.6) now, as for BINARYMIME, not a
    "connection problem" retried until max_age."""
    sink.default = Behaviour(hide=frozenset({"SMTPUTF8"}))
    base = BASE_CONFIG.replace('"bob@elsewhere.test"', '"jörg@elsewhere.test"')
    server = server_factory(routed(sink), base=base)
    send(server, "alice@example.test", ["bob@example.test"], "Subject: s\r\n\r\nb\r\n")
    raw = dsn_for(server, "alice@example.test").as_bytes()
    assert b"Status: 5.6.7" in raw and b"does not offer SMTPUTF8" in raw
    assert sink.messages == [] and sink.connections >= 1


def test_251_from_next_hop_counts_as_delivered(server_factory, sink: SinkServer) -> None:
    sink.default = Behaviour(
        rcpt=Reply(251, "2.1.5", "User not local; will forward to <b@far.test>")
    )
    server = server_factory(routed(sink))
    send(server, "alice@example.test", ["bob@example.test"], "Subject: s\r\n\r\nb\r\n")
    sink.wait_for_messages(1)
    wait_for(lambda: server.call(lambda: server.app.store.list()) == [])
    assert maildir_messages(server.data_dir, "alice@example.test") == []


def test_a_bounce_is_never_bounced(server_factory, sink: SinkServer) -> None:
    sink.default = Behaviour(rcpt=Reply(550, "5.1.1", "No"))
    server = server_factory(routed(sink))
    send(server, "", ["bob@example.test"], "Subject: I am a bounce\r\n\r\nb\r\n")
    wait_for(lambda: server.call(lambda: server.app.store.list()) == [], timeout=30)
    assert maildir_messages(server.data_dir, "postmaster@example.test") == []


def test_hang_up_defers_then_delivers(server_factory, sink: SinkServer) -> None:
    sink.script(Behaviour(end_of_data=HANG_UP))
    server = server_factory(routed(sink))
    send(server, "sender@remote.test", ["bob@example.test"], "Subject: h\r\n\r\nb\r\n")
    wait_for(lambda: server.call(lambda: server.app.store.list()) == [], timeout=30)
    assert [m.reply.code for m in sink.messages if m.reply is not None] == [250]


def queue_cli(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailwright", "queue", *args, "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_peer_down_defers_and_queue_retry_delivers(tmp_path: Path) -> None:
    port = free_port()
    config_text = (
        BASE_CONFIG
        + f"""
[routes]
"elsewhere.test" = "127.0.0.1:{port}"
[queue]
retry = [3600]
"""
    )
    config_path = tmp_path / "mw.toml"
    config_path.write_text(config_text)
    from mailwright.config import load_config

    server = RunningServer(load_config(config_path))
    sink: SinkServer | None = None
    try:
        send(server, "sender@remote.test", ["bob@example.test"], "Subject: later\r\n\r\nb\r\n")

        def deferred() -> bool:
            msgs = server.call(lambda: server.app.store.list())
            return bool(msgs) and msgs[0].recipients[0].state.value == "deferred"

        wait_for(deferred)
        listing = queue_cli(config_path, "list")
        assert listing.returncode == 0, listing.stderr
        assert "deferred" in listing.stdout and "<bob@elsewhere.test>" in listing.stdout
        assert "Connection problem" in listing.stdout or "451" in listing.stdout
        queue_id = listing.stdout.split()[0]
        shown = queue_cli(config_path, "show", queue_id)
        assert shown.returncode == 0 and "Subject: later" in shown.stdout
        # the queue survives a restart
        server.stop()
        server = RunningServer(load_config(config_path))
        assert len(server.call(lambda: server.app.store.list())) == 1
        sink = SinkServer(port=port)
        retried = queue_cli(config_path, "retry")
        assert retried.returncode == 0 and "1 recipient" in retried.stdout
        [msg] = sink.wait_for_messages(1, timeout=30)
        assert msg.body.endswith(b"Subject: later\r\n\r\nb\r\n")
        wait_for(lambda: server.call(lambda: server.app.store.list()) == [])
        assert queue_cli(config_path, "delete", queue_id).returncode == 1
    finally:
        server.stop()
        if sink is not None:
            sink.stop()


def test_queue_delete_removes_a_message(tmp_path: Path) -> None:
    config_path = tmp_path / "mw.toml"
    config_path.write_text(
        BASE_CONFIG
        + f'\n[routes]\n"elsewhere.test" = "127.0.0.1:{free_port()}"\n[queue]\nretry = [3600]\n'
    )
    from mailwright.config import load_config

    server = RunningServer(load_config(config_path))
    try:
        send(server, "sender@remote.test", ["bob@example.test"], "Subject: x\r\n\r\nb\r\n")
        wait_for(lambda: server.call(lambda: server.app.store.list()))
        queue_id = server.call(lambda: server.app.store.list())[0].queue_id
        result = queue_cli(config_path, "delete", queue_id)
        assert result.returncode == 0, result.stderr
        assert server.call(lambda: server.app.store.list()) == []
    finally:
        server.stop()


# ------------------------------------------------------------------ MX lookup


@pytest.fixture
def mx_world() -> Iterator[tuple[SinkServer, SinkServer, Callable[[str], LoopbackDns]]]:
    primary = SinkServer(host="127.0.0.2")
    backup = SinkServer(host="127.0.0.1", port=primary.port)
    servers: list[LoopbackDns] = []

    def dns(zone: str) -> LoopbackDns:
        server = LoopbackDns(zone)
        servers.append(server)
        return server

    yield primary, backup, dns
    primary.stop()
    backup.stop()
    for s in servers:
        s.stop()


ZONE = """
pref.test.      60 IN MX 20 backup.pref.test.
pref.test.      60 IN MX 10 primary.pref.test.
primary.pref.test. 60 IN A 127.0.0.2
backup.pref.test.  60 IN A 127.0.0.1
plain.test.     60 IN A 127.0.0.1
nullmx.test.    60 IN MX 0 .
"""


MX_BASE = """
hostname = "mx.example.test"
data_dir = "data"
[smtp]
listen = ["127.0.0.1:0"]
[domains]
local = ["example.test"]
[mailboxes]
"alice@example.test" = {}
"""


def mx_config(port: int, dns: LoopbackDns, aliases: str, *, old_key: bool = False) -> str:
    """The DNS server in ``[dns] servers``, or with ``old_key`` in the deprecated
    ``[delivery] dns_servers``."""
    servers = f'dns_servers = ["{dns.address}"]' if old_key else ""
    new = "" if old_key else f'[dns]\nservers = ["{dns.address}"]'
    return (
        MX_BASE
        + f"""
[delivery]
port = {port}
{servers}
{new}
[queue]
retry = [1]
max_age = 60
[aliases]
{aliases}
"""
    )


def test_mx_preference_order(server_factory, mx_world) -> None:
    primary, backup, dns = mx_world
    server = server_factory(
        base=mx_config(primary.port, dns(ZONE), '"ext@example.test" = ["u@pref.test"]')
    )
    send(server, "sender@remote.test", ["ext@example.test"], "Subject: mx\r\n\r\nb\r\n")
    [msg] = primary.wait_for_messages(1)
    assert [str(r) for r in msg.recipients] == ["u@pref.test"]
    assert backup.messages == []


def test_mx_falls_back_to_next_preference_when_first_is_down(server_factory, mx_world) -> None:
    primary, backup, dns = mx_world
    primary.default = Behaviour(greeting=Reply(421, "4.3.2", "Going away"))
    server = server_factory(
        base=mx_config(primary.port, dns(ZONE), '"ext@example.test" = ["u@pref.test"]')
    )
    send(server, "sender@remote.test", ["ext@example.test"], "Subject: mx\r\n\r\nb\r\n")
    [msg] = backup.wait_for_messages(1)
    assert msg.body.endswith(b"Subject: mx\r\n\r\nb\r\n")


def test_no_mx_falls_back_to_address_record(server_factory, mx_world) -> None:
    primary, backup, dns = mx_world
    server = server_factory(
        base=mx_config(primary.port, dns(ZONE), '"ext@example.test" = ["u@plain.test"]')
    )
    send(server, "sender@remote.test", ["ext@example.test"], "Subject: a\r\n\r\nb\r\n")
    [msg] = backup.wait_for_messages(1)
    assert [str(r) for r in msg.recipients] == ["u@plain.test"]


def test_deprecated_delivery_dns_servers_still_finds_the_mx_and_says_so(
    server_factory, mx_world, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mailwright")
    primary, _backup, dns = mx_world
    server = server_factory(
        base=mx_config(
            primary.port, dns(ZONE), '"ext@example.test" = ["u@pref.test"]', old_key=True
        )
    )
    send(server, "sender@remote.test", ["ext@example.test"], "Subject: old\r\n\r\nb\r\n")
    [msg] = primary.wait_for_messages(1)
    assert [str(r) for r in msg.recipients] == ["u@pref.test"]
    warnings = [r.getMessage() for r in caplog.records if "event=deprecated" in r.getMessage()]
    assert len(warnings) == 1 and "use [dns] servers" in warnings[0]


@pytest.mark.parametrize(
    ("domain", "status"), [("nullmx.test", b"Status: 5.1.10"), ("missing.test", b"Status: 5.1.2")]
)
def test_null_mx_and_missing_domain_bounce(
    server_factory, mx_world, domain: str, status: bytes
) -> None:
    primary, backup, dns = mx_world
    server = server_factory(
        base=mx_config(primary.port, dns(ZONE), f'"ext@example.test" = ["u@{domain}"]')
    )
    send(server, "alice@example.test", ["ext@example.test"], "Subject: nowhere\r\n\r\nb\r\n")
    raw = dsn_for(server, "alice@example.test").as_bytes()
    assert status in raw
    assert primary.messages == [] and backup.messages == []


def test_too_many_received_headers_is_a_loop(server: RunningServer) -> None:
    hops = "".join(
        f"Received: from hop{i}.test by hop{i + 1}.test; Sat, 28 Nov 2026 10:00:00 +0000\r\n"
        for i in range(31)
    )
    with smtplib.SMTP(server.host, server.port, timeout=10) as s:
        s.ehlo()
        s.mail("a@remote.test")
        s.rcpt("alice@example.test")
        code, text = s.data(hops + "Subject: loop\r\n\r\nb\r\n")
    assert (code, text[:5]) == (554, b"5.4.6")


def test_kill_9_during_delivery_under_load_loses_nothing(tmp_path: Path, sink: SinkServer) -> None:
    import threading

    from tests.helpers import ServerProcess

    config_path = tmp_path / "mw.toml"
    config_path.write_text(BASE_CONFIG + routed(sink))
    server = ServerProcess(config_path)
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            marker = f"k{n}x{i}"
            try:
                with smtplib.SMTP(server.host, server.port, timeout=5) as s:
                    s.sendmail(
                        "load@remote.test",
                        ["bob@example.test"],
                        f"Subject: {marker}\r\n\r\n{marker}\r\n",
                    )
            except (OSError, smtplib.SMTPException):
                return
            with lock:
                acknowledged.append(marker)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    wait_for(lambda: len(sink.messages) >= 20 and len(acknowledged) >= 40, timeout=60)
    server.proc.kill()
    server.wait()
    stop.set()
    for t in threads:
        t.join(10)
    server = ServerProcess(config_path)
    try:

        def all_arrived() -> bool:
            got = {m.body.rsplit(b"\r\n\r\n", 1)[-1].strip().decode() for m in sink.messages}
            return all(marker in got for marker in acknowledged)

        wait_for(all_arrived, timeout=60)
    finally:
        import signal

        server.proc.send_signal(signal.SIGTERM)
        assert server.wait() == 0


def test_deferred_mail_expires_after_max_age_with_a_bounce(server_factory) -> None:
    port = free_port()  # nothing listens there: every attempt fails temporarily
    server = server_factory(
        f'\n[routes]\n"elsewhere.test" = "127.0.0.1:{port}"\n[queue]\nretry = [1]\nmax_age = 2\n'
    )
    send(server, "alice@example.test", ["bob@example.test"], "Subject: too late\r\n\r\nb\r\n")
    raw = dsn_for(server, "alice@example.test").as_bytes()
    assert b"Status: 4.4.7" in raw
    assert b"Final-Recipient: rfc822; bob@elsewhere.test" in raw
    assert b"gave up after retrying for too long" in raw
    wait_for(lambda: server.call(lambda: server.app.store.list()) == [])


def test_one_connection_carries_several_messages_to_the_same_host(
    server_factory, sink: SinkServer
) -> None:
    server = server_factory(routed(sink))
    for i in range(3):
        send(server, "sender@remote.test", ["bob@example.test"], f"Subject: n{i}\r\n\r\nb\r\n")
        sink.wait_for_messages(i + 1)
    assert sink.connections == 1
    assert [m.body.rsplit(b"Subject: ", 1)[1][:2] for m in sink.messages] == [b"n0", b"n1", b"n2"]


def test_a_kept_connection_closed_by_the_peer_is_replaced_without_a_deferral(
    server_factory, sink: SinkServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The RSET before a reused connection's transaction rides in its pipelined write;
    if the peer hangs up on it unanswered, a new connection carries the message at once."""
    caplog.set_level(logging.INFO, logger="mailwright.delivery")
    server = server_factory(routed(sink))
    send(server, "sender@remote.test", ["bob@example.test"], "Subject: n0\r\n\r\nb\r\n")
    sink.wait_for_messages(1)
    sink.hang_up_at_next_command()
    send(server, "sender@remote.test", ["bob@example.test"], "Subject: n1\r\n\r\nb\r\n")
    sink.wait_for_messages(2)
    assert sink.connections == 2

    def outcomes() -> list[str]:
        return [r.getMessage() for r in caplog.records if "event=delivery " in r.getMessage()]

    wait_for(lambda: len(outcomes()) >= 2)  # logged once the result is recorded
    assert all("status=sent" in line for line in outcomes()), outcomes()
    assert [m.body.rsplit(b"Subject: ", 1)[1][:2] for m in sink.messages] == [b"n0", b"n1"]


def test_deliveries_to_one_destination_are_limited_and_wait_for_a_connection(
    server_factory, sink: SinkServer
) -> None:
    """[delivery] destination_concurrency: a burst to one slow destination opens at most
    that many connections; the other messages wait, reuse them, and all arrive."""
    sink.end_of_data_delay = 0.2
    server = server_factory(routed(sink, "[delivery]\ndestination_concurrency = 2\n"))
    with smtplib.SMTP(server.host, server.port, timeout=10) as s:
        for i in range(8):
            assert (
                s.sendmail("sender@remote.test", ["bob@example.test"], f"Subject: {i}\r\n\r\n")
                == {}
            )
    sink.wait_for_messages(8, timeout=30)
    assert sink.peak_sessions == 2
    assert sink.connections == 2  # the waiting messages took the connections given back
    limits = server.app.remote.limits
    wait_for(lambda: limits.in_use() == 0)  # nothing left behind for the destination
