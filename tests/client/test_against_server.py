"""SmtpClient and send() against a real mailwright server on loopback: mail lands in Maildir."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path

from mailwright.client import SmtpClient, Timeouts, Transcript, send
from mailwright.model import Address
from tests.helpers import RunningServer, maildir_messages, run, wait_for

ALICE = "alice@example.test"
DAVE = "dave@example.test"



def delivered(server: RunningServer, address: str, n: int = 1) -> list[bytes]:
    found = wait_for(lambda: len(maildir_messages(server.data_dir, address)) >= n)
    assert found
    return maildir_messages(server.data_dir, address)


def test_send_lands_in_maildir_with_every_reply(server: RunningServer) -> None:
    transcript: Transcript = []
    result = run(
        lambda: send(
            b"Subject: hello\n\n.starts with a dot\nend",
            sender="sender@remote.test",
            recipients=[ALICE],
            host=server.host,
            port=server.port,
            local_hostname="client.test",
            transcript=transcript,
        )
    )
    assert result.delivered and result.accepted == (Address.from_text(ALICE),)
    assert result.greeting.code == 220 and result.ehlo.code == 250
    assert result.transaction.mail.code == 250
    # Our server offers CHUNKING: the body went in one BDAT chunk, not after DATA.
    assert result.transaction.data is None
    end = result.transaction.end_of_data
    assert end is not None and end.text.startswith("Ok: queued as ")
    assert result.quit is not None and result.quit.code == 221
    (message,) = delivered(server, ALICE)
    assert b"Received: from client.test ([127.0.0.1])" in message
    sent = b"Subject: hello\r\n\r\n.starts with a dot\r\nend\r\n"  # lines made CRLF, dot as is
    assert message.endswith(sent)
    assert ("C", f"BDAT {len(sent)} LAST") in transcript
    assert ("C", "EHLO client.test") in transcript
    assert transcript[-2:] == [("C", "QUIT"), ("S", "221 2.0.0 Bye")]


def test_routing_replies_are_reported_per_recipient(server: RunningServer) -> None:
    recipients = [ALICE, "bob@example.test", "carol@example.test", "nobody@example.test"]
    result = run(
        lambda: send(
            "Subject: routes\r\n\r\nx\r\n",
            sender="a@remote.test",
            recipients=recipients,
            host=server.host,
            port=server.port,
            local_hostname="client.test",
        )
    )
    by_address = {str(r.address): r.reply for r in result.transaction.recipients}
    assert {a: (r.code if r else None) for a, r in by_address.items()} == {
        ALICE: 250,
        "bob@example.test": 251,
        "carol@example.test": 551,
        "nobody@example.test": 550,
    }
    assert str(by_address["carol@example.test"]) == (
        "551 5.1.6 User not local; please try <carol@newcorp.test>"
    )
    assert [str(a) for a in result.accepted] == [ALICE, "bob@example.test"]
    assert [str(r.address) for r in result.refused] == ["carol@example.test", "nobody@example.test"]
    assert result.delivered
    delivered(server, ALICE)


def test_several_transactions_on_one_connection(server: RunningServer) -> None:
    async def session() -> list[bool]:
        outcomes = []
        async with SmtpClient(timeouts=Timeouts.uniform(10)) as client:
            await client.connect(server.host, server.port, local_hostname="client.test")
            await client.ehlo()
            for rcpt in (ALICE, "nobody@example.test", DAVE):
                result = await client.send_transaction(
                    "a@remote.test", [rcpt], b"Subject: n\r\n\r\nx\r\n"
                )
                outcomes.append(result.delivered)
            assert (await client.noop()).code == 250
        return outcomes

    # The refused transaction leaves the server in a transaction: the next one starts with RSET.
    assert run(session) == [True, False, True]
    delivered(server, ALICE)
    delivered(server, DAVE)


def test_file_body_is_streamed_and_line_endings_normalised(
    server: RunningServer, tmp_path: Path
) -> None:
    lines = [f"line {i} " + "x" * 70 for i in range(40_000)]  # ~3 MB, many 64 KiB chunks
    lines[1000] = ".a line starting with a dot"
    path = tmp_path / "message.eml"
    path.write_bytes(b"Subject: big\n\n" + "\n".join(lines).encode() + b"\n")

    async def session() -> bool:
        async with SmtpClient(timeouts=Timeouts.uniform(30)) as client:
            await client.connect(server.host, server.port, local_hostname="client.test")
            await client.ehlo()
            with path.open("rb") as body:
                result = await client.send_transaction("a@remote.test", [ALICE], body)
            return result.delivered

    assert run(session)
    (message,) = delivered(server, ALICE)
    expected = b"Subject: big\r\n\r\n" + "\r\n".join(lines).encode() + b"\r\n"
    assert message.endswith(expected)


def test_async_iterator_body(server: RunningServer) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        for piece in (b"Subject: parts\r\n", b"\r\n", b"one\r", b"\ntwo", b"\r\n.\r\n", b"three"):
            yield piece

    async def session() -> bool:
        async with SmtpClient() as client:
            await client.connect(server.host, server.port, local_hostname="client.test")
            await client.ehlo()
            return (await client.send_transaction(None, [ALICE], pieces())).delivered

    assert run(session)
    (message,) = delivered(server, ALICE)
    assert message.startswith(b"Return-Path: <>\r\n")
    assert message.endswith(b"Subject: parts\r\n\r\none\r\ntwo\r\n.\r\nthree\r\n")


def test_email_message_and_smtputf8_sender(server: RunningServer) -> None:
    message = EmailMessage()
    message["Subject"] = "héllo"
    message["From"] = "José <jose@remote.test>"
    message["To"] = ALICE
    message.set_content("ça marche\n")
    transcript: Transcript = []
    result = run(
        lambda: send(
            message,
            sender="josé@remote.test",
            recipients=ALICE,
            host=server.host,
            port=server.port,
            local_hostname="client.test",
            transcript=transcript,
        )
    )
    assert result.delivered
    mail_line = next(line for side, line in transcript if line.startswith("MAIL"))
    assert mail_line.startswith("MAIL FROM:<josé@remote.test> SIZE=")
    assert mail_line.endswith(" SMTPUTF8")
    (stored,) = delivered(server, ALICE)
    assert "Return-Path: <josé@remote.test>".encode() in stored
    assert "ça marche".encode() in stored


def test_bytes_body_with_8bit_octets_is_declared_8bitmime(server: RunningServer) -> None:
    transcript: Transcript = []
    run(
        lambda: send(
            "Subject: x\r\n\r\nnaïve\r\n".encode(),
            sender="a@remote.test",
            recipients=[ALICE],
            host=server.host,
            port=server.port,
            local_hostname="client.test",
            transcript=transcript,
        )
    )
    assert ("C", "MAIL FROM:<a@remote.test> SIZE=22 BODY=8BITMIME") in transcript
    delivered(server, ALICE)


def test_bytesio_body(server: RunningServer) -> None:
    async def session() -> bool:
        async with SmtpClient() as client:
            await client.connect(server.host, server.port, local_hostname="client.test")
            await client.ehlo()
            body = io.BytesIO(b"Subject: io\r\n\r\nfrom memory\r\n")
            return (await client.send_transaction("a@remote.test", [DAVE], body)).delivered

    assert run(session)
    assert delivered(server, DAVE)[0].endswith(b"from memory\r\n")
