"""open_session (one TLS-policy connect for delivery, send and probe) and the single steps."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
import trustme

from mailwright.client import (
    ExtensionNotOffered,
    OpenedSession,
    SessionObserver,
    SmtpClient,
    Timeouts,
    TlsError,
    TlsMode,
    TlsPolicy,
    Transcript,
    open_session,
    opportunistic_tls_context,
    verifying_context,
)
from mailwright.model import Address
from mailwright.protocol.reply import Reply
from tests.sink import Behaviour, SinkServer

BODY = b"Subject: steps\r\n\r\none step at a time\r\n"


class Steps(SessionObserver):
    """Notes each step open_session reports, as ``(hook, attempt)``."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def connecting(self, client: SmtpClient, attempt: int) -> None:
        self.seen.append(("connecting", attempt))

    def greeted(self, client: SmtpClient, attempt: int) -> None:
        self.seen.append(("greeted", attempt))

    def hello(self, client: SmtpClient, attempt: int, *, tls: bool) -> None:
        self.seen.append(("hello inside TLS" if tls else "hello", attempt))

    def starttls_not_offered(self, client: SmtpClient, attempt: int) -> None:
        self.seen.append(("not offered", attempt))

    def starttls_refused(self, client: SmtpClient, reply: Reply, attempt: int) -> None:
        self.seen.append((f"refused {reply.code}", attempt))

    def tls_started(self, client: SmtpClient, reply: Reply, attempt: int) -> None:
        self.seen.append(("tls started", attempt))

    def tls_failed(self, error: TlsError, attempt: int) -> None:
        self.seen.append(("tls failed", attempt))


def open_to(
    sink: SinkServer,
    policy: TlsPolicy,
    observer: SessionObserver | None = None,
    transcript: Transcript | None = None,
) -> OpenedSession:
    async def opened() -> OpenedSession:
        session = await open_session(
            sink.host,
            sink.port,
            policy,
            timeouts=Timeouts.uniform(10),
            local_hostname="client.test",
            transcript=transcript,
            observer=observer,
        )
        await session.client.quit()
        await session.client.close()
        return session

    return asyncio.run(opened())


def test_a_second_context_after_a_failed_handshake_then_tls(tls_sink: SinkServer) -> None:
    """probe's policy: verify first (the system CAs do not know the sink's), then look anyway."""
    steps = Steps()
    policy = TlsPolicy(
        TlsMode.OPPORTUNISTIC, (verifying_context, opportunistic_tls_context), "sink.test"
    )
    session = open_to(tls_sink, policy, steps)
    assert steps.seen == [
        ("connecting", 0), ("greeted", 0), ("hello", 0), ("tls failed", 0),
        ("connecting", 1), ("greeted", 1), ("hello", 1), ("tls started", 1),
        ("hello inside TLS", 1),
    ]  # fmt: skip
    assert session.tls_ehlo is not None and session.tls_failure is None
    assert session.client.tls_info is not None and not session.client.tls_info.verified
    assert tls_sink.connections == 2


def test_opportunistic_goes_on_in_plain_text_after_the_last_failed_handshake(
    tls_sink: SinkServer,
) -> None:
    steps = Steps()
    session = open_to(tls_sink, TlsPolicy(TlsMode.OPPORTUNISTIC, (verifying_context,)), steps)
    assert steps.seen[-4:] == [("tls failed", 0), ("connecting", 1), ("greeted", 1), ("hello", 1)]
    assert session.tls_ehlo is None and isinstance(session.tls_failure, TlsError)
    assert session.client.tls_info is None


def test_a_454_to_starttls_goes_on_in_plain_text_on_the_same_connection(
    tls_sink: SinkServer,
) -> None:
    """RFC 3207 4: the plain-text session is still usable after a 454; no second connection."""
    tls_sink.default = Behaviour(starttls=Reply(454, "4.7.0", "TLS not available"))
    steps = Steps()
    session = open_to(tls_sink, TlsPolicy(TlsMode.OPPORTUNISTIC), steps)
    assert steps.seen[-1] == ("refused 454", 0)
    assert session.starttls is not None and session.starttls.code == 454
    assert tls_sink.connections == 1


def test_verify_refuses_a_server_without_starttls_after_ehlo_alone(sink: SinkServer) -> None:
    transcript: Transcript = []
    with pytest.raises(ExtensionNotOffered, match="STARTTLS"):
        open_to(sink, TlsPolicy(TlsMode.VERIFY), transcript=transcript)
    assert [line for side, line in transcript if side == "C"] == ["EHLO client.test"]


def test_never_sends_no_starttls_even_when_offered(tls_sink: SinkServer) -> None:
    transcript: Transcript = []
    steps = Steps()
    session = open_to(tls_sink, TlsPolicy(TlsMode.NEVER), steps, transcript)
    assert steps.seen == [("connecting", 0), ("greeted", 0), ("hello", 0)]
    assert session.starttls is None and "STARTTLS" in session.ehlo.lines
    assert "STARTTLS" not in [line for side, line in transcript if side == "C"]


def test_verify_with_a_trusted_certificate_records_what_was_negotiated(
    ca: trustme.CA, tmp_path: Path
) -> None:
    leaf = ca.issue_cert("sink.test", "127.0.0.1")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(server_tls)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    sink = SinkServer(tls=server_tls)
    try:
        session = open_to(sink, TlsPolicy(TlsMode.VERIFY, cafile=ca_file))
    finally:
        sink.stop()
    info = session.client.tls_info
    assert info is not None and info.verified and info.server_name == "127.0.0.1"
    assert info.version is not None and info.version.startswith("TLSv1.")
    pem = leaf.cert_chain_pems[0].bytes().decode("ascii")
    assert info.certificate == ssl.PEM_cert_to_DER_cert(pem)


def test_one_transaction_a_step_at_a_time(sink: SinkServer) -> None:
    """mail, rcpt, data, send_body: every reply handed back; last_command names each step."""

    async def steps() -> list[tuple[str, int]]:
        async with SmtpClient(timeouts=Timeouts.uniform(10)) as client:
            await client.connect(sink.host, sink.port, local_hostname="client.test")
            await client.ehlo()
            seen = []
            for step in (
                client.mail(Address("sender", "client.test")),
                client.rcpt("alice@sink.test"),
                client.rcpt("bob@sink.test"),
                client.data(),
                client.send_body(BODY),
            ):
                reply = await step
                seen.append((client.last_command, reply.code))
            return seen

    sink.default = Behaviour(rcpt={"bob@sink.test": Reply(550, "5.1.1", "No such user")})
    assert asyncio.run(steps()) == [
        ("MAIL FROM:<sender@client.test>", 250),
        ("RCPT TO:<alice@sink.test>", 250),
        ("RCPT TO:<bob@sink.test>", 550),
        ("DATA", 354),
        (".", 250),
    ]
    (message,) = sink.wait_for_messages(1)
    assert message.recipients == (Address("alice", "sink.test"),) and message.body == BODY
