"""``mailwright probe`` against a real mailwright server, the TLS sink, and odd servers."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import trustme

from mailwright.cli.x509 import fingerprint
from tests.cli.conftest import ToolRun, address
from tests.helpers import RunningServer, maildir_messages
from tests.peers import ScriptedPeer, read_line
from tests.sink import Behaviour, SinkServer

Tool = Callable[..., ToolRun]
Peer = Callable[[Callable[[socket.socket], None]], ScriptedPeer]


def section(lines: list[str], heading: str) -> list[str]:
    """The indented lines under ``heading``."""
    start = lines.index(heading) + 1
    end = start
    while end < len(lines) and lines[end].startswith("    "):
        end += 1
    return lines[start:end]


def test_greeting_and_capabilities_with_their_meaning(server: RunningServer, tool: Tool) -> None:
    run = tool("probe", address(server.host, server.port))
    assert run.status == 0, run.out
    lines = run.lines
    assert lines[:3] == [
        f"server: {server.host}:{server.port}",
        "greeting: 220 mx.example.test ESMTP mailwright",
        "EHLO client.test -> 250 mx.example.test greets client.test",
    ]
    capabilities = section(lines, "capabilities:")
    assert capabilities[0].split()[0] == "PIPELINING"
    assert "(RFC 2920)" in capabilities[0]
    size = next(line for line in capabilities if line.lstrip().startswith("SIZE"))
    assert "messages up to 26.2 MB (26214400 octets) are accepted" in size
    assert "STARTTLS: not offered, so mail to this server travels unencrypted" in lines
    assert lines[-1] == "QUIT -> 221 2.0.0 Bye"


def test_mail_and_rcpt_are_explained_and_nothing_is_sent(server: RunningServer, tool: Tool) -> None:
    run = tool(
        "probe",
        address(server.host, server.port),
        "--from",
        "sender@remote.test",
        "--to",
        "alice@example.test",
        "--to",
        "bob@example.test",
        "--to",
        "carol@example.test",
        "--to",
        "nobody@example.test",
    )
    assert run.status == 1, run.out
    lines = run.lines
    mail = lines.index("MAIL FROM:<sender@remote.test> -> 250 2.1.0 Ok")
    assert lines[mail + 1].startswith("    250 2.1.0 [2xx ")  # probe explains every reply
    bob = lines.index(
        "RCPT TO:<bob@example.test> -> 251 2.1.5 User not local; will forward to <bob@elsewhere.test>"
    )
    assert lines[bob + 2] == (
        "    the server will forward this message; to avoid the relay, "
        "send to <bob@elsewhere.test> directly"
    )
    carol = lines.index(
        "RCPT TO:<carol@example.test> -> 551 5.1.6 User not local; please try <carol@newcorp.test>"
    )
    assert lines[carol + 1].startswith("    551 5.1.6 [5xx ")
    assert lines[carol + 2] == "    the server says this user has moved: try <carol@newcorp.test>"
    assert "--follow-referrals" not in run.out  # a send option: no advice to use it here
    nobody = lines.index(
        "RCPT TO:<nobody@example.test> -> 550 5.1.1 Mailbox unavailable: no such user here"
    )
    assert lines[nobody + 1].startswith("    550 5.1.1 [5xx ")
    assert lines[nobody + 2] == "RSET -> 250 2.0.0 Ok: transaction cleared"
    assert not any(line.startswith("DATA") for line in lines)
    assert maildir_messages(server.data_dir, "alice@example.test") == []


def test_all_recipients_accepted_exits_0(server: RunningServer, tool: Tool) -> None:
    run = tool("probe", address(server.host, server.port), "--to", "alice@example.test")
    assert run.status == 0, run.out
    assert "MAIL FROM:<> -> 250 2.1.0 Ok" in run.lines  # --to alone: the null sender


def test_a_refused_mail_skips_rcpt(scripted_peer: Peer, tool: Tool) -> None:
    def script(sock: socket.socket) -> None:
        buffer = bytearray()
        sock.sendall(b"220 picky.test ESMTP\r\n")
        read_line(sock, buffer)
        sock.sendall(b"250 picky.test\r\n")
        read_line(sock, buffer)
        sock.sendall(b"550 5.7.1 Sender rejected\r\n")
        assert read_line(sock, buffer) == b"RSET"
        sock.sendall(b"250 2.0.0 Ok\r\n")
        assert read_line(sock, buffer) == b"QUIT"
        sock.sendall(b"221 2.0.0 Bye\r\n")

    peer = scripted_peer(script)
    run = tool("probe", address(peer.host, peer.port), "--from", "a@b.test", "--to", "c@picky.test")
    assert run.status == 1
    assert "RCPT TO:<c@picky.test>: not sent, since MAIL was refused" in run.lines


def test_unknown_extensions_are_listed_as_such(scripted_peer: Peer, tool: Tool) -> None:
    def script(sock: socket.socket) -> None:
        buffer = bytearray()
        sock.sendall(b"220 odd.test ESMTP\r\n")
        read_line(sock, buffer)
        sock.sendall(
            b"250-odd.test\r\n250-AUTH PLAIN LOGIN\r\n250-CHUNKING\r\n250-DSN\r\n"
            b"250-SIZE\r\n250 X-FROBNICATE 7\r\n"
        )
        read_line(sock, buffer)
        sock.sendall(b"221 2.0.0 Bye\r\n")

    peer = scripted_peer(script)
    run = tool("probe", address(peer.host, peer.port))
    assert run.status == 0, run.out
    capabilities = [" ".join(line.split()) for line in section(run.lines, "capabilities:")]
    assert capabilities == [
        "AUTH PLAIN LOGIN clients may authenticate (RFC 4954) with: PLAIN, LOGIN",
        "CHUNKING the message may be sent in BDAT chunks instead of DATA (RFC 3030)",
        "DSN delivery status notifications may be requested per recipient (RFC 3461)",
        "SIZE the client may declare the message size; no fixed limit announced (RFC 1870)",
        "X-FROBNICATE 7 extension not described",
    ]


# ------------------------------------------------------------------------ TLS


def test_starttls_with_a_verified_certificate(
    tls_sink: SinkServer, cafile: str, sink_certificate: trustme.LeafCert, tool: Tool
) -> None:
    run = tool(
        "probe",
        address(tls_sink.host, tls_sink.port),
        "--cafile",
        cafile,
        "--to",
        "alice@sink.test",
    )
    assert run.status == 0, run.out
    lines = run.lines
    tls = section(lines, "STARTTLS -> 220 2.0.0 Ready to start TLS")
    assert tls[0].startswith("    TLS: TLSv1.")
    assert tls[0].endswith(", certificate verified for 127.0.0.1")
    assert "    certificate names: DNS:sink.test, IP:127.0.0.1" in tls
    assert f"    certificate SHA-256: {_fingerprint(sink_certificate)}" in tls
    # The extensions are listed again inside TLS, where STARTTLS is no longer offered.
    after = section(lines, "capabilities after STARTTLS:")
    assert after and not any("STARTTLS" in line for line in after)
    assert lines.index("capabilities after STARTTLS:") < lines.index(
        "RCPT TO:<alice@sink.test> -> 250 2.1.5 Ok"
    )
    assert tls_sink.messages == []


def test_an_untrusted_certificate_is_shown_on_a_second_look(
    tls_sink: SinkServer, sink_certificate: trustme.LeafCert, tool: Tool
) -> None:
    run = tool("probe", address(tls_sink.host, tls_sink.port))  # the system CAs: not trustme's
    assert run.status == 0, run.out
    lines = run.lines
    assert (
        "STARTTLS -> handshake failed: the certificate did not verify: "
        "unable to get local issuer certificate"
    ) in lines
    second = section(lines, "second look, without verifying the certificate:")
    assert second[0].endswith(", certificate not verified")
    assert "    certificate names: DNS:sink.test, IP:127.0.0.1" in second
    assert any(line.startswith("    certificate issuer: O=trustme") for line in second)
    assert f"    certificate SHA-256: {_fingerprint(sink_certificate)}" in second


def test_a_certificate_for_another_name_is_reported(
    tls_sink: SinkServer, cafile: str, tool: Tool
) -> None:
    run = tool(
        "probe",
        address(tls_sink.host, tls_sink.port),
        "--cafile",
        cafile,
        "--tls-name",
        "mx.other.test",
    )
    assert run.status == 0
    assert (
        "STARTTLS -> handshake failed: the certificate did not verify: Hostname mismatch, "
        "certificate is not valid for 'mx.other.test'."
    ) in run.lines


def _fingerprint(certificate: trustme.LeafCert) -> str:
    pem = certificate.cert_chain_pems[0].bytes().decode("ascii")
    return fingerprint(ssl.PEM_cert_to_DER_cert(pem))


# --------------------------------------------------------- sessions that fail


def test_an_unreachable_server_exits_3(closed_port: int, tool: Tool) -> None:
    run = tool("probe", f"127.0.0.1:{closed_port}")
    assert run.status == 3
    assert run.lines[-1].startswith("error: cannot connect: ")


def test_a_554_greeting_exits_3_with_its_explanation(scripted_peer: Peer, tool: Tool) -> None:
    def script(sock: socket.socket) -> None:
        sock.sendall(b"554 5.7.1 No SMTP service for you\r\n")
        assert read_line(sock, bytearray()) == b"QUIT"  # RFC 5321 3.1
        sock.sendall(b"221 2.0.0 Bye\r\n")

    peer = scripted_peer(script)
    run = tool("probe", address(peer.host, peer.port))
    assert run.status == 3
    assert run.lines[-2:-1] == ["greeting: 554 5.7.1 No SMTP service for you"]
    assert run.lines[-1].startswith("    554 5.7.1 [5xx ")


def test_control_characters_from_the_server_are_escaped(scripted_peer: Peer, tool: Tool) -> None:
    """The greeting and EHLO lines are the server's words; ESC or NEL must not reach the screen."""

    def script(sock: socket.socket) -> None:
        buffer = bytearray()
        sock.sendall(b"220 odd.test ESMTP \x1b[2J\x1b]0;owned\x07\xc2\x85forged\r\n")
        read_line(sock, buffer)
        sock.sendall(b"250 odd.test \x1b[31mred\r\n")
        assert read_line(sock, buffer) == b"QUIT"
        sock.sendall(b"221 2.0.0 Bye\r\n")

    peer = scripted_peer(script)
    run = tool("probe", address(peer.host, peer.port))
    assert run.status == 0, run.out
    assert all(line.isprintable() for line in run.out.split("\n")), run.out
    assert "greeting: 220 odd.test ESMTP \\x1b[2J\\x1b]0;owned\\x07\\x85forged" in run.lines
    assert "EHLO client.test -> 250 odd.test \\x1b[31mred" in run.lines


