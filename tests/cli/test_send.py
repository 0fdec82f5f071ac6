"""``mailwright send`` against a real mailwright server, the sink, and servers that misbehave."""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from mailwright.model import Address
from mailwright.protocol.reply import Reply
from tests.cli.conftest import ToolRun, address
from tests.dns_server import LoopbackDns
from tests.helpers import BASE_CONFIG, RunningServer, maildir_messages, wait_for
from tests.peers import ScriptedPeer, read_line
from tests.server.test_tls_auth import TLS_CONFIG, queued, write_pems
from tests.sink import Behaviour, SinkServer

ALICE = "alice@example.test"
Tool = Callable[..., ToolRun]
Peer = Callable[[Callable[[socket.socket], None]], ScriptedPeer]


def send(tool: Tool, server: str, *recipients: str, extra: tuple[str, ...] = ()) -> ToolRun:
    args = ["send", "--server", server, "--from", "sender@remote.test"]
    for recipient in recipients:
        args += ["--to", recipient]
    return tool(*args, *extra)


def delivered(server: RunningServer, mailbox: str) -> bytes:
    wait_for(lambda: maildir_messages(server.data_dir, mailbox))
    (message,) = maildir_messages(server.data_dir, mailbox)
    return message


def test_routing_replies_251_551_550_are_explained(server: RunningServer, tool: Tool) -> None:
    run = send(
        tool,
        address(server.host, server.port),
        ALICE,
        "bob@example.test",
        "carol@example.test",
        "nobody@example.test",
    )
    assert run.status == 1, run.out
    lines = run.lines
    bob = lines.index(
        "RCPT TO:<bob@example.test> -> 251 2.1.5 User not local; will forward to <bob@elsewhere.test>"
    )
    assert lines[bob + 1] == (
        "    the server will forward this message; to avoid the relay, "
        "send to <bob@elsewhere.test> directly"
    )
    carol = lines.index(
        "RCPT TO:<carol@example.test> -> 551 5.1.6 User not local; please try <carol@newcorp.test>"
    )
    assert lines[carol + 1].startswith("    551 5.1.6 [5xx ")  # the reference's one line
    assert lines[carol + 2] == "    the server says this user has moved: try <carol@newcorp.test>"
    assert lines[carol + 3] == "    run again with --follow-referrals to send there"
    nobody = lines.index(
        "RCPT TO:<nobody@example.test> -> 550 5.1.1 Mailbox unavailable: no such user here"
    )
    assert lines[nobody + 1].startswith("    550 5.1.1 [5xx ")
    assert "What to do:" in lines[nobody + 1]
    assert lines[-5:] == [
        "result: 2 of 4 recipients accepted",
        "    accepted: alice@example.test",
        "    accepted: bob@example.test (the server will forward it to <bob@elsewhere.test>)",
        "    refused: carol@example.test (551 5.1.6)",
        "    refused: nobody@example.test (550 5.1.1)",
    ]
    # Successes are not explained: only the 251's own hint follows it.
    alice = lines.index("RCPT TO:<alice@example.test> -> 250 2.1.5 Ok")
    assert lines[alice + 1].startswith("RCPT TO:<bob@")
    delivered(server, ALICE)


def test_missing_headers_are_added_and_the_rest_is_sent_unchanged(
    server: RunningServer, tool: Tool, tmp_path: Path
) -> None:
    original = (
        b"From: Sender <sender@remote.test>\r\n"
        b"Subject: kept as written\r\n"
        b"X-Folded: one\r\n two\r\n"
        b"\r\n"
        b"Body line one\r\n"
        b"Body line two\r\n"
    )
    path = tmp_path / "message.eml"
    path.write_bytes(original)
    run = send(tool, address(server.host, server.port), ALICE, extra=(str(path),))
    assert run.status == 0, run.out
    assert (
        run.lines[0] == f"message: {len(original)} octets from {path}; added Date, Message-ID, To"
    )
    assert run.lines[-2:] == [
        "result: 1 of 1 recipients accepted",
        "    accepted: alice@example.test",
    ]
    message = delivered(server, ALICE)
    assert message.endswith(original)  # the user's bytes, after the added lines
    head = message[: -len(original)]
    assert b"\r\nDate: " in head and b"\r\nMessage-ID: <" in head and b"@remote.test>" in head
    assert head.endswith(b"To: alice@example.test\r\n")
    assert b"From:" not in head


