"""STARTTLS (RFC 3207) against the TLS sink, with certificates from a throwaway trustme CA."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from typing import Any

import pytest
import trustme

from mailwright.client import (
    CommandRefused,
    ExtensionNotOffered,
    SendResult,
    SmtpClient,
    TlsError,
    Transcript,
    opportunistic_tls_context,
    send,
)
from mailwright.protocol.reply import Reply
from tests.helpers import run
from tests.peers import ScriptedPeer, read_line
from tests.sink import Behaviour, SinkServer

BODY = b"Subject: secret\r\n\r\nhello\r\n"



def send_to(sink: SinkServer, transcript: Transcript | None = None, **options: Any) -> SendResult:
    return run(
        lambda: send(
            BODY,
            sender="sender@client.test",
            recipients=["alice@sink.test"],
            host=sink.host,
            port=sink.port,
            local_hostname="client.test",
            timeout=10,
            transcript=transcript,
            **options,
        )
    )


def test_required_starttls_with_a_verified_certificate(
    tls_sink: SinkServer, client_tls: ssl.SSLContext
) -> None:
    transcript: Transcript = []
    result = send_to(
        tls_sink, transcript, starttls=True, ssl_context=client_tls, server_hostname="sink.test"
    )
    assert result.tls and result.delivered
    assert "STARTTLS" in result.ehlo.lines
    assert result.starttls == Reply(220, "2.0.0", "Ready to start TLS")
    assert result.tls_ehlo is not None and "STARTTLS" not in result.tls_ehlo.lines
    (message,) = tls_sink.wait_for_messages(1)
    assert message.tls and message.body == BODY
    commands = [line for side, line in transcript if side == "C"]
    assert commands[:3] == ["EHLO client.test", "STARTTLS", "EHLO client.test"]  # RFC 3207 4.2


def test_starttls_checks_the_host_name(tls_sink: SinkServer, client_tls: ssl.SSLContext) -> None:
    with pytest.raises(TlsError, match="certificate"):
        send_to(tls_sink, starttls=True, ssl_context=client_tls, server_hostname="other.test")


def test_required_starttls_with_an_untrusted_certificate_fails(tls_sink: SinkServer) -> None:
    with pytest.raises(TlsError, match="certificate verify failed"):
        send_to(tls_sink, starttls=True)  # the default context does not know the test CA
    assert tls_sink.messages == []


def test_opportunistic_starttls_encrypts_without_verifying(tls_sink: SinkServer) -> None:
    result = send_to(tls_sink)
    assert result.tls and result.delivered
    assert tls_sink.wait_for_messages(1)[0].tls


def test_opportunistic_starttls_falls_back_to_plain_text_when_the_handshake_fails(
    ca: trustme.CA,
) -> None:
    tls13_only = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("sink.test").configure_cert(tls13_only)
    tls13_only.minimum_version = ssl.TLSVersion.TLSv1_3
    at_most_tls12 = opportunistic_tls_context()
    at_most_tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    sink = SinkServer(tls=tls13_only)
    try:
        transcript: Transcript = []
        result = send_to(sink, transcript, ssl_context=at_most_tls12)
        assert not result.tls and result.delivered
        assert sink.connections == 2  # the failed handshake spoilt the first one
        assert not sink.wait_for_messages(1)[0].tls
        assert [line for side, line in transcript if side == "C"].count("STARTTLS") == 1
        with pytest.raises(TlsError):
            send_to(sink, starttls=True, ssl_context=at_most_tls12)
    finally:
        sink.stop()


def test_starttls_454_goes_on_in_plain_text_unless_required(tls_sink: SinkServer) -> None:
    tls_sink.default = Behaviour(starttls=Reply(454, "4.7.0", "TLS not available"))
    result = send_to(tls_sink)
    assert result.starttls is not None and result.starttls.code == 454
    assert not result.tls and result.delivered
    with pytest.raises(CommandRefused, match="454"):
        send_to(tls_sink, starttls=True)


def test_starttls_required_but_not_offered(sink: SinkServer) -> None:
    with pytest.raises(ExtensionNotOffered, match="STARTTLS"):
        send_to(sink, starttls=True)
    assert sink.messages == []


def test_starttls_false_stays_in_plain_text(tls_sink: SinkServer) -> None:
    result = send_to(tls_sink, starttls=False)
    assert not result.tls and result.starttls is None and result.delivered


def test_smtp_client_starttls_then_transactions(
    tls_sink: SinkServer, client_tls: ssl.SSLContext
) -> None:
    async def session() -> tuple[bool, bool]:
        async with SmtpClient() as client:
            await client.connect(tls_sink.host, tls_sink.port, local_hostname="client.test")
            await client.ehlo()
            assert client.capabilities.starttls and not client.tls
            await client.starttls(client_tls, "sink.test")
            assert client.tls and not client.capabilities.starttls
            assert client.capabilities.pipelining
            first = await client.send_transaction("a@client.test", ["b@sink.test"], BODY)
            second = await client.send_transaction("a@client.test", ["c@sink.test"], BODY)
            return first.delivered, second.delivered

    assert run(session) == (True, True)
    assert [m.tls for m in tls_sink.wait_for_messages(2)] == [True, True]


def test_plain_text_injected_after_220_is_not_read_as_tls(
    scripted_peer: Callable[..., ScriptedPeer], server_tls: ssl.SSLContext
) -> None:
    """CVE-2011-0411: a reply smuggled in with the 220 must not answer the EHLO sent inside TLS."""
    seen_inside_tls: list[bytes] = []

    def injector(sock: socket.socket) -> None:
        buf = bytearray()
        sock.sendall(b"220 evil.test ESMTP\r\n")
        read_line(sock, buf)
        sock.sendall(b"250-evil.test\r\n250 STARTTLS\r\n")
        read_line(sock, buf)  # STARTTLS
        sock.sendall(b"220 go ahead\r\n250-evil.test\r\n250 AUTH PLAIN\r\n")
        tls = server_tls.wrap_socket(sock, server_side=True)
        inner = bytearray()
        seen_inside_tls.append(read_line(tls, inner))
        tls.sendall(b"250-evil.test\r\n250 PIPELINING\r\n")
        seen_inside_tls.append(read_line(tls, inner))
        tls.sendall(b"221 bye\r\n")

    peer = scripted_peer(injector)

    async def session() -> tuple[str, ...]:
        async with SmtpClient() as client:
            await client.connect(peer.host, peer.port, local_hostname="client.test")
            await client.ehlo()
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            await client.starttls(context)
            assert client.ehlo_reply is not None
            return client.ehlo_reply.lines

    assert run(session) == ("evil.test", "PIPELINING")
    assert seen_inside_tls == [b"EHLO client.test", b"QUIT"]
