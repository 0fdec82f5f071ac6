"""The client's BDAT (RFC 3030) against the sink, with and without CHUNKING offered."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from mailwright.client import ExtensionNotOffered, SmtpClient, Transcript, send
from mailwright.client.transaction import BODY_CHUNK_SIZE, TransactionResult
from mailwright.protocol.reply import Reply
from tests.helpers import run
from tests.peers import ScriptedPeer, read_line
from tests.sink import Behaviour, SinkServer

ALICE = "alice@sink.test"
#: Three chunks' worth, bare LF line endings, a line that is only a dot.
BIG = b"Subject: big\n\n" + b".\n" + b"x" * 70 + b"\n" + b"y" * (2 * BODY_CHUNK_SIZE)


@pytest.fixture
def chunking_sink() -> Iterator[SinkServer]:
    server = SinkServer(chunking=True)
    yield server
    server.stop()


def send_to(sink: SinkServer, body: bytes, transcript: Transcript | None = None) -> None:
    result = run(
        lambda: send(
            body,
            sender="sender@client.test",
            recipients=[ALICE],
            host=sink.host,
            port=sink.port,
            local_hostname="client.test",
            timeout=10,
            transcript=transcript,
        )
    )
    assert result.delivered


def transact(
    sink: SinkServer, body: bytes, transcript: Transcript | None = None, **options: bool
) -> TransactionResult:
    async def go() -> TransactionResult:
        async with SmtpClient(transcript=transcript) as client:
            await client.connect(sink.host, sink.port, local_hostname="client.test")
            await client.ehlo()
            return await client.send_transaction("sender@client.test", [ALICE], body, **options)

    return run(go)


def bdat_lines(transcript: Transcript) -> list[str]:
    return [line for side, line in transcript if side == "C" and line.startswith("BDAT")]


def test_without_chunking_the_body_goes_after_data(sink: SinkServer) -> None:
    transcript: Transcript = []
    send_to(sink, BIG, transcript)
    (message,) = sink.wait_for_messages(1)
    assert message.chunks == 0 and ("C", "DATA") in transcript and not bdat_lines(transcript)


def test_with_chunking_the_same_message_goes_in_bdat_chunks(
    sink: SinkServer, chunking_sink: SinkServer
) -> None:
    """The message stored is the one DATA gives: lines made CRLF, dots not stuffed."""
    transcript: Transcript = []
    send_to(chunking_sink, BIG, transcript)
    send_to(sink, BIG)
    (chunked,) = chunking_sink.wait_for_messages(1)
    (by_data,) = sink.wait_for_messages(1)
    assert chunked.body == by_data.body
    assert chunked.body.startswith(b"Subject: big\r\n\r\n.\r\n") and chunked.body.endswith(b"y\r\n")
    assert chunked.chunks == 3
    lines = bdat_lines(transcript)
    assert len(lines) == 3 and lines[-1].endswith(" LAST") and ("C", "DATA") not in transcript
    assert sum(int(line.split()[1]) for line in lines) == len(chunked.body)


def test_chunks_in_lockstep_without_pipelining(chunking_sink: SinkServer) -> None:
    chunking_sink.default = Behaviour(hide=frozenset({"PIPELINING"}))
    send_to(chunking_sink, BIG)
    (message,) = chunking_sink.wait_for_messages(1)
    assert message.chunks == 3 and message.body.endswith(b"y\r\n")


def test_binarymime_body_goes_as_it_is(chunking_sink: SinkServer) -> None:
    body = b"Subject: bin\r\n\r\n\x00\n\r.\r\n" + bytes(range(256)) * 600
    result = transact(chunking_sink, body, binarymime=True)
    assert result.delivered and result.data is None
    (message,) = chunking_sink.wait_for_messages(1)
    assert message.body == body
    assert message.mail_params.get("BODY") == "BINARYMIME"


def test_binarymime_needs_the_server_to_offer_it(
    sink: SinkServer, chunking_sink: SinkServer
) -> None:
    chunking_sink.default = Behaviour(hide=frozenset({"BINARYMIME"}))
    for peer in (sink, chunking_sink):
        with pytest.raises(ExtensionNotOffered, match="BINARYMIME"):
            transact(peer, b"\x00", binarymime=True)
        assert peer.messages == []


def test_a_refused_chunk_ends_the_message(chunking_sink: SinkServer) -> None:
    """RFC 3030 2: after a refused chunk no more are sent; that refusal is the result."""
    full = Reply(452, "4.3.1", "Insufficient system storage")
    chunking_sink.default = Behaviour(chunk=full)
    transcript: Transcript = []
    result = transact(chunking_sink, BIG, transcript)
    assert not result.delivered and result.end_of_data == full
    # The first chunk and the one in flight when its refusal came; never the LAST.
    assert [line.split()[0] for line in bdat_lines(transcript)] == ["BDAT", "BDAT"]
    assert not any(line.endswith("LAST") for line in bdat_lines(transcript))
    assert chunking_sink.messages == []


def test_a_refused_last_chunk_is_the_end_of_data_reply(chunking_sink: SinkServer) -> None:
    refused = Reply(554, "5.7.1", "Message refused")
    chunking_sink.default = Behaviour(end_of_data=refused)
    result = transact(chunking_sink, b"Subject: s\r\n\r\nshort\r\n")
    assert not result.delivered and result.end_of_data == refused


#: Two chunks: with PIPELINING the LAST is on its way when the first one's reply comes.
TWO_CHUNKS = b"Subject: two\n\n" + b"z" * BODY_CHUNK_SIZE


@pytest.mark.parametrize("body", [BIG, TWO_CHUNKS], ids=["three-chunks", "two-chunks"])
def test_after_a_refused_chunk_the_next_transaction_starts_with_rset(
    chunking_sink: SinkServer, body: bytes
) -> None:
    """A server may keep the transaction open after a refused chunk, whether its refusal
    came before the LAST was sent or after: RSET first, or the next MAIL gets 503."""
    chunking_sink.script(Behaviour(chunk=Reply(452, "4.3.1", "Insufficient system storage")))
    transcript: Transcript = []

    async def go() -> tuple[TransactionResult, TransactionResult]:
        async with SmtpClient(transcript=transcript) as client:
            await client.connect(chunking_sink.host, chunking_sink.port, local_hostname="c.test")
            await client.ehlo()
            first = await client.send_transaction("s@client.test", [ALICE], body)
            second = await client.send_transaction("s@client.test", [ALICE], b"Subject: 2\r\n\r\n")
            return first, second

    first, second = run(go)
    assert not first.delivered and second.delivered
    commands = [line.split(" ")[0] for side, line in transcript if side == "C"]
    assert commands[commands.index("MAIL", commands.index("MAIL") + 1) - 1] == "RSET"
    (message,) = chunking_sink.wait_for_messages(1)
    assert message.body == b"Subject: 2\r\n\r\n"


def odd_chunk_replies(sock: socket.socket) -> None:
    """A peer answering every chunk but the LAST with 251 (not the 250 of RFC 3030 2),
    then refusing the LAST for the moment."""
    buffer = bytearray()
    sock.sendall(b"220 odd.test ESMTP\r\n")
    # EHLO (no PIPELINING: one reply at a time), MAIL, RCPT
    for reply in (b"250-odd.test\r\n250 CHUNKING\r\n", b"250 2.1.0 Ok\r\n", b"250 2.1.5 Ok\r\n"):
        read_line(sock, buffer)
        sock.sendall(reply)
    while True:
        words = read_line(sock, buffer).split()
        if words[0] != b"BDAT":
            return  # the client gave up on the message (QUIT or RSET)
        size = int(words[1])
        while len(buffer) < size:
            received = sock.recv(65536)
            if not received:
                return
            buffer += received
        del buffer[:size]
        if words[-1] == b"LAST":
            sock.sendall(b"451 4.3.0 Not now\r\n")
            return
        sock.sendall(b"251 2.0.0 chunk taken\r\n")


def test_a_2xx_to_a_chunk_is_not_the_end_of_the_message() -> None:
    """Only the reply to the LAST chunk says whether the message was taken: a peer's odd
    2xx to an earlier one never makes half a message count as delivered."""
    peer = ScriptedPeer(odd_chunk_replies)
    transcript: Transcript = []

    async def go() -> TransactionResult:
        async with SmtpClient(transcript=transcript) as client:
            await client.connect(peer.host, peer.port, local_hostname="client.test")
            await client.ehlo()
            return await client.send_transaction("sender@client.test", [ALICE], BIG)

    try:
        result = run(go)
    finally:
        peer.stop()
    assert not peer.errors
    assert not result.delivered
    assert result.end_of_data == Reply(451, "4.3.0", "Not now")
    assert bdat_lines(transcript)[-1].endswith(" LAST")