def test_the_default_message_gets_every_header(server: RunningServer, tool: Tool) -> None:
    run = send(tool, address(server.host, server.port), ALICE)
    assert run.status == 0, run.out
    assert "added Date, Message-ID, From, To" in run.lines[0]
    message = delivered(server, ALICE)
    assert b"\r\nFrom: sender@remote.test\r\n" in message
    assert b"Subject: mailwright test\r\n" in message


def test_503_after_a_refused_mail_is_explained_as_its_consequence(
    server_factory: Callable[..., RunningServer], tool: Tool, tmp_path: Path
) -> None:
    # SIZE is declared on MAIL (RFC 1870), so the server refuses MAIL itself; the
    # pipelined RCPT and DATA then arrive outside any transaction and get 503.
    server = server_factory(
        base=BASE_CONFIG.replace("[smtp]\n", "[smtp]\nmax_message_size = 1000\n")
    )
    path = tmp_path / "big.eml"
    path.write_bytes(b"Subject: big\r\n\r\n" + b"x" * 2000 + b"\r\n")
    run = send(tool, address(server.host, server.port), ALICE, extra=(str(path),))
    assert run.status == 1, run.out
    lines = run.lines
    mail = next(
        i for i, line in enumerate(lines) if line.startswith("MAIL FROM:<sender@remote.test>")
    )
    assert " -> 552 5.3.4 " in lines[mail]
    assert lines[mail + 1].startswith("    552 5.3.4 ")
    rcpt = lines.index(
        "RCPT TO:<alice@example.test> -> 503 5.5.1 Bad sequence of commands: send MAIL FROM first"
    )
    assert lines[rcpt + 1].startswith("    503 5.5.1 [5xx ")
    assert lines[rcpt + 2] == (
        "    this follows from the refused MAIL: there is no transaction to add to"
    )
    # The server offers CHUNKING: no DATA was pipelined, and no BDAT follows a refused MAIL.
    assert "BDAT: not sent, since no recipient was accepted" in lines
    assert lines[-1] == "    refused: alice@example.test (503 5.5.1)"


def test_data_503_after_a_refused_mail_is_explained_too(sink: SinkServer, tool: Tool) -> None:
    """A peer without CHUNKING gets DATA pipelined (RFC 2920): its 503 is explained."""
    sink.default = Behaviour(mail=Reply(552, "5.3.4", "Message size exceeds fixed maximum"))
    run = send(tool, address(sink.host, sink.port), ALICE)
    assert run.status == 1, run.out
    lines = run.lines
    rcpt = next(i for i, line in enumerate(lines) if line.startswith("RCPT TO:<alice@"))
    data = next(i for i, line in enumerate(lines) if line.startswith("DATA -> 503 5.5.1"))
    consequence = "    this follows from the refused MAIL: there is no transaction to add to"
    assert lines[data + 2] == lines[rcpt + 2] == consequence


def test_no_message_is_sent_when_every_recipient_was_refused(
    server: RunningServer, tool: Tool
) -> None:
    run = send(tool, address(server.host, server.port), "nobody@example.test")
    assert run.status == 1
    assert "BDAT: not sent, since no recipient was accepted" in run.lines
    assert not any(line.startswith("end of data") for line in run.lines)


def test_verbose_prints_the_transcript(server: RunningServer, tool: Tool) -> None:
    run = send(tool, address(server.host, server.port), ALICE, extra=("-v",))
    assert run.status == 0
    lines = run.lines
    start = lines.index("transcript:")
    assert lines[start + 1] == "    S: 220 mx.example.test ESMTP mailwright"
    assert lines[start + 2] == "    C: EHLO client.test"
    assert "    C: RCPT TO:<alice@example.test>" in lines
    assert "    C: QUIT" in lines


