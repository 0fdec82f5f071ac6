"""STARTTLS (RFC 3207) and AUTH (RFC 4954, 6409) in the server core, by feeding bytes."""

from __future__ import annotations

import base64

import pytest

from mailwright.protocol import replies
from mailwright.protocol import state as st
from mailwright.protocol.events import Auth, Mail, Quit
from mailwright.protocol.state import State
from tests.protocol.conftest import Driver, codes, make_driver

EHLO = b"EHLO client.example\r\n"
TLS = {"starttls": True, "auth_mechanisms": ("PLAIN", "LOGIN")}


def b64(data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw)


def plain(user: str = "alice@example.test", password: str = "s3cret", authzid: str = "") -> bytes:
    return b64(f"{authzid}\0{user}\0{password}")


def ehlo_lines(driver: Driver) -> list[str]:
    out = driver.feed(EHLO).decode()
    return [line[4:] for line in out.split("\r\n") if line]


def after_tls(**config: object) -> Driver:
    """A driver whose client did EHLO, STARTTLS and EHLO again."""
    driver = make_driver(**{**TLS, **config})  # type: ignore[arg-type]
    driver.feed(EHLO)
    assert codes(driver.feed(b"STARTTLS\r\n")) == ["220 2.0.0 Ready to start TLS"]
    driver.feed(EHLO)
    return driver


# ---------------------------------------------------------------- STARTTLS


def test_starttls_is_not_offered_without_a_certificate() -> None:
    driver = make_driver()
    assert "STARTTLS" not in ehlo_lines(driver)
    assert codes(driver.feed(b"STARTTLS\r\n")) == ["502 5.5.1 Command not implemented"]


def test_starttls_is_advertised_until_tls_is_active() -> None:
    driver = make_driver(**TLS)
    lines = ehlo_lines(driver)
    assert "STARTTLS" in lines
    assert not any(line.startswith("AUTH") for line in lines)
    driver.feed(b"STARTTLS\r\n")
    lines = ehlo_lines(driver)
    assert "STARTTLS" not in lines
    assert "AUTH PLAIN LOGIN" in lines


def test_after_starttls_the_client_must_greet_again() -> None:
    driver = make_driver(**TLS)
    driver.feed(EHLO)
    assert driver.feed(b"STARTTLS\r\n") == b"220 2.0.0 Ready to start TLS\r\n"
    assert driver.conn.state is State.CONNECTED
    assert driver.conn.tls and driver.conn.helo_name is None
    assert codes(driver.feed(b"MAIL FROM:<a@remote.test>\r\n")) == [str(replies.NEED_HELO)]
    driver.feed(EHLO)
    assert codes(driver.feed(b"MAIL FROM:<a@remote.test>\r\n")) == ["250 2.1.0 Ok"]


def test_commands_pipelined_after_starttls_are_dropped_unanswered() -> None:
    """CVE-2011-0411: what came in plain text with STARTTLS is never answered after it."""
    driver = make_driver(**TLS)
    driver.feed(EHLO)
    out = driver.feed(
        b"STARTTLS\r\nMAIL FROM:<evil@attacker.test>\r\nRCPT TO:<alice@example.test>\r\nQUIT\r\n"
    )
    assert out == b"220 2.0.0 Ready to start TLS\r\n"
    assert driver.conn.state is State.CONNECTED
    out = driver.feed(EHLO)
    assert codes(out) == [f"250 {line}" for line in driver.conn.capabilities()[-1:]]
    assert not any(isinstance(e, Mail) for e in driver.events)


def test_a_partial_line_before_the_handshake_does_not_prefix_the_next_command() -> None:
    driver = make_driver(**TLS)
    driver.feed(EHLO)
    assert codes(driver.feed(b"STARTTLS\r\nMAIL FRO")) == ["220 2.0.0 Ready to start TLS"]
    assert codes(driver.feed(b"EHLO again.example\r\n"))[-1].startswith("250 ")
    assert driver.conn.helo_name == "again.example"


def test_starttls_twice_is_out_of_sequence() -> None:
    driver = after_tls()
    assert codes(driver.feed(b"STARTTLS\r\n")) == [
        "503 5.5.1 Bad sequence of commands: TLS is already active"
    ]


def test_starttls_on_implicit_tls_is_out_of_sequence_and_not_advertised() -> None:
    driver = make_driver(tls=True, **TLS)  # type: ignore[arg-type]
    assert "STARTTLS" not in ehlo_lines(driver)
    assert codes(driver.feed(b"STARTTLS\r\n")) == [str(replies.TLS_ALREADY_ACTIVE)]


