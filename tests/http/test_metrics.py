"""``/metrics``, ``/healthz`` and ``/readyz`` of a real server, read with prometheus_client's parser
before and after real SMTP traffic (smtplib and raw sockets), in one process and in several."""

from __future__ import annotations

import re
import smtplib
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

from mailwright.protocol.reply import Reply
from mailwright.server.services import ListenerKind
from tests.helpers import (
    AdminClient,
    RawClient,
    RunningServer,
    ServerProcess,
    maildir_messages,
    wait_for,
)
from tests.server.test_tls_auth import ALICE, TLS_CONFIG, write_pems
from tests.sink import Behaviour, SinkServer

HTTP = '[http]\nlisten = "127.0.0.1:0"\n'
MESSAGE = b"From: me@example.org\r\nSubject: counted\r\n\r\nhello\r\n"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(admin: AdminClient) -> Samples:
    status, text = admin.get("/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def admin_of(server: RunningServer) -> AdminClient:
    assert server.app is not None and server.app.http is not None
    return AdminClient(*server.app.http.address)


@pytest.fixture
def counted(server_factory: Callable[..., RunningServer]) -> RunningServer:
    return server_factory(HTTP)


def test_health_and_readiness_need_no_token(
    server_factory: Callable[..., RunningServer], tmp_path: Path
) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    server = server_factory(HTTP + 'token_file = "token"\n')
    admin = admin_of(server)
    assert admin.get("/healthz") == (200, {"status": "ok"})
    assert admin.get("/readyz") == (200, {"status": "ready"})
    assert admin.get("/metrics")[0] == 200
    assert admin.get("/api/v1/queue")[0] == 401


def test_smtp_traffic_is_counted(counted: RunningServer) -> None:
    admin = admin_of(counted)
    before = scrape(admin)
    assert value(before, "mailwright_smtp_messages_total") == 0
    assert value(before, "mailwright_queue_messages", state="queued") == 0

    with smtplib.SMTP(counted.host, counted.port) as client:
        client.ehlo("client.test")
        client.mail("me@example.org")
        assert client.rcpt("nobody@example.test")[0] == 550
        assert client.rcpt("alice@example.test")[0] == 250
        client.data(MESSAGE)
    raw = RawClient(counted.host, counted.port)
    raw.read_reply()
    raw.send(b"RCPT TO:<alice@example.test>\r\n")
    assert raw.read_reply().startswith("503")
    raw.send(b"QUIT\r\n")
    raw.read_until_closed()
    raw.close()
    wait_for(lambda: maildir_messages(counted.data_dir, "alice@example.test"))

    def settled() -> Samples | None:
        samples = scrape(admin)
        if value(samples, "mailwright_smtp_sessions", listener="smtp") != 0:
            return None  # a session still closing
        if value(samples, "mailwright_delivery_seconds_count") != 1:
            return None
        return samples

    after = wait_for(settled)
    assert isinstance(after, dict)
    assert value(after, "mailwright_smtp_connections_total", listener="smtp") == 2
    assert value(after, "mailwright_smtp_messages_total") == 1
    assert value(after, "mailwright_smtp_message_bytes_total") >= len(MESSAGE)
    replies = "mailwright_smtp_replies_total"
    assert value(after, replies, command="connect", code="220") == 2
    assert value(after, replies, command="EHLO", code="250") == 1
    assert value(after, replies, command="RCPT", code="550") == 1
    assert value(after, replies, command="RCPT", code="250") == 1
    assert value(after, replies, command="DATA", code="354") == 1
    assert value(after, replies, command="DATA", code="250") == 1
    assert value(after, replies, command="invalid", code="503") == 1
    assert value(after, replies, command="QUIT", code="221") == 2
    attempts = "mailwright_delivery_attempts_total"
    assert value(after, attempts, relay="local", status="sent") == 1
    assert value(after, "mailwright_queue_messages", state="queued") == 0
    assert value(after, "mailwright_auth_failures_total") == 0


def test_next_hop_replies_and_deferred_mail_are_counted(
    server_factory: Callable[..., RunningServer], sink: SinkServer
) -> None:
    sink.default = Behaviour(rcpt=Reply(451, "4.3.0", "Not now"))
    server = server_factory(
        HTTP + f'[routes]\n"elsewhere.test" = "127.0.0.1:{sink.port}"\n'
        '[relay]\nnetworks = ["127.0.0.0/8"]\n'
    )
    admin = admin_of(server)
    with smtplib.SMTP(server.host, server.port) as client:
        client.sendmail("me@example.test", ["x@elsewhere.test"], MESSAGE)

    def deferred() -> Samples | None:
        samples = scrape(admin)
        counted = value(
            samples, "mailwright_delivery_attempts_total", relay="remote", status="deferred"
        )
        return samples if counted == 1 else None

    after = wait_for(deferred)
    assert isinstance(after, dict)
    assert value(after, "mailwright_remote_replies_total", code="451") == 1
    assert value(after, "mailwright_queue_messages", state="deferred") == 1
    assert value(after, "mailwright_queue_oldest_seconds") >= 0
    assert value(after, "mailwright_delivery_seconds_count") == 0


def test_tls_handshakes_and_auth_failures_are_counted(
    server_factory: Callable[..., RunningServer], tmp_path: Path
) -> None:
    ca = trustme.CA()
    write_pems(ca, tmp_path)
    server = server_factory(HTTP, base=TLS_CONFIG)
    assert server.app is not None
    admin = admin_of(server)
    context = ssl.create_default_context()
    ca.configure_trust(context)
    listener = server.app.listener
    host, port = listener.addresses_of(ListenerKind.IMPLICIT_TLS)[0]
    with smtplib.SMTP_SSL(host, port, context=context) as c:
        c.ehlo("client.test")
        with pytest.raises(smtplib.SMTPAuthenticationError):
            c.login(ALICE, "wrong password")
    host, port = listener.addresses_of(ListenerKind.SUBMISSION)[0]
    with smtplib.SMTP(host, port) as client:
        client.starttls(context=context)
        client.ehlo("client.test")

    def settled() -> Samples | None:
        samples = scrape(admin)
        open_now = sum(
            value(samples, "mailwright_smtp_sessions", listener=kind.value) for kind in ListenerKind
        )
        return samples if open_now == 0 else None

    after = wait_for(settled)
    assert isinstance(after, dict)
    handshakes = "mailwright_tls_handshakes_total"
    assert value(after, handshakes, listener="implicit_tls", version="TLSv1.3") == 1
    assert value(after, handshakes, listener="submission", version="TLSv1.3") == 1
    # smtplib's login tries each mechanism offered (PLAIN, then LOGIN): two refusals.
    assert value(after, "mailwright_auth_failures_total") == 2
    assert value(after, "mailwright_smtp_replies_total", command="AUTH", code="535") == 2
    assert value(after, "mailwright_smtp_replies_total", command="STARTTLS", code="220") == 1
    assert value(after, "mailwright_smtp_connections_total", listener="submission") == 1


def test_several_processes_count_every_message_once(tmp_path: Path) -> None:
    """Acceptors receive, the server process delivers and serves /metrics: the sum is exact."""
    config = tmp_path / "mailwright.toml"
    config.write_text(
        'hostname = "mx.example.test"\ndata_dir = "data"\n'
        '[smtp]\nlisten = ["127.0.0.1:0"]\nprocesses = 2\n'
        '[domains]\nlocal = ["example.test"]\nauto_mailbox = ["example.test"]\n' + HTTP
    )
    server = ServerProcess(config)
    try:
        found = wait_for(
            lambda: (
                re.search(r"address=127\.0\.0\.1:(\d+) kind=http", server.log())
                and len(re.findall(r"kind=smtp", server.log())) == 2
                and re.search(r"address=127\.0\.0\.1:(\d+) kind=http", server.log())
            )
        )
        assert isinstance(found, re.Match)
        admin = AdminClient("127.0.0.1", int(found.group(1)))
        smtp_port = int(re.findall(r"address=127\.0\.0\.1:(\d+) kind=smtp", server.log())[0])
        sent = 6
        for n in range(sent):  # new connections: the kernel spreads them over both acceptors
            with smtplib.SMTP("127.0.0.1", smtp_port) as client:
                client.sendmail("me@example.org", [f"user{n}@example.test"], MESSAGE)
        wait_for(
            lambda: (
                value(
                    scrape(admin),
                    "mailwright_delivery_attempts_total",
                    relay="local",
                    status="sent",
                )
                == sent
            )
        )
        samples = scrape(admin)
        assert value(samples, "mailwright_smtp_messages_total") == sent
        assert value(samples, "mailwright_smtp_connections_total", listener="smtp") == sent
        assert value(samples, "mailwright_smtp_replies_total", command="DATA", code="250") == sent
        assert value(samples, "mailwright_delivery_seconds_count") == sent
    finally:
        server.proc.terminate()
        assert server.wait() == 0


def test_a_reload_keeps_counting_into_the_same_metrics(counted: RunningServer) -> None:
    """SIGHUP swaps the session services whole: the new ones must count where /metrics
    reads, or every message after a reload would go uncounted."""
    assert counted.app is not None
    before = counted.app.listener.services
    after = before.reloaded(counted.config)
    assert after.metrics is before.metrics
    counted.app.listener.services = after
    with smtplib.SMTP(counted.host, counted.port) as client:
        client.sendmail("me@example.org", ["alice@example.test"], MESSAGE)
    samples = scrape(admin_of(counted))
    assert value(samples, "mailwright_smtp_messages_total") == 1