def test_explanations_in_chinese(server: RunningServer, tool: Tool) -> None:
    run = send(
        tool, address(server.host, server.port), "carol@example.test", extra=("--lang", "zh")
    )
    assert run.status == 1
    carol = next(i for i, line in enumerate(run.lines) if line.startswith("RCPT TO:<carol@"))
    assert "处理：" in run.lines[carol + 1]
    assert run.lines[carol + 2] == "    服务器表示该用户已迁移：请改发到 <carol@newcorp.test>"


# ------------------------------------------------------------------ referrals


def test_follow_referrals_sends_to_the_suggested_address(
    server: RunningServer, sink: SinkServer, tool: Tool
) -> None:
    run = send(
        tool,
        address(server.host, server.port),
        ALICE,
        "carol@example.test",
        extra=(
            "--follow-referrals",
            "--route",
            f"newcorp.test={address(sink.host, sink.port)}",
            "--dns-server",
            "127.0.0.1:9",  # never asked: the route wins, and no test leaves loopback
        ),
    )
    assert run.status == 0, run.out
    (message,) = sink.wait_for_messages(1)
    assert message.recipients == (Address("carol", "newcorp.test"),)
    assert message.sender == Address("sender", "remote.test")
    assert b"Subject: mailwright test" in message.body
    lines = run.lines
    assert "run again with --follow-referrals to send there" not in run.out
    referral = lines.index("referral: carol@example.test -> carol@newcorp.test")
    assert lines[referral + 1] == f"server: {sink.host}:{sink.port}"
    assert "RCPT TO:<carol@newcorp.test> -> 250 2.1.5 Ok" in lines[referral:]
    assert lines[-3:] == [
        "result: 2 of 2 recipients accepted",
        "    accepted: alice@example.test",
        "    accepted: carol@example.test, at <carol@newcorp.test>",
    ]
    delivered(server, ALICE)


@pytest.fixture
def newcorp_dns() -> Iterator[LoopbackDns]:
    dns = LoopbackDns(
        "newcorp.test. 60 IN MX 10 mx.newcorp.test.\nmx.newcorp.test. 60 IN A 127.0.0.1\n"
    )
    yield dns
    dns.stop()


def test_follow_referrals_finds_the_mail_exchanger_in_dns(
    server: RunningServer, sink: SinkServer, newcorp_dns: LoopbackDns, tool: Tool
) -> None:
    run = send(
        tool,
        address(server.host, server.port),
        "carol@example.test",
        extra=(
            "--follow-referrals",
            "--dns-server",
            newcorp_dns.address,
            "--mx-port",
            str(sink.port),
        ),
    )
    assert run.status == 0, run.out
    (message,) = sink.wait_for_messages(1)
    assert message.recipients == (Address("carol", "newcorp.test"),)
    assert f"server: 127.0.0.1:{sink.port}" in run.lines


def test_a_referral_whose_server_is_unreachable_counts_as_refused(
    server: RunningServer, closed_port: int, tool: Tool
) -> None:
    run = send(
        tool,
        address(server.host, server.port),
        "carol@example.test",
        extra=("--follow-referrals", "--route", f"newcorp.test=127.0.0.1:{closed_port}"),
    )
    assert run.status == 1
    assert any(line.startswith("error: cannot connect: ") for line in run.lines)
    assert run.lines[-1] == (
        "    refused: carol@example.test (moved to <carol@newcorp.test>; "
        "its server could not be reached)"
    )


def test_a_referral_with_no_next_hop_is_explained(
    server_factory: Callable[..., RunningServer], newcorp_dns: LoopbackDns, tool: Tool
) -> None:
    moved = BASE_CONFIG.replace('"carol@newcorp.test"', '"carol@gone.test"')
    server = server_factory(base=moved)
    run = send(
        tool,
        address(server.host, server.port),
        "carol@example.test",
        extra=("--follow-referrals", "--dns-server", newcorp_dns.address),
    )
    assert run.status == 1
    failure = run.lines.index(
        "error: no next hop for gone.test: 550 5.1.2 Domain gone.test does not exist"
    )
    assert run.lines[failure + 1].startswith("    550 5.1.2 [5xx ")
    assert run.lines[-1] == (
        "    refused: carol@example.test (moved to <carol@gone.test>; "
        "no next hop for gone.test: 550 5.1.2)"
    )


# --------------------------------------------------------- sessions that fail


