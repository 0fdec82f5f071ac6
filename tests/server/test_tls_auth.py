"""STARTTLS, implicit TLS and AUTH against a real server on loopback (RFC 3207, 4954, 6409, 8314).

Certificates come from a throwaway trustme CA; clients are smtplib and raw
sockets wrapped in TLS by the test itself.
"""

from __future__ import annotations

import base64
import smtplib
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from mailwright.model import SessionInfo
from mailwright.passwords import hash_password
from mailwright.server.session import ListenerKind
from tests.helpers import (
    BASE_CONFIG,
    RawClient,
    RunningServer,
    maildir_messages,
    make_config,
    wait_for,
)

ALICE = "alice@example.test"
ALICE_PASSWORD = "correct horse battery"
ALICE_HASH = hash_password(ALICE_PASSWORD, log2_n=10)  # cheap, for tests
SERVER_NAME = "mx.example.test"

TLS_CONFIG = (
    BASE_CONFIG.replace(
        'listen = ["127.0.0.1:0"]', 'listen = ["127.0.0.1:0"]\nauth_failure_delay = 0.01'
    ).replace(
        '"alice@example.test" = {}',
        f'"alice@example.test" = {{ password = "{ALICE_HASH}", send_as = ["@alice.test"] }}',
    )
    + """
[tls]
certificate = "cert.pem"
key = "key.pem"
[submission]
listen = ["127.0.0.1:0"]
implicit_tls = ["127.0.0.1:0"]
[routes]
"faraway.test" = "127.0.0.1:1"
"""
)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def write_pems(ca: trustme.CA, folder: Path, *names: str) -> None:
    cert = ca.issue_cert(*(names or (SERVER_NAME, "127.0.0.1")))
    cert.cert_chain_pems[0].write_to_path(folder / "cert.pem")
    cert.private_key_pem.write_to_path(folder / "key.pem")


@pytest.fixture
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
def server(
    server_factory: Callable[..., RunningServer], tmp_path: Path, ca: trustme.CA
) -> RunningServer:
    write_pems(ca, tmp_path)
    return server_factory(base=TLS_CONFIG)


def address(server: RunningServer, kind: ListenerKind) -> tuple[str, int]:
    assert server.app is not None
    return server.app.listener.addresses_of(kind)[0]


def smtp(server: RunningServer, kind: ListenerKind = ListenerKind.SMTP) -> smtplib.SMTP:
    host, port = address(server, kind)
    return smtplib.SMTP(host, port, local_hostname="client.example", timeout=10)


def smtps(server: RunningServer, context: ssl.SSLContext) -> smtplib.SMTP_SSL:
    host, port = address(server, ListenerKind.IMPLICIT_TLS)
    return smtplib.SMTP_SSL(
        host, port, local_hostname="client.example", timeout=10, context=context
    )


def greet(server: RunningServer, kind: ListenerKind = ListenerKind.SMTP) -> RawClient:
    client = RawClient(*address(server, kind))
    assert client.read_reply() == "220 mx.example.test ESMTP mailwright"
    return client


def ehlo(client: RawClient) -> list[str]:
    client.send(b"EHLO client.example\r\n")
    return [line[4:] for line in client.read_reply().split("\r\n")]


def start_tls(client: RawClient, context: ssl.SSLContext) -> None:
    client.send(b"STARTTLS\r\n")
    assert client.read_reply() == "220 2.0.0 Ready to start TLS"
    assert client.buf == b""
    client.sock = context.wrap_socket(client.sock, server_hostname=SERVER_NAME)


def plain(user: str = ALICE, password: str = ALICE_PASSWORD) -> bytes:
    return base64.b64encode(f"\0{user}\0{password}".encode())


def queued(server: RunningServer) -> list[object]:
    assert server.app is not None
    app = server.app
    return server.call(lambda: app.store.list())  # type: ignore[return-value]


# ---------------------------------------------------------------- STARTTLS


def test_starttls_is_advertised_and_auth_only_after_it(
    server: RunningServer, client_tls: ssl.SSLContext
) -> None:
    with smtp(server) as s:
        s.ehlo()
        assert s.has_extn("starttls")
        assert not s.has_extn("auth")
        code, text = s.starttls(context=client_tls)
        assert (code, text) == (220, b"2.0.0 Ready to start TLS")
        s.ehlo()
        assert not s.has_extn("starttls")
        assert s.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]


