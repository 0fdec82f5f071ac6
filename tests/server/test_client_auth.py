"""mailwright's own client authenticating to mailwright's submission port (AUTH PLAIN and LOGIN)."""

from __future__ import annotations

import argparse
import asyncio
import io
import ssl
from pathlib import Path

import pytest
import trustme

from mailwright.cli.send import add_arguments, run_send
from mailwright.client import CommandRefused, SmtpClient, send
from mailwright.server.session import ListenerKind
from tests.helpers import RunningServer
from tests.server.test_tls_auth import (  # noqa: F401 - fixtures
    ALICE,
    ALICE_PASSWORD,
    address,
    ca,
    client_tls,
    queued,
    server,
)

SERVER_NAME = "mx.example.test"


def test_send_with_login_relays_through_submission(
    server: RunningServer,  # noqa: F811
    client_tls: ssl.SSLContext,  # noqa: F811
) -> None:
    host, port = address(server, ListenerKind.SUBMISSION)
    result = asyncio.run(
        send(
            b"Subject: via submission\r\n\r\nhi\r\n",
            sender=ALICE,
            recipients=["friend@faraway.test"],
            host=host,
            port=port,
            starttls=True,
            ssl_context=client_tls,
            server_hostname=SERVER_NAME,
            login=(ALICE, ALICE_PASSWORD),
        )
    )
    assert result.delivered and result.tls
    targets = [str(r.target.address) for m in queued(server) for r in m.recipients]
    assert targets == ["friend@faraway.test"]


async def _login(
    host: str, port: int, context: ssl.SSLContext, password: str, mechanism: str | None
) -> tuple[int, list[tuple[str, str]]]:
    transcript: list[tuple[str, str]] = []
    async with SmtpClient(transcript=transcript) as client:
        await client.connect(host, port)
        await client.ehlo()
        await client.starttls(context, SERVER_NAME)
        reply = await client.login(ALICE, password, mechanism)
        return reply.code, transcript


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_client_login_with_each_mechanism(
    server: RunningServer,  # noqa: F811
    client_tls: ssl.SSLContext,  # noqa: F811
    mechanism: str,
) -> None:
    host, port = address(server, ListenerKind.SUBMISSION)
    code, transcript = asyncio.run(_login(host, port, client_tls, ALICE_PASSWORD, mechanism))
    assert code == 235
    text = "\n".join(line for _, line in transcript)
    assert f"AUTH {mechanism}" in text
    assert ALICE_PASSWORD not in text and "Y29ycmVjdCBob3JzZSBiYXR0ZXJ5" not in text


def test_client_login_with_a_wrong_password_is_refused(
    server: RunningServer,  # noqa: F811
    client_tls: ssl.SSLContext,  # noqa: F811
) -> None:
    host, port = address(server, ListenerKind.SUBMISSION)
    with pytest.raises(CommandRefused) as info:
        asyncio.run(_login(host, port, client_tls, "wrong", None))
    assert info.value.reply is not None and info.value.reply.code == 535


def test_send_cli_with_user(
    server: RunningServer,  # noqa: F811
    ca: trustme.CA,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host, port = address(server, ListenerKind.SUBMISSION)
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    monkeypatch.setenv("MAILWRIGHT_PASSWORD", ALICE_PASSWORD)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--server", f"{host}:{port}", "--from", ALICE, "--to", "friend@faraway.test",
            "--starttls", "--cafile", str(cafile), "--tls-name", SERVER_NAME, "--user", ALICE,
        ]
    )  # fmt: skip
    out = io.StringIO()
    assert run_send(args, stdout=out) == 0, out.getvalue()
    assert ALICE_PASSWORD not in out.getvalue()
    assert len(queued(server)) == 1