def test_an_unreachable_server_exits_3(closed_port: int, tool: Tool) -> None:
    run = send(tool, f"127.0.0.1:{closed_port}", ALICE)
    assert run.status == 3
    assert run.lines[-1].startswith("error: cannot connect: ")


def test_a_server_that_closes_after_the_greeting_exits_3(scripted_peer: Peer, tool: Tool) -> None:
    def script(sock: socket.socket) -> None:
        sock.sendall(b"220 flaky.test ESMTP\r\n")
        read_line(sock, bytearray())  # EHLO, then hang up

    peer = scripted_peer(script)
    run = send(tool, address(peer.host, peer.port), ALICE)
    assert run.status == 3
    assert run.lines[-1].startswith("error: the connection closed early (after EHLO client.test): ")


def test_a_server_that_closes_after_rcpt_exits_3(scripted_peer: Peer, tool: Tool) -> None:
    def script(sock: socket.socket) -> None:
        buffer = bytearray()
        sock.sendall(b"220 flaky.test ESMTP\r\n")
        read_line(sock, buffer)
        sock.sendall(b"250 flaky.test\r\n")  # no PIPELINING: one command at a time
        read_line(sock, buffer)
        sock.sendall(b"250 2.1.0 Ok\r\n")
        read_line(sock, buffer)  # RCPT, then hang up

    peer = scripted_peer(script)
    run = send(tool, address(peer.host, peer.port), ALICE, extra=("-v",))
    assert run.status == 3
    assert "    C: RCPT TO:<alice@example.test>" in run.lines
    assert run.lines[-1].startswith(
        "error: the connection closed early (after RCPT TO:<alice@example.test>): "
    )


def test_a_421_greeting_exits_3_with_its_explanation(scripted_peer: Peer, tool: Tool) -> None:
    def script(sock: socket.socket) -> None:
        sock.sendall(b"421 4.3.2 busy.test Too many connections, try later\r\n")

    peer = scripted_peer(script)
    run = send(tool, address(peer.host, peer.port), ALICE)
    assert run.status == 3
    assert run.lines[-2] == (
        "error: the server refused the session: 421 4.3.2 busy.test Too many connections, try later"
    )
    assert run.lines[-1].startswith("    421 4.3.2 [4xx ")


def test_a_421_in_the_middle_of_the_transaction_exits_3(scripted_peer: Peer, tool: Tool) -> None:
    def script(sock: socket.socket) -> None:
        buffer = bytearray()
        sock.sendall(b"220 flaky.test ESMTP\r\n")
        read_line(sock, buffer)
        sock.sendall(b"250 flaky.test\r\n")
        read_line(sock, buffer)
        sock.sendall(b"250 2.1.0 Ok\r\n")
        read_line(sock, buffer)
        sock.sendall(b"421 4.4.2 flaky.test Shutting down\r\n")

    peer = scripted_peer(script)
    run = send(tool, address(peer.host, peer.port), ALICE)
    assert run.status == 3
    rcpt = run.lines.index("RCPT TO:<alice@example.test> -> 421 4.4.2 flaky.test Shutting down")
    assert run.lines[rcpt + 1].startswith("    421 4.4.2 [4xx ")
    assert run.lines[-1] == (
        "error: the server closed the session (421) before the transaction ended"
    )


def test_a_421_to_pipelined_commands_exits_3(scripted_peer: Peer, tool: Tool) -> None:
    def script(sock: socket.socket) -> None:
        buffer = bytearray()
        sock.sendall(b"220 flaky.test ESMTP\r\n")
        read_line(sock, buffer)
        sock.sendall(b"250-flaky.test\r\n250 PIPELINING\r\n")
        for _ in range(3):  # MAIL, RCPT, DATA in one write
            read_line(sock, buffer)
        sock.sendall(b"250 2.1.0 Ok\r\n421 4.4.2 flaky.test Shutting down\r\n")

    peer = scripted_peer(script)
    run = send(tool, address(peer.host, peer.port), ALICE)
    assert run.status == 3
    assert run.lines[-2].startswith("error: the connection closed early (after DATA): ")
    assert "421 4.4.2 flaky.test Shutting down" in run.lines[-2]
    assert run.lines[-1].startswith("    421 4.4.2 [4xx ")