def test_after_starttls_the_session_starts_over(
    server: RunningServer, client_tls: ssl.SSLContext
) -> None:
    client = greet(server)
    ehlo(client)
    start_tls(client, client_tls)
    client.send(b"MAIL FROM:<a@remote.test>\r\n")
    assert client.read_reply() == "503 5.5.1 Bad sequence of commands: send EHLO or HELO first"
    lines = ehlo(client)
    assert "STARTTLS" not in lines and "AUTH PLAIN LOGIN" in lines
    client.send(b"STARTTLS\r\n")
    assert client.read_reply() == "503 5.5.1 Bad sequence of commands: TLS is already active"
    client.send(b"QUIT\r\n")
    assert client.read_reply() == "221 2.0.0 Bye"
    client.close()


def test_commands_injected_with_starttls_are_never_answered(
    server: RunningServer, client_tls: ssl.SSLContext
) -> None:
    """CVE-2011-0411: plain text sent in the same packet as STARTTLS is discarded."""
    client = greet(server)
    ehlo(client)
    client.send(
        b"STARTTLS\r\nMAIL FROM:<evil@attacker.test>\r\nRCPT TO:<alice@example.test>\r\n"
        b"DATA\r\nSubject: injected\r\n\r\nx\r\n.\r\n"
    )
    assert client.read_reply() == "220 2.0.0 Ready to start TLS"
    assert client.buf == b""
    client.sock = client_tls.wrap_socket(client.sock, server_hostname=SERVER_NAME)
    # The first reply inside TLS answers the first command sent inside TLS.
    client.send(b"NOOP\r\n")
    assert client.read_reply() == "250 2.0.0 Ok"
    client.send(b"MAIL FROM:<a@remote.test>\r\n")
    assert client.read_reply().startswith("503 5.5.1 ")
    client.send(b"QUIT\r\n")
    assert client.read_reply() == "221 2.0.0 Bye"
    assert client.read_until_closed() == b""
    client.close()
    assert queued(server) == []


def test_starttls_with_an_argument_is_refused(server: RunningServer) -> None:
    client = greet(server)
    ehlo(client)
    client.send(b"STARTTLS please\r\n")
    assert client.read_reply() == "501 5.5.4 Syntax error: STARTTLS takes no arguments"
    client.close()


def test_without_a_certificate_there_is_no_starttls_and_no_auth(
    server_factory: Callable[..., RunningServer],
) -> None:
    server = server_factory()
    client = greet(server)
    lines = ehlo(client)
    assert "STARTTLS" not in lines and not any(line.startswith("AUTH") for line in lines)
    client.send(b"STARTTLS\r\n")
    assert client.read_reply() == "502 5.5.1 Command not implemented"
    client.send(b"AUTH PLAIN " + plain() + b"\r\n")
    assert client.read_reply() == "502 5.5.1 Command not implemented"
    client.close()


def test_a_failed_handshake_ends_only_that_session(
    server: RunningServer, client_tls: ssl.SSLContext
) -> None:
    client = greet(server)
    ehlo(client)
    client.send(b"STARTTLS\r\n")
    assert client.read_reply() == "220 2.0.0 Ready to start TLS"
    client.send(b"this is not a TLS record\r\n" * 10)
    assert b"220" not in client.read_until_closed()
    client.close()
    with smtp(server) as s:
        assert s.starttls(context=client_tls)[0] == 220


def test_tls_1_2_is_the_minimum(server: RunningServer) -> None:
    assert server.app is not None and server.app.tls is not None
    assert server.app.tls.current.minimum_version == ssl.TLSVersion.TLSv1_2


# ---------------------------------------------------------------- AUTH


def test_login_and_relay_after_starttls(server: RunningServer, client_tls: ssl.SSLContext) -> None:
    with smtp(server) as s:
        s.starttls(context=client_tls)
        assert s.login(ALICE, ALICE_PASSWORD) == (235, b"2.7.0 Authentication successful")
        refused = s.sendmail(ALICE, ["carl@faraway.test"], b"Subject: out\r\n\r\nhello\r\n")
        assert refused == {}
    messages = queued(server)
    assert len(messages) == 1
    message = messages[0]
    assert str(message.sender) == ALICE  # type: ignore[attr-defined]
    targets = [r.target for r in message.recipients]  # type: ignore[attr-defined]
    assert [(str(t.address), t.local) for t in targets] == [("carl@faraway.test", False)]
    assert server.app is not None
    with server.app.store.open_body(message.queue_id) as body:  # type: ignore[attr-defined]
        head = body.read(300)
    assert b"\tby mx.example.test (mailwright) with ESMTPSA" in head


def test_without_auth_there_is_no_relaying(
    server: RunningServer, client_tls: ssl.SSLContext
) -> None:
    with smtp(server) as s:
        s.starttls(context=client_tls)
        s.ehlo()
        s.mail("a@remote.test")
        code, _ = s.rcpt("carl@faraway.test")
        assert code >= 500


