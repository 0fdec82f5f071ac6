"""Relaying with BDAT (RFC 3030): the next hop's CHUNKING and BINARYMIME decide."""

from __future__ import annotations

import email
from collections.abc import Iterator

import pytest

from mailwright.protocol.reply import Reply
from tests.delivery.test_remote_delivery import ZONE, mx_config, routed
from tests.dns_server import LoopbackDns
from tests.helpers import RawClient, RunningServer, maildir_messages, wait_for
from tests.sink import Behaviour, SinkServer

BINARY = b"Subject: bin\r\n\r\n\x00\xff\n\r.\r\n" + bytes(range(256))


@pytest.fixture
def chunking_sink() -> Iterator[SinkServer]:
    server = SinkServer(chunking=True)
    yield server
    server.stop()


def forward_in_chunks(server: RunningServer, body: bytes, mail_params: bytes = b"") -> None:
    """alice@example.test sends to bob@example.test (forwarded to bob@elsewhere.test) with BDAT."""
    client = RawClient(server.host, server.port)
    client.read_reply()
    client.send(
        b"EHLO client.example\r\nMAIL FROM:<alice@example.test>%s\r\n"
        b"RCPT TO:<bob@example.test>\r\nBDAT %d LAST\r\n%s" % (mail_params, len(body), body)
    )
    _ehlo, mail, rcpt, end = client.replies(4)
    assert (mail, rcpt[:3]) == ("250 2.1.0 Ok", "251")
    assert end.startswith("250 2.0.0 Ok: queued as "), end
    client.close()


def test_relayed_in_bdat_chunks_when_the_next_hop_offers_chunking(
    server_factory, chunking_sink: SinkServer
) -> None:
    server = server_factory(routed(chunking_sink))
    forward_in_chunks(server, b"Subject: c\r\n\r\n.dot\r\n")
    (message,) = chunking_sink.wait_for_messages(1)
    assert message.chunks == 1 and message.body.endswith(b"\r\nSubject: c\r\n\r\n.dot\r\n")
    wait_for(lambda: server.call(lambda: server.app.store.list()) == [])


def test_binarymime_relayed_octet_for_octet(server_factory, chunking_sink: SinkServer) -> None:
    server = server_factory(routed(chunking_sink))
    forward_in_chunks(server, BINARY, b" BODY=BINARYMIME")
    (message,) = chunking_sink.wait_for_messages(1)
    assert message.mail_params.get("BODY") == "BINARYMIME"
    assert message.body.endswith(b"\r\n" + BINARY)


def test_binarymime_to_a_next_hop_without_it_bounces_554_5_6_3(
    server_factory, sink: SinkServer
) -> None:
    """RFC 3030 3: a BINARYMIME message is not converted for a hop that cannot take it."""
    server = server_factory(routed(sink))
    forward_in_chunks(server, BINARY, b" BODY=BINARYMIME")
    [raw] = wait_for(lambda: maildir_messages(server.data_dir, "alice@example.test"), timeout=30)
    report = email.message_from_bytes(raw).as_bytes()
    assert b"Status: 5.6.3" in report
    assert b"554 5.6.3" in report and b"does not offer BINARYMIME" in report
    wait_for(lambda: server.call(lambda: server.app.store.list()) == [])
    assert sink.messages == [] and sink.connections >= 1


def test_binarymime_waits_for_a_primary_that_is_down_when_the_backup_lacks_it(
    server_factory,
) -> None:
    """The primary MX is down for the moment (421), the backup does not offer BINARYMIME:
    the backup's 554 5.6.3 is not the last word, since the primary may take the message
    later; it is retried, not bounced."""
    primary = SinkServer(host="127.0.0.2", chunking=True)
    backup = SinkServer(host="127.0.0.1", port=primary.port)
    dns = LoopbackDns(ZONE)
    try:
        primary.script(Behaviour(greeting=Reply(421, "4.3.2", "Going away")))
        server = server_factory(
            base=mx_config(primary.port, dns, '"ext@example.test" = ["u@pref.test"]')
        )
        client = RawClient(server.host, server.port)
        client.read_reply()
        client.send(
            b"EHLO client.example\r\nMAIL FROM:<sender@remote.test> BODY=BINARYMIME\r\n"
            b"RCPT TO:<ext@example.test>\r\nBDAT %d LAST\r\n%s" % (len(BINARY), BINARY)
        )
        assert client.replies(4)[-1].startswith("250 2.0.0 Ok: queued as ")
        client.close()
        (message,) = primary.wait_for_messages(1)
        assert message.body.endswith(b"\r\n" + BINARY)
        assert backup.connections >= 1 and backup.messages == []
    finally:
        primary.stop()
        backup.stop()
        dns.stop()