def test_control_characters_in_the_servers_replies_are_escaped(
    sink: SinkServer, tool: Tool
) -> None:
    """ESC, BEL, NUL, NEL and U+2028 in a reply would drive the terminal or forge a line."""
    hostile = "\x1b[2J\x1b]0;owned\x07\x00\x85\u2028forged"
    sink.default = Behaviour(
        greeting=Reply(220, None, f"sink.test ESMTP{hostile}"),
        rcpt=Reply(550, "5.1.1", f"No such user{hostile}"),
    )
    run = send(tool, address(sink.host, sink.port), "alice@sink.test", extra=("-v",))
    assert run.status == 1, run.out
    assert all(line.isprintable() for line in run.out.split("\n")), run.out
    escaped = "\\x1b[2J\\x1b]0;owned\\x07\\x00\\x85\\u2028forged"
    assert f"greeting: 220 sink.test ESMTP{escaped}" in run.lines
    assert f"    S: 220 sink.test ESMTP{escaped}" in run.lines
    assert f"RCPT TO:<alice@sink.test> -> 550 5.1.1 No such user{escaped}" in run.lines


# ------------------------------------------------------------------------ TLS


def test_starttls_with_a_verified_certificate(
    tls_sink: SinkServer, cafile: str, tool: Tool
) -> None:
    run = send(
        tool,
        address(tls_sink.host, tls_sink.port),
        "alice@sink.test",
        extra=("--starttls", "--cafile", cafile),
    )
    assert run.status == 0, run.out
    assert "STARTTLS -> 220 2.0.0 Ready to start TLS" in run.lines
    tls_line = next(line for line in run.lines if line.startswith("    TLS: "))
    assert tls_line.endswith(", certificate verified for 127.0.0.1")
    (message,) = tls_sink.wait_for_messages(1)
    assert message.tls


def test_starttls_with_an_untrusted_certificate_exits_3(tls_sink: SinkServer, tool: Tool) -> None:
    run = send(
        tool, address(tls_sink.host, tls_sink.port), "alice@sink.test", extra=("--starttls",)
    )
    assert run.status == 3
    assert run.lines[-1].startswith("error: TLS failed: the certificate did not verify: ")
    assert tls_sink.messages == []


def test_opportunistic_tls_by_default(tls_sink: SinkServer, tool: Tool) -> None:
    run = send(tool, address(tls_sink.host, tls_sink.port), "alice@sink.test")
    assert run.status == 0, run.out
    tls_line = next(line for line in run.lines if line.startswith("    TLS: "))
    assert tls_line.endswith(", certificate not verified")
    assert tls_sink.wait_for_messages(1)[0].tls


# ------------------------------------------------------------ as a process


def test_as_a_process_reading_standard_input(
    server: RunningServer, tool_process: Callable[..., ToolRun]
) -> None:
    body = b"Subject: from stdin\n\nhello\n"
    run = tool_process(
        "send",
        "--server",
        address(server.host, server.port),
        "--from",
        "a@remote.test",
        "--to",
        ALICE,
        "-",
        stdin=body,
    )
    assert run.status == 0, run.out + run.err
    assert run.lines[0].startswith("message: 27 octets from standard input; added Date,")
    assert delivered(server, ALICE).endswith(b"Subject: from stdin\r\n\r\nhello\r\n")


def test_usage_errors_exit_2_as_a_process(tool_process: Callable[..., ToolRun]) -> None:
    run = tool_process("send", "--server", "127.0.0.1:1", "--from", "no-at-sign", "--to", ALICE)
    assert run.status == 2
    assert run.out == ""
    assert run.err.splitlines()[-1] == (
        "mailwright send: error: argument --from: 'no-at-sign': "
        "Bad sender address syntax: missing '@domain'"
    )


def test_an_unreadable_file_is_a_usage_error(tool: Tool, tmp_path: Path) -> None:
    run = send(tool, "127.0.0.1:1", ALICE, extra=(str(tmp_path / "missing.eml"),))
    assert run.status == 2
    assert run.err.startswith("mailwright send: error: cannot read ")