def test_unauthenticated_mail_over_tls_is_delivered_with_esmtps(
    server: RunningServer, client_tls: ssl.SSLContext
) -> None:
    with smtp(server) as s:
        s.starttls(context=client_tls)
        s.sendmail("a@remote.test", ["dave@example.test"], b"Subject: in\r\n\r\nhi\r\n")
    messages = wait_for(lambda: maildir_messages(server.data_dir, "dave@example.test"))
    assert b"(mailwright) with ESMTPS\r\n" in messages[0]  # type: ignore[index]


def test_a_wrong_password_gets_535_and_a_retry_may_succeed(
    server: RunningServer, client_tls: ssl.SSLContext
) -> None:
    with smtp(server) as s:
        s.starttls(context=client_tls)
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            s.login(ALICE, "wrong")
        assert info.value.smtp_code == 535
        assert info.value.smtp_error == b"5.7.8 Authentication credentials invalid"
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login("nobody@example.test", ALICE_PASSWORD)
        assert s.login(ALICE, ALICE_PASSWORD)[0] == 235


def test_auth_plain_with_and_without_initial_response(
    server: RunningServer, client_tls: ssl.SSLContext
) -> None:
    client = greet(server)
    ehlo(client)
    start_tls(client, client_tls)
    ehlo(client)
    client.send(b"AUTH PLAIN\r\n")
    assert client.buf == b""
    assert client.sock.recv(100) == b"334 \r\n"
    client.send(b"*\r\n")
    assert client.read_reply() == "501 5.0.0 Authentication cancelled"
    client.send(b"AUTH PLAIN\r\n")
    assert client.read_reply() == "334 "
    client.send(plain() + b"\r\n")
    assert client.read_reply() == "235 2.7.0 Authentication successful"
    client.send(b"AUTH PLAIN " + plain() + b"\r\n")
    assert client.read_reply() == "503 5.5.1 Bad sequence of commands: already authenticated"
    client.close()


@pytest.mark.parametrize("initial_response_ok", [True, False])
def test_auth_login(
    server: RunningServer, client_tls: ssl.SSLContext, initial_response_ok: bool
) -> None:
    with smtp(server) as s:
        s.starttls(context=client_tls)
        s.ehlo()
        s.user, s.password = ALICE, ALICE_PASSWORD
        code, text = s.auth("LOGIN", s.auth_login, initial_response_ok=initial_response_ok)
        assert (code, text) == (235, b"2.7.0 Authentication successful")


def test_auth_with_bad_base64_or_unknown_mechanism(
    server: RunningServer, client_tls: ssl.SSLContext
) -> None:
    client = greet(server)
    ehlo(client)
    start_tls(client, client_tls)
    ehlo(client)
    client.send(b"AUTH PLAIN !!!\r\nAUTH CRAM-MD5\r\n")
    assert client.replies(2) == [
        "501 5.5.2 Syntax error: the response is not valid base64",
        "504 5.5.4 Unrecognized authentication type; use one of: PLAIN LOGIN",
    ]
    client.close()


def test_the_sender_must_be_owned_by_the_user(
    server: RunningServer, client_tls: ssl.SSLContext
) -> None:
    with smtp(server) as s:
        s.starttls(context=client_tls)
        s.login(ALICE, ALICE_PASSWORD)
        assert s.mail("dave@example.test") == (
            553,
            b"5.7.1 Sender address rejected: not owned by user alice@example.test",
        )
        assert s.mail("Alice@Example.test")[0] == 250
        s.rset()
        assert s.mail("anything@alice.test")[0] == 250  # send_as = ["@alice.test"]
        s.rset()
        assert s.mail("")[0] == 250  # the null sender impersonates nobody


# ---------------------------------------------------------------- submission