def test_starttls_takes_no_arguments() -> None:
    driver = make_driver(**TLS)
    driver.feed(EHLO)
    assert codes(driver.feed(b"STARTTLS now\r\n")) == [
        "501 5.5.4 Syntax error: STARTTLS takes no arguments"
    ]
    assert not driver.conn.tls


def test_starttls_needs_ehlo_first_and_no_open_transaction() -> None:
    driver = make_driver(**TLS)
    assert codes(driver.feed(b"STARTTLS\r\n")) == [str(replies.NEED_HELO)]
    driver.feed(EHLO)
    driver.feed(b"MAIL FROM:<a@remote.test>\r\n")
    assert codes(driver.feed(b"STARTTLS\r\n")) == [str(replies.STARTTLS_IN_TRANSACTION)]
    assert not driver.conn.tls


def test_a_refused_starttls_keeps_the_session_and_its_input() -> None:
    driver = make_driver(**TLS)
    driver.feed(EHLO)
    driver.conn.receive_data(b"STARTTLS\r\nNOOP\r\n")
    driver.conn.next_event()
    out = driver.conn.send(replies.TLS_NOT_AVAILABLE)
    assert out == b"454 4.7.0 TLS not available due to temporary reason\r\n"
    assert driver.conn.state is State.READY and not driver.conn.tls
    assert codes(driver.feed(b"")) == ["250 2.0.0 Ok"]  # the pipelined NOOP


# ---------------------------------------------------------------- AUTH


def test_auth_is_not_implemented_without_mechanisms() -> None:
    driver = make_driver()
    driver.feed(EHLO)
    assert codes(driver.feed(b"AUTH PLAIN " + plain() + b"\r\n")) == [
        "502 5.5.1 Command not implemented"
    ]


def test_auth_before_tls_needs_encryption() -> None:
    driver = make_driver(**TLS)
    driver.feed(EHLO)
    assert codes(driver.feed(b"AUTH PLAIN " + plain() + b"\r\n")) == [
        "538 5.7.11 Encryption required for requested authentication mechanism; send STARTTLS first"
    ]
    assert driver.conn.authenticated is None
    assert not any(isinstance(e, Auth) for e in driver.events)


def test_auth_plain_with_initial_response() -> None:
    driver = after_tls()
    assert codes(driver.feed(b"AUTH PLAIN " + plain() + b"\r\n")) == [
        "235 2.7.0 Authentication successful"
    ]
    assert driver.conn.authenticated == "alice@example.test"
    assert driver.conn.state is State.READY


def test_auth_plain_with_continuation_sends_334_and_a_space() -> None:
    driver = after_tls()
    assert driver.feed(b"AUTH plain\r\n") == b"334 \r\n"
    assert driver.conn.state is State.AUTH
    assert codes(driver.feed(plain() + b"\r\n")) == ["235 2.7.0 Authentication successful"]
    assert driver.conn.state is State.READY


def test_auth_login_asks_for_user_then_password() -> None:
    driver = after_tls()
    assert driver.feed(b"AUTH LOGIN\r\n") == b"334 VXNlcm5hbWU6\r\n"
    assert driver.feed(b64("alice@example.test") + b"\r\n") == b"334 UGFzc3dvcmQ6\r\n"
    assert codes(driver.feed(b64("s3cret") + b"\r\n")) == ["235 2.7.0 Authentication successful"]


def test_auth_login_with_the_user_name_as_initial_response() -> None:
    driver = after_tls()
    out = driver.feed(b"AUTH LOGIN " + b64("alice@example.test") + b"\r\n")
    assert out == b"334 UGFzc3dvcmQ6\r\n"
    assert codes(driver.feed(b64("s3cret") + b"\r\n"))[0].startswith("235 ")


def test_a_wrong_password_gets_535_and_the_client_may_try_again() -> None:
    driver = after_tls()
    assert codes(driver.feed(b"AUTH PLAIN " + plain(password="wrong") + b"\r\n")) == [
        "535 5.7.8 Authentication credentials invalid"
    ]
    assert driver.conn.authenticated is None
    assert codes(driver.feed(b"AUTH PLAIN " + plain() + b"\r\n"))[0].startswith("235 ")


def test_auth_twice_is_out_of_sequence() -> None:
    driver = after_tls()
    driver.feed(b"AUTH PLAIN " + plain() + b"\r\n")
    assert codes(driver.feed(b"AUTH PLAIN " + plain() + b"\r\n")) == [
        "503 5.5.1 Bad sequence of commands: already authenticated"
    ]