def test_a_failed_opportunistic_handshake_falls_back_to_plain_text(
    sink_certificate: trustme.LeafCert, tool: Tool
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sink_certificate.configure_cert(context)
    # TLS 1.2 with a cipher no default client context offers (RSA key exchange, SHA-1).
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("AES128-SHA")
    old_tls_sink = SinkServer(tls=context)
    try:
        run = send(tool, address(old_tls_sink.host, old_tls_sink.port), "alice@sink.test")
        assert run.status == 0, run.out
        assert "STARTTLS: the handshake failed; sent without TLS on a new connection" in run.lines
        (message,) = old_tls_sink.wait_for_messages(1)
        assert not message.tls
    finally:
        old_tls_sink.stop()


def test_non_ascii_addresses_need_smtputf8(sink: SinkServer, tool: Tool) -> None:
    sink.default = Behaviour(hide=frozenset({"SMTPUTF8"}))
    run = send(tool, address(sink.host, sink.port), "用户@sink.test")
    assert run.status == 1
    assert run.lines[-1].startswith("error: the server does not offer SMTPUTF8")
    assert sink.messages == []


def test_starttls_required_but_not_offered_exits_3(sink: SinkServer, tool: Tool) -> None:
    run = send(tool, address(sink.host, sink.port), "alice@sink.test", extra=("--starttls",))
    assert run.status == 3
    assert run.lines[-1].startswith("error: the server does not offer STARTTLS")


# ------------------------------------------------------------ --user: TLS first (issue 12, item 14)

PASSWORD = "correct horse battery"


@pytest.fixture
def tls_server(
    server_factory: Callable[..., RunningServer], tmp_path: Path, ca: trustme.CA
) -> RunningServer:
    """A mailwright server offering STARTTLS (the ``ca`` fixture's certificate) and AUTH."""
    write_pems(ca, tmp_path)
    return server_factory(base=TLS_CONFIG)


def login_send(tool: Tool, server: str, *extra: str) -> ToolRun:
    return tool(
        "send", "--server", server, "--from", ALICE, "--to", "dave@example.test",
        "--user", ALICE, *extra,
    )  # fmt: skip


def server_log(caplog: pytest.LogCaptureFixture, after_disconnects: int = 1) -> list[str]:
    """The server's log once it has logged the end of ``after_disconnects`` sessions."""

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name.startswith("mailwright")]

    wait_for(lambda: sum("event=disconnect " in line for line in lines()) >= after_disconnects)
    return lines()


def plain_auth_peer(scripted_peer: Peer, received: list[bytes]) -> ScriptedPeer:
    """A server that offers AUTH without STARTTLS and notes every line it gets until EOF."""

    def script(sock: socket.socket) -> None:
        buffer = bytearray()
        sock.sendall(b"220 plain.test ESMTP\r\n")
        while True:
            line = read_line(sock, buffer)
            received.append(line)
            if line.startswith(b"EHLO"):
                sock.sendall(b"250-plain.test\r\n250 AUTH PLAIN LOGIN\r\n")
            elif line == b"QUIT":
                sock.sendall(b"221 2.0.0 Bye\r\n")
                return
            else:
                sock.sendall(b"535 5.7.8 Authentication credentials invalid\r\n")

    return scripted_peer(script)