def test_submission_needs_tls_then_auth(server: RunningServer, client_tls: ssl.SSLContext) -> None:
    client = greet(server, ListenerKind.SUBMISSION)
    lines = ehlo(client)
    assert "STARTTLS" in lines
    client.send(b"MAIL FROM:<alice@example.test>\r\n")
    assert client.read_reply() == "530 5.7.0 Authentication required; send AUTH first"
    client.send(b"AUTH PLAIN " + plain() + b"\r\n")
    assert client.read_reply() == (
        "538 5.7.11 Encryption required for requested authentication mechanism; send STARTTLS first"
    )
    start_tls(client, client_tls)
    ehlo(client)
    client.send(b"MAIL FROM:<alice@example.test>\r\n")
    assert client.read_reply().startswith("530 5.7.0 ")
    client.send(b"AUTH PLAIN " + plain() + b"\r\n")
    assert client.read_reply() == "235 2.7.0 Authentication successful"
    client.send(b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<dave@example.test>\r\n")
    assert client.replies(2) == ["250 2.1.0 Ok", "250 2.1.5 Ok"]
    client.close()


def test_submission_with_smtplib(server: RunningServer, client_tls: ssl.SSLContext) -> None:
    with smtp(server, ListenerKind.SUBMISSION) as s:
        s.starttls(context=client_tls)
        s.login(ALICE, ALICE_PASSWORD)
        s.sendmail(ALICE, ["dave@example.test"], b"Subject: sub\r\n\r\nhi\r\n")
    messages = wait_for(lambda: maildir_messages(server.data_dir, "dave@example.test"))
    assert b"with ESMTPSA" in messages[0]  # type: ignore[index]


def test_silent_connections_to_the_tls_port_count_from_accept(
    server_factory: Callable[..., RunningServer], tmp_path: Path, ca: trustme.CA,
    client_tls: ssl.SSLContext,
) -> None:
    """A handshake never started holds a connection slot; past the limit, no handshake at all."""
    write_pems(ca, tmp_path)
    config = TLS_CONFIG.replace(
        "auth_failure_delay = 0.01", "auth_failure_delay = 0.01\nmax_connections_per_ip = 3"
    ).replace('key = "key.pem"', 'key = "key.pem"\nhandshake_timeout = 120')
    server = server_factory(base=config)
    host, port = address(server, ListenerKind.IMPLICIT_TLS)
    silent = [socket.create_connection((host, port), timeout=30) for _ in range(3)]
    over = socket.create_connection((host, port), timeout=30)
    assert over.recv(1) == b""  # closed at once, long before the handshake timeout
    over.close()
    for sock in silent:
        sock.close()
    assert server.app is not None
    listener = server.app.listener
    wait_for(lambda: server.call(lambda: _count(listener)) == 0)
    with smtps(server, client_tls) as s:  # the slots the silent ones held are free again
        assert s.ehlo()[0] == 250


async def _count(listener: object) -> int:
    return len(listener.sessions)  # type: ignore[attr-defined]


def test_implicit_tls_from_the_first_byte(
    server: RunningServer, client_tls: ssl.SSLContext
) -> None:
    with smtps(server, client_tls) as s:
        s.ehlo()
        assert not s.has_extn("starttls")
        assert s.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        assert s.mail(ALICE)[0] == 530
        assert s.docmd("STARTTLS")[0] == 503
        s.login(ALICE, ALICE_PASSWORD)
        assert server.app is not None
        listener = server.app.listener

        async def sessions() -> list[SessionInfo]:
            return [session.info for session in listener.sessions]

        [info] = server.call(sessions)  # type: ignore[misc]
        assert (info.tls, info.authenticated_user) == (True, ALICE)
        s.sendmail(ALICE, ["carl@faraway.test"], b"Subject: 465\r\n\r\nhi\r\n")
    assert [str(r.target.address) for m in queued(server) for r in m.recipients] == [  # type: ignore[attr-defined]
        "carl@faraway.test"
    ]


def test_implicit_tls_does_not_speak_plain_text(server: RunningServer) -> None:
    client = RawClient(*address(server, ListenerKind.IMPLICIT_TLS))
    client.send(b"EHLO client.example\r\n")
    assert b"220" not in client.read_until_closed()
    client.close()


def test_failed_handshakes_leave_the_connection_limits_intact(
    server_factory: Callable[..., RunningServer], tmp_path: Path, ca: trustme.CA
) -> None:
    write_pems(ca, tmp_path)
    limited = TLS_CONFIG.replace(
        "auth_failure_delay", "max_connections_per_ip = 1\nauth_failure_delay"
    )
    server = server_factory(base=limited)
    first = greet(server)
    broken = RawClient(*address(server, ListenerKind.IMPLICIT_TLS))
    broken.send(b"EHLO client.example\r\n" * 20)
    assert broken.read_until_closed() == b""
    broken.close()
    second = RawClient(*address(server, ListenerKind.SMTP))
    assert (
        second.read_reply() == "421 4.7.0 Too many connections from your address; try again later"
    )
    second.close()
    first.close()


# ---------------------------------------------------------------- reload


def test_reload_serves_the_new_certificate_without_dropping_sessions(
    server: RunningServer, client_tls: ssl.SSLContext, ca: trustme.CA, tmp_path: Path
) -> None:
    before = smtps(server, client_tls)
    before.ehlo()
    write_pems(ca, tmp_path, "renewed.example.test")
    assert server.app is not None
    app = server.app

    async def reload() -> None:
        app.reload_tls()

    server.call(reload)
    assert before.noop()[0] == 250  # the session from before is still up
    before.quit()
    host, port = address(server, ListenerKind.IMPLICIT_TLS)
    with pytest.raises(ssl.SSLCertVerificationError):  # the old name is gone: new cert
        smtplib.SMTP_SSL(host, port, timeout=10, context=client_tls)
    renewed = ssl.create_default_context()
    ca.configure_trust(renewed)
    renewed.check_hostname = False
    with smtplib.SMTP_SSL(host, port, timeout=10, context=renewed) as s:
        cert = s.sock.getpeercert()  # type: ignore[union-attr]
        assert ("DNS", "renewed.example.test") in cert["subjectAltName"]


def test_a_failed_reload_keeps_the_old_certificate(
    server: RunningServer, client_tls: ssl.SSLContext, tmp_path: Path
) -> None:
    (tmp_path / "key.pem").write_text("not a key\n")
    assert server.app is not None
    app = server.app
    results: list[bool] = []

    async def reload() -> None:
        assert app.tls is not None
        results.append(app.tls.reload())

    server.call(reload)
    assert results == [False]
    with smtps(server, client_tls) as s:
        assert s.noop()[0] == 250


def test_mailwright_serve_does_tls_and_auth_and_reloads_on_sighup(
    tmp_path: Path, ca: trustme.CA, client_tls: ssl.SSLContext
) -> None:
    """The real process (on uvloop when installed): implicit TLS, AUTH, SIGHUP."""
    import re
    import signal

    from tests.helpers import ServerProcess

    write_pems(ca, tmp_path)
    config = tmp_path / "mailwright.toml"
    config.write_text(TLS_CONFIG)
    server = ServerProcess(config)
    try:
        found = re.findall(r"event=listening address=[\d.]+:(\d+) kind=(\w+)", server.log())
        listening = {kind: int(port) for port, kind in found}
        assert set(listening) == {"smtp", "submission", "implicit_tls"}
        before = smtplib.SMTP_SSL(
            "127.0.0.1", listening["implicit_tls"], timeout=10, context=client_tls
        )
        before.login(ALICE, ALICE_PASSWORD)
        before.sendmail(ALICE, ["dave@example.test"], b"Subject: 465\r\n\r\nhi\r\n")
        wait_for(lambda: maildir_messages(tmp_path / "data", "dave@example.test"))
        with smtplib.SMTP("127.0.0.1", listening["smtp"], timeout=10) as s:
            s.starttls(context=client_tls)
            assert s.login(ALICE, ALICE_PASSWORD)[0] == 235
        assert ALICE_PASSWORD not in server.log()
        assert "event=tls " in server.log() and "event=auth " in server.log()

        write_pems(ca, tmp_path, "renewed.example.test")
        server.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "event=reloaded" in server.log())
        assert before.noop()[0] == 250
        before.quit()
        with pytest.raises(ssl.SSLCertVerificationError):
            smtplib.SMTP("127.0.0.1", listening["submission"], timeout=10).starttls(
                context=client_tls
            )
    finally:
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait() == 0


