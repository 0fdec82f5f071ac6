"""SmtpClient and send() against the scriptable sink: every reply and hang-up a server can give."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest

from mailwright.client import (
    CommandRefused,
    ConnectError,
    ConnectionLost,
    ExtensionNotOffered,
    MalformedReply,
    SendResult,
    SmtpClient,
    SmtpClientError,
    SmtpTimeout,
    Timeouts,
    Transcript,
    open_session,
    send,
)
from mailwright.errors import RemoteProtocolError
from mailwright.protocol.reply import Reply
from tests.helpers import run
from tests.peers import ScriptedPeer, read_line
from tests.sink import HANG_UP, Behaviour, SinkServer

BODY = b"Subject: test\r\n\r\nhello\r\n"
ALICE = "alice@sink.test"
BOB = "bob@sink.test"



def send_to(
    sink: SinkServer | ScriptedPeer,
    recipients: list[str] | None = None,
    transcript: Transcript | None = None,
    body: bytes = BODY,
    **options: Any,
) -> SendResult:
    return run(
        lambda: send(
            body,
            sender="sender@client.test",
            recipients=recipients or [ALICE],
            host=sink.host,
            port=sink.port,
            local_hostname="client.test",
            timeout=10,
            transcript=transcript,
            **options,
        )
    )


def codes(result: SendResult) -> list[int | None]:
    return [r.reply.code if r.reply else None for r in result.transaction.recipients]


def sent_commands(transcript: Transcript) -> list[str]:
    return [line.split(" ")[0].split(":")[0] for side, line in transcript if side == "C"]


# ------------------------------------------------------------ the default


def test_sink_records_envelope_body_and_size(sink: SinkServer) -> None:
    result = send_to(sink, [ALICE, BOB], body=b"Subject: t\n\nbare LF\n")
    assert result.delivered and codes(result) == [250, 250]
    (message,) = sink.wait_for_messages(1)
    assert str(message.sender) == "sender@client.test"
    assert [str(r) for r in message.recipients] == [ALICE, BOB]
    assert message.body == b"Subject: t\r\n\r\nbare LF\r\n"
    assert message.mail_params == {"SIZE": str(len(message.body))}
    assert message.helo == "client.test" and message.reply is not None


# ------------------------------------------------------ per-recipient replies


def test_each_recipient_gets_its_own_reply(sink: SinkServer) -> None:
    sink.default = Behaviour(
        rcpt={
            "temp@sink.test": Reply(451, "4.3.0", "Try again later"),
            "gone@sink.test": Reply(550, "5.1.1", "Mailbox unavailable"),
            "fwd@sink.test": Reply(251, "2.1.5", "User not local; will forward to <f@else.test>"),
            "moved@sink.test": Reply(551, "5.1.6", "User not local; please try <m@new.test>"),
            "odd@sink.test": Reply(503, "5.5.1", "Bad sequence of commands"),
        }
    )
    rcpts = [
        ALICE,
        "temp@sink.test",
        "gone@sink.test",
        "fwd@sink.test",
        "moved@sink.test",
        "odd@sink.test",
    ]
    result = send_to(sink, rcpts)
    assert codes(result) == [250, 451, 550, 251, 551, 503]
    assert [str(a) for a in result.accepted] == [ALICE, "fwd@sink.test"]
    moved = result.transaction.recipients[4].reply
    assert moved is not None and moved.enhanced == "5.1.6" and "<m@new.test>" in moved.text
    assert result.delivered
    (message,) = sink.wait_for_messages(1)
    assert [str(r) for r in message.recipients] == [ALICE, "fwd@sink.test"]


def test_all_recipients_refused_pipelined_data_is_refused_by_the_server(sink: SinkServer) -> None:
    sink.default = Behaviour(rcpt=Reply(550, "5.1.1", "No such user"))
    transcript: Transcript = []
    result = send_to(sink, [ALICE, BOB], transcript)
    assert codes(result) == [550, 550] and not result.delivered
    data = result.transaction.data
    assert data is not None and data.code == 554 and result.transaction.end_of_data is None
    assert "DATA" in sent_commands(transcript)  # pipelined with the RCPTs (RFC 2920)
    assert sink.messages == []


def test_without_pipelining_commands_go_one_by_one_and_data_needs_a_recipient(
    sink: SinkServer,
) -> None:
    sink.default = Behaviour(hide=frozenset({"PIPELINING"}), rcpt=Reply(550, "5.1.1", "No"))
    transcript: Transcript = []
    result = send_to(sink, [ALICE, BOB], transcript)
    assert codes(result) == [550, 550] and result.transaction.data is None
    mail = next(i for i, (_, line) in enumerate(transcript) if line.startswith("MAIL"))
    assert transcript[mail:] == [
        ("C", "MAIL FROM:<sender@client.test> SIZE=24"),
        ("S", "250 2.1.0 Ok"),
        ("C", "RCPT TO:<alice@sink.test>"),
        ("S", "550 5.1.1 No"),
        ("C", "RCPT TO:<bob@sink.test>"),
        ("S", "550 5.1.1 No"),
        ("C", "QUIT"),  # no DATA: nobody to deliver to
        ("S", "221 2.0.0 Bye"),
    ]


def test_without_pipelining_a_refused_mail_sends_no_rcpt(sink: SinkServer) -> None:
    sink.default = Behaviour(hide=frozenset({"PIPELINING"}), mail=Reply(550, "5.7.1", "Not you"))
    transcript: Transcript = []
    result = send_to(sink, [ALICE], transcript)
    assert result.transaction.mail.code == 550 and codes(result) == [None]
    assert "RCPT" not in sent_commands(transcript)


def test_pipelined_mail_refused_reports_every_reply(sink: SinkServer) -> None:
    sink.default = Behaviour(mail=Reply(451, "4.3.0", "Try later"))
    result = send_to(sink, [ALICE])
    assert result.transaction.mail.code == 451
    assert codes(result) == [503]  # the server's answer to a RCPT without a MAIL
    assert not result.delivered


def test_end_of_data_refused(sink: SinkServer) -> None:
    sink.default = Behaviour(end_of_data=Reply(552, "5.3.4", "Too big"))
    result = send_to(sink)
    end = result.transaction.end_of_data
    assert end is not None and end.code == 552 and not result.delivered


def test_script_451_twice_then_250(sink: SinkServer) -> None:
    busy = Behaviour(end_of_data=Reply(451, "4.3.0", "Local error; try again later"))
    sink.script(busy, busy)
    outcomes = [send_to(sink).transaction.end_of_data for _ in range(3)]
    assert [r.code if r else None for r in outcomes] == [451, 451, 250]
    assert [m.reply.code if m.reply else None for m in sink.wait_for_messages(3)] == [451, 451, 250]


def test_script_is_one_behaviour_per_transaction_on_one_connection(sink: SinkServer) -> None:
    sink.script(Behaviour(rcpt=Reply(452, "4.5.3", "Too many")), Behaviour())

    async def session() -> list[bool]:
        async with SmtpClient(timeouts=Timeouts.uniform(10)) as client:
            await client.connect(sink.host, sink.port, local_hostname="client.test")
            await client.ehlo()
            return [
                (await client.send_transaction("a@client.test", [ALICE], BODY)).delivered
                for _ in range(2)
            ]

    assert run(session) == [False, True]


def test_behaviour_changes_at_run_time(sink: SinkServer) -> None:
    assert send_to(sink).delivered
    sink.default = Behaviour(data=Reply(451, "4.3.1", "Insufficient storage"))
    result = send_to(sink)
    assert result.transaction.data is not None and result.transaction.data.code == 451
    sink.default = Behaviour()
    assert send_to(sink).delivered


# -------------------------------------------------------- session failures


def test_greeting_554_is_command_refused(sink: SinkServer) -> None:
    sink.default = Behaviour(greeting=Reply(554, "5.3.2", "No SMTP service here"))
    transcript: Transcript = []
    with pytest.raises(CommandRefused) as caught:
        send_to(sink, transcript=transcript)
    assert caught.value.reply is not None and caught.value.reply.code == 554
    assert ("C", "QUIT") in transcript  # RFC 5321 3.1


def test_ehlo_refused_falls_back_to_helo(sink: SinkServer) -> None:
    sink.default = Behaviour(ehlo=Reply(502, "5.5.1", "Command not implemented"))
    transcript: Transcript = []
    result = send_to(sink, transcript=transcript, body="Subject: x\r\n\r\nnaïve\r\n".encode())
    assert result.ehlo == Reply(250, None, "sink.test") and result.delivered
    assert ("C", "HELO client.test") in transcript
    assert ("C", "MAIL FROM:<sender@client.test>") in transcript  # no parameters after HELO
    (message,) = sink.wait_for_messages(1)
    assert message.mail_params == {}


def test_ehlo_550_is_command_refused(sink: SinkServer) -> None:
    sink.default = Behaviour(ehlo=Reply(550, "5.7.1", "Go away"))
    with pytest.raises(CommandRefused, match=r"EHLO refused: 550 5\.7\.1 Go away"):
        send_to(sink)


def test_hang_up_after_greeting_is_connection_lost(sink: SinkServer) -> None:
    sink.default = Behaviour(ehlo=HANG_UP)
    with pytest.raises(ConnectionLost, match="closed the connection"):
        send_to(sink)


def test_hang_up_after_mail_is_connection_lost_with_the_last_reply(sink: SinkServer) -> None:
    sink.default = Behaviour(rcpt=HANG_UP)
    with pytest.raises(ConnectionLost) as caught:
        send_to(sink)
    assert caught.value.reply is not None and caught.value.reply.code == 250  # MAIL's


def test_hang_up_at_data_end_is_connection_lost_and_nothing_was_acknowledged(
    sink: SinkServer,
) -> None:
    sink.default = Behaviour(end_of_data=HANG_UP)
    with pytest.raises(ConnectionLost):
        send_to(sink)
    (message,) = sink.wait_for_messages(1)
    assert message.reply is None and message.body == BODY


def test_421_to_rcpt_ends_the_session_with_its_reason(sink: SinkServer) -> None:
    sink.default = Behaviour(rcpt=Reply(421, "4.3.2", "Shutting down"))
    with pytest.raises(ConnectionLost) as caught:
        send_to(sink)
    assert caught.value.reply == Reply(421, "4.3.2", "Shutting down")


def test_smtputf8_not_offered_fails_before_mail(sink: SinkServer) -> None:
    sink.default = Behaviour(hide=frozenset({"SMTPUTF8"}))
    transcript: Transcript = []
    with pytest.raises(ExtensionNotOffered, match="SMTPUTF8"):
        send_to(sink, ["zoë@sink.test"], transcript)
    assert "MAIL" not in sent_commands(transcript)


def test_size_is_declared_only_when_offered(sink: SinkServer) -> None:
    sink.default = Behaviour(hide=frozenset({"SIZE"}))
    send_to(sink)
    assert sink.wait_for_messages(1)[0].mail_params == {}


def test_connection_refused_is_connect_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # closed again: nobody listens there now
    with pytest.raises(ConnectError, match=f"127.0.0.1:{port}"):
        run(lambda: send(BODY, sender=None, recipients=ALICE, host="127.0.0.1", port=port))


def test_silent_server_is_a_timeout(scripted_peer: Callable[..., ScriptedPeer]) -> None:
    def silent(sock: socket.socket) -> None:
        sock.recv(1)  # returns when the client gives up and closes

    peer = scripted_peer(silent)
    with pytest.raises(SmtpTimeout, match="reading from"):
        run(
            lambda: send(
                BODY, sender=None, recipients=ALICE, host=peer.host, port=peer.port, timeout=0.5
            )
        )


# ------------------------------------------------------------- hostile peers


def test_endless_reply_line_is_a_bounded_error(scripted_peer: Callable[..., ScriptedPeer]) -> None:
    def endless(sock: socket.socket) -> None:
        sock.sendall(b"220 ")
        while True:  # until the client gives up and the send fails
            sock.sendall(b"x" * 65536)

    peer = scripted_peer(endless)
    with pytest.raises(MalformedReply, match=r"longer than 4096 octets.*starting b'220 xxx"):
        send_to(peer)


def test_endless_multiline_reply_is_a_bounded_error(
    scripted_peer: Callable[..., ScriptedPeer],
) -> None:
    def endless(sock: socket.socket) -> None:
        while True:
            sock.sendall(b"220-still greeting\r\n" * 1000)

    peer = scripted_peer(endless)
    with pytest.raises(MalformedReply, match="more than 100 lines, the first '220-still"):
        send_to(peer)


def test_garbage_instead_of_a_reply(scripted_peer: Callable[..., ScriptedPeer]) -> None:
    def garbage(sock: socket.socket) -> None:
        sock.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        sock.recv(1)

    peer = scripted_peer(garbage)
    with pytest.raises(MalformedReply, match="malformed reply"):
        send_to(peer)


def test_a_broken_reply_is_a_client_error_quoting_what_came_escaped(
    scripted_peer: Callable[..., ScriptedPeer],
) -> None:
    """The core's RemoteProtocolError is mapped at the client's boundary: a caller that
    handles SmtpClientError handles this too; the message shows the bytes, escaped."""

    def garbage(sock: socket.socket) -> None:
        sock.sendall(b"\x1b[2J\x00" + b"y" * 300 + b"\r\n")
        sock.recv(1)

    peer = scripted_peer(garbage)
    with pytest.raises(SmtpClientError) as caught:
        send_to(peer)
    assert isinstance(caught.value, MalformedReply)
    assert isinstance(caught.value, RemoteProtocolError)  # whose fault it was
    message = str(caught.value)
    assert message.startswith(f"reply from {peer.host}:{peer.port}: malformed reply")
    assert "'\\x1b[2J\\x00yyy" in message and "y" * 100 not in message  # escaped, bounded
    assert message.isprintable()


def test_the_probe_session_gets_the_same_client_error(
    scripted_peer: Callable[..., ScriptedPeer],
) -> None:
    """``mailwright probe`` opens its session with ``open_session``, through the same boundary."""

    def garbage(sock: socket.socket) -> None:
        sock.sendall(b"this is not an smtp reply\r\n")
        sock.recv(1)

    peer = scripted_peer(garbage)

    async def probe() -> None:
        opened = await open_session(
            peer.host, peer.port, timeouts=Timeouts.uniform(10), local_hostname="client.test"
        )
        await opened.client.close()

    with pytest.raises(MalformedReply, match="'this is not an smtp reply'"):
        run(probe)


def test_354_after_every_rcpt_refused_gets_a_lone_dot(
    scripted_peer: Callable[..., ScriptedPeer],
) -> None:
    """RFC 2920 3.1: check the DATA reply even when no RCPT worked; if 354, send a single dot."""
    received: list[bytes] = []

    def buggy(sock: socket.socket) -> None:
        buf = bytearray()
        sock.sendall(b"220 buggy.test ESMTP\r\n")
        read_line(sock, buf)
        sock.sendall(b"250-buggy.test\r\n250 PIPELINING\r\n")
        for _ in range(3):  # MAIL, RCPT, DATA
            received.append(read_line(sock, buf))
        sock.sendall(b"250 ok\r\n550 no\r\n354 go on\r\n")
        received.append(read_line(sock, buf))
        sock.sendall(b"250 ok, queued nothing\r\n")
        received.append(read_line(sock, buf))
        sock.sendall(b"221 bye\r\n")

    peer = scripted_peer(buggy)
    result = send_to(peer)
    assert received == [
        b"MAIL FROM:<sender@client.test>",
        b"RCPT TO:<alice@sink.test>",
        b"DATA",
        b".",
        b"QUIT",
    ]
    assert result.transaction.end_of_data is not None and not result.delivered