def test_auth_inside_a_transaction_is_out_of_sequence() -> None:
    driver = after_tls()
    driver.feed(b"MAIL FROM:<a@remote.test>\r\n")
    assert codes(driver.feed(b"AUTH PLAIN " + plain() + b"\r\n")) == [
        str(replies.AUTH_IN_TRANSACTION)
    ]


def test_auth_before_ehlo_is_out_of_sequence() -> None:
    driver = make_driver(tls=True, **TLS)  # type: ignore[arg-type]
    assert codes(driver.feed(b"AUTH PLAIN " + plain() + b"\r\n")) == [str(replies.NEED_HELO)]


@pytest.mark.parametrize("mechanism", [b"LOGIN", b"PLAIN"])
def test_a_star_cancels_the_exchange(mechanism: bytes) -> None:
    driver = after_tls()
    assert driver.feed(b"AUTH " + mechanism + b"\r\n").startswith(b"334 ")
    assert codes(driver.feed(b"*\r\n")) == ["501 5.0.0 Authentication cancelled"]
    assert driver.conn.state is State.READY
    assert codes(driver.feed(b"NOOP\r\n")) == ["250 2.0.0 Ok"]


def test_bad_base64_ends_the_exchange_with_501() -> None:
    driver = after_tls()
    assert codes(driver.feed(b"AUTH PLAIN not-base64!\r\n")) == [str(replies.AUTH_BAD_BASE64)]
    assert driver.conn.state is State.READY
    driver.feed(b"AUTH LOGIN\r\n")
    assert codes(driver.feed(b"%%%\r\n")) == [
        "501 5.5.2 Syntax error: the response is not valid base64"
    ]
    assert driver.conn.state is State.READY


def test_lines_inside_the_exchange_are_responses_not_commands() -> None:
    driver = after_tls()
    driver.feed(b"AUTH LOGIN\r\n")
    # "QUIT" is valid base64 (for "AB\x13"): taken as the user name, never as QUIT.
    assert driver.feed(b"QUIT\r\n") == b"334 UGFzc3dvcmQ6\r\n"
    assert codes(driver.feed(b"QUIT\r\n")) == [str(replies.AUTH_FAILED)]
    assert driver.conn.state is State.READY and not driver.closed
    assert not any(isinstance(e, Quit) for e in driver.events)


def test_unknown_or_missing_mechanisms() -> None:
    driver = after_tls()
    assert codes(driver.feed(b"AUTH CRAM-MD5\r\n")) == [
        "504 5.5.4 Unrecognized authentication type; use one of: PLAIN LOGIN"
    ]
    assert codes(driver.feed(b"AUTH\r\n")) == [
        "501 5.5.4 Syntax error: send AUTH <mechanism> (PLAIN LOGIN)"
    ]
    assert codes(driver.feed(b"AUTH PLAIN a b\r\n"))[0].startswith("501 5.5.4 ")


def test_plain_refuses_another_authorization_identity() -> None:
    driver = after_tls()
    out = codes(driver.feed(b"AUTH PLAIN " + plain(authzid="bob@example.test") + b"\r\n"))
    assert out[0].startswith("535 5.7.8 ")
    assert driver.conn.authenticated is None
    out = codes(driver.feed(b"AUTH PLAIN " + plain(authzid="alice@example.test") + b"\r\n"))
    assert out[0].startswith("235 ")


@pytest.mark.parametrize(
    "message",
    [b"alice\0s3cret", b"\0\0s3cret", b"\0alice\0", b"a\0b\0c\0d", b"\0\xff\xfe\0pw"],
)
def test_malformed_plain_messages_get_501(message: bytes) -> None:
    driver = after_tls()
    out = codes(driver.feed(b"AUTH PLAIN " + base64.b64encode(message) + b"\r\n"))
    assert out[0].startswith("501 5.5.2 ")


def test_an_empty_initial_response_is_an_equals_sign() -> None:
    driver = after_tls()
    assert codes(driver.feed(b"AUTH PLAIN =\r\n"))[0].startswith("501 5.5.2 Syntax error: PLAIN")


def test_the_auth_line_may_be_longer_than_a_command_line() -> None:
    """RFC 4954 4: 12288 octets for AUTH with its initial response; 512 for other commands."""
    password = "p" * 3000
    driver = after_tls()
    driver.users["alice@example.test"] = password
    assert codes(driver.feed(b"AUTH PLAIN " + plain(password=password) + b"\r\n"))[0].startswith(
        "235 "
    )
    assert codes(driver.feed(b"NOOP " + b"x" * 600 + b"\r\n")) == ["500 5.5.6 Line too long"]
    assert codes(driver.feed(b"AUTH PLAIN " + b"A" * 13000 + b"\r\n")) == [
        "500 5.5.6 Line too long"
    ]