def test_an_account_removed_by_a_reload_can_no_longer_send_in_a_session_logged_in_before(
    server: RunningServer, client_tls: ssl.SSLContext, tmp_path: Path
) -> None:
    """A reload that removes alice's password ends what her open session may do: MAIL
    gets 530 5.7.0 (she cannot AUTH again in this session, RFC 4954 4), so a revoked
    account stops relaying at once, not when the client disconnects."""
    client = greet(server)
    ehlo(client)
    start_tls(client, client_tls)
    ehlo(client)
    client.send(b"AUTH PLAIN " + plain() + b"\r\n")
    assert client.read_reply().startswith("235")
    client.send(b"MAIL FROM:<alice@example.test>\r\n")
    assert client.read_reply().startswith("250")
    client.send(b"RSET\r\n")
    assert client.read_reply().startswith("250")
    assert server.app is not None
    removed = make_config(tmp_path, base=TLS_CONFIG.replace(f'password = "{ALICE_HASH}", ', ""))
    server.app.listener.services = server.app.listener.services.reloaded(removed)
    client.send(b"MAIL FROM:<alice@example.test>\r\n")
    assert client.read_reply() == (
        "530 5.7.0 Authentication required: account alice@example.test no longer exists;"
        " connect again"
    )
    client.close()