def test_a_server_that_closes_after_ehlo_exits_3(scripted_peer: Peer, tool: Tool) -> None:
    def script(sock: socket.socket) -> None:
        sock.sendall(b"220 flaky.test ESMTP\r\n")
        read_line(sock, bytearray())

    peer = scripted_peer(script)
    run = tool("probe", address(peer.host, peer.port))
    assert run.status == 3
    assert run.lines[-1].startswith("error: the connection closed early (after EHLO client.test): ")


def test_a_421_to_rcpt_ends_the_probe_with_3(scripted_peer: Peer, tool: Tool) -> None:
    def script(sock: socket.socket) -> None:
        buffer = bytearray()
        sock.sendall(b"220 flaky.test ESMTP\r\n")
        read_line(sock, buffer)
        sock.sendall(b"250 flaky.test\r\n")
        read_line(sock, buffer)
        sock.sendall(b"250 2.1.0 Ok\r\n")
        read_line(sock, buffer)
        sock.sendall(b"421 4.7.0 flaky.test Too many errors\r\n")

    peer = scripted_peer(script)
    run = tool("probe", address(peer.host, peer.port), "--to", "a@flaky.test", "--to", "b@x.test")
    assert run.status == 3
    assert run.lines[-3:] == [
        "RCPT TO:<a@flaky.test> -> 421 4.7.0 flaky.test Too many errors",
        run.lines[-2],
        "error: the server closed the session",
    ]
    assert run.lines[-2].startswith("    421 4.7.0 [4xx ")