def test_user_refuses_a_server_without_starttls_and_never_sends_auth(
    scripted_peer: Peer, tool: Tool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILWRIGHT_PASSWORD", PASSWORD)
    received: list[bytes] = []
    peer = plain_auth_peer(scripted_peer, received)
    run = login_send(tool, address(peer.host, peer.port))
    peer.stop()  # returns once the client closed the connection: everything it sent is in
    assert run.status == 3, run.out
    assert run.lines[-1] == (
        f"error: not logging in as {ALICE}: the server does not offer STARTTLS, "
        "and the password would travel in clear (--plaintext-auth allows that)"
    )
    assert received == [b"EHLO client.test"]
    assert PASSWORD not in run.out


def test_plaintext_auth_allows_the_login_without_tls(
    scripted_peer: Peer, tool: Tool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILWRIGHT_PASSWORD", PASSWORD)
    received: list[bytes] = []
    peer = plain_auth_peer(scripted_peer, received)
    run = login_send(tool, address(peer.host, peer.port), "--plaintext-auth")
    peer.stop()
    assert run.status == 3, run.out  # the peer refuses every password
    assert received[0] == b"EHLO client.test"
    assert received[1].startswith(b"AUTH PLAIN ")


def test_user_with_no_starttls_is_a_usage_error_naming_plaintext_auth(tool: Tool) -> None:
    run = login_send(tool, "127.0.0.1:1", "--no-starttls")
    assert run.status == 2
    assert run.err == (
        "mailwright send: error: --user with --no-starttls would send the password in clear;"
        " add --plaintext-auth to allow that\n"
    )


def test_user_refuses_a_mailwright_server_without_tls(
    server: RunningServer,
    tool: Tool,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mailwright")
    monkeypatch.setenv("MAILWRIGHT_PASSWORD", PASSWORD)
    run = login_send(tool, address(server.host, server.port))
    assert run.status == 3, run.out
    assert run.lines[-1].endswith("(--plaintext-auth allows that)")
    log = server_log(caplog)
    assert not [line for line in log if line.startswith(("event=auth", "event=refused"))]
    assert not queued(server)


def test_user_refuses_when_starttls_is_refused(
    tls_sink: SinkServer, tool: Tool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 454 leaves a usable plain-text session, which is no place for a password."""
    monkeypatch.setenv("MAILWRIGHT_PASSWORD", PASSWORD)
    tls_sink.default = Behaviour(starttls=Reply(454, "4.7.0", "TLS not available now"))
    run = login_send(tool, address(tls_sink.host, tls_sink.port), "-v")
    assert run.status == 3, run.out
    assert run.lines[-1] == (
        f"error: not logging in as {ALICE}: the server refused STARTTLS "
        "(454 4.7.0 TLS not available now), and the password would travel in clear "
        "(--plaintext-auth allows that)"
    )
    assert not [line for line in run.lines if line.startswith("    C: AUTH")]
    assert tls_sink.messages == []


def test_user_refuses_a_certificate_that_does_not_verify_naming_no_verify(
    tls_server: RunningServer,
    tool: Tool,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The system's trust store does not know the test CA: refused before AUTH."""
    caplog.set_level(logging.INFO, logger="mailwright")
    monkeypatch.setenv("MAILWRIGHT_PASSWORD", PASSWORD)
    run = login_send(tool, address(tls_server.host, tls_server.port))
    assert run.status == 3, run.out
    assert run.lines[-1].startswith(
        f"error: not logging in as {ALICE}: the certificate did not verify: "
    )
    assert run.lines[-1].endswith(" (--no-verify accepts any certificate)")
    log = server_log(caplog)
    assert not [line for line in log if line.startswith("event=auth")]
    assert not queued(tls_server)


def test_user_with_no_verify_logs_in_over_tls(
    tls_server: RunningServer,
    tool: Tool,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mailwright")
    monkeypatch.setenv("MAILWRIGHT_PASSWORD", PASSWORD)
    run = login_send(tool, address(tls_server.host, tls_server.port), "--no-verify")
    assert run.status == 0, run.out
    assert next(line for line in run.lines if line.startswith("    TLS: ")).endswith(
        ", certificate not verified"
    )
    log = server_log(caplog)
    assert any(line.startswith("event=auth client=") and f"user={ALICE}" in line for line in log)
    assert delivered(tls_server, "dave@example.test")


def test_user_with_cafile_verifies_the_certificate_and_logs_in(
    tls_server: RunningServer,
    tool: Tool,
    cafile: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mailwright")
    monkeypatch.setenv("MAILWRIGHT_PASSWORD", PASSWORD)
    run = login_send(tool, address(tls_server.host, tls_server.port), "--cafile", cafile)
    assert run.status == 0, run.out
    assert next(line for line in run.lines if line.startswith("    TLS: ")).endswith(
        ", certificate verified for 127.0.0.1"
    )
    log = server_log(caplog)
    assert any(line.startswith("event=auth client=") and f"user={ALICE}" in line for line in log)
    assert PASSWORD not in run.out
    assert delivered(tls_server, "dave@example.test")