def test_a_too_long_response_ends_the_exchange() -> None:
    driver = after_tls(max_auth_line=1000)
    driver.feed(b"AUTH LOGIN\r\n")
    assert codes(driver.feed(b"A" * 2000 + b"\r\n")) == ["500 5.5.6 Line too long"]
    assert driver.conn.state is State.READY


def test_the_password_is_not_in_the_events_repr() -> None:
    driver = after_tls()
    driver.feed(b"AUTH PLAIN " + plain() + b"\r\n")
    auth = next(e for e in driver.events if isinstance(e, Auth))
    assert (auth.username, auth.password, auth.mechanism) == (
        "alice@example.test",
        "s3cret",
        "PLAIN",
    )
    assert "s3cret" not in repr(auth)


def test_guessing_passwords_counts_toward_max_errors() -> None:
    driver = after_tls(max_errors=3)
    for _ in range(2):
        assert codes(driver.feed(b"AUTH PLAIN " + plain(password="x") + b"\r\n"))[0].startswith(
            "535 "
        )
    out = codes(driver.feed(b"AUTH PLAIN " + plain(password="x") + b"\r\n"))
    assert out == ["535 5.7.8 Authentication credentials invalid", str(replies.TOO_MANY_ERRORS)]
    assert driver.closed


def test_starttls_forgets_nothing_but_what_tls_replaces() -> None:
    """After STARTTLS, AUTH works after the new EHLO; the plain-text EHLO name is gone."""
    driver = make_driver(**TLS)
    driver.feed(b"EHLO plain.example\r\n")
    driver.feed(b"STARTTLS\r\n")
    assert codes(driver.feed(b"AUTH PLAIN " + plain() + b"\r\n")) == [str(replies.NEED_HELO)]
    driver.feed(EHLO)
    assert codes(driver.feed(b"AUTH PLAIN " + plain() + b"\r\n"))[0].startswith("235 ")


# ---------------------------------------------------------------- submission


def test_submission_needs_auth_before_mail() -> None:
    driver = after_tls(auth_required=True)
    assert codes(driver.feed(b"MAIL FROM:<alice@example.test>\r\n")) == [
        "530 5.7.0 Authentication required; send AUTH first"
    ]
    driver.feed(b"AUTH PLAIN " + plain() + b"\r\n")
    assert codes(driver.feed(b"MAIL FROM:<alice@example.test>\r\n")) == ["250 2.1.0 Ok"]


def test_submission_before_tls_asks_for_starttls_then_auth() -> None:
    driver = make_driver(auth_required=True, **TLS)  # type: ignore[arg-type]
    driver.feed(EHLO)
    assert codes(driver.feed(b"MAIL FROM:<alice@example.test>\r\n")) == [str(replies.AUTH_REQUIRED)]
    assert codes(driver.feed(b"AUTH LOGIN\r\n")) == [str(replies.ENCRYPTION_REQUIRED)]


# ---------------------------------------------------------------- the table


def test_every_client_command_has_a_rule_in_every_command_state() -> None:
    command_states = (State.CONNECTED, State.READY, State.MAIL, State.MAIL_REFUSED, State.RCPT)
    for state in (*command_states, State.CHUNKING):
        for command in st.CLIENT_COMMANDS:
            for facts in (st.Fact.NONE, st.Fact.TLS | st.Fact.AUTH_REQUIRED):
                st.check(state, command, facts)  # raises KeyError when a rule is missing


def test_guards_are_checked_after_the_state() -> None:
    assert st.check(State.READY, Mail, st.Fact.AUTH_REQUIRED) == replies.AUTH_REQUIRED
    assert st.check(State.READY, Mail, st.Fact.AUTH_REQUIRED | st.Fact.AUTHENTICATED) is None
    assert st.check(State.READY, Mail) is None
    assert st.check(State.RCPT, Mail, st.Fact.AUTH_REQUIRED) == replies.NESTED_MAIL


def test_the_server_core_and_sasl_import_no_io() -> None:
    """protocol/ stays pure even with TLS and AUTH in it (and importing mailwright loads no ssl)."""
    import subprocess
    import sys

    code = (
        "import sys, mailwright, mailwright.protocol.server, mailwright.protocol.auth; "
        "print(sorted({'asyncio', 'socket', 'ssl', 'selectors'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