def test_as_a_process(server: RunningServer, tool_process: Callable[..., ToolRun]) -> None:
    run = tool_process("probe", address(server.host, server.port), "--to", "nobody@example.test")
    assert run.status == 1, run.out + run.err
    assert "RCPT TO:<nobody@example.test> -> 550 5.1.1 Mailbox unavailable: no such user here" in (
        run.lines
    )


def test_a_reply_that_breaks_the_grammar_exits_3(scripted_peer: Peer, tool: Tool) -> None:
    def script(sock: socket.socket) -> None:
        sock.sendall(b"hello, this is not SMTP\r\n")

    peer = scripted_peer(script)
    run = tool("probe", address(peer.host, peer.port))
    assert run.status == 3
    assert run.lines[-1].startswith("error: the server broke the protocol (after connecting): ")


def test_a_bad_cafile_is_a_usage_error(tool: Tool, tmp_path: Path) -> None:
    bad = tmp_path / "not-a-ca.pem"
    bad.write_text("nothing here\n")
    run = tool("probe", "127.0.0.1:1", "--cafile", str(bad))
    assert run.status == 2
    assert "argument --cafile: " in run.err


def test_non_ascii_addresses_without_smtputf8_are_not_sent(sink: SinkServer, tool: Tool) -> None:
    sink.default = Behaviour(hide=frozenset({"SMTPUTF8"}))
    run = tool("probe", address(sink.host, sink.port), "--to", "用户@sink.test")
    assert run.status == 1
    assert run.lines[-2].startswith("MAIL: not sent: the addresses are not ASCII")
    assert run.lines[-1] == "QUIT -> 221 2.0.0 Bye"
