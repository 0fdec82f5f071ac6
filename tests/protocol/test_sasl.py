"""The SASL exchanges on their own: PLAIN (RFC 4616) and LOGIN."""

from __future__ import annotations

import base64

import pytest

from mailwright.protocol import replies
from mailwright.protocol.auth import (
    MECHANISMS,
    Challenge,
    Credentials,
    LoginExchange,
    PlainExchange,
    Refusal,
    start_exchange,
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_plain_with_an_initial_response_completes_at_once() -> None:
    step = PlainExchange().start(b64("\0alice@example.test\0pässword"))
    assert step == Credentials("PLAIN", "alice@example.test", "pässword", "")


def test_plain_without_initial_response_asks_with_an_empty_challenge() -> None:
    exchange = PlainExchange()
    assert exchange.start(None) == Challenge("")
    assert exchange.respond(b64("alice\0alice\0pw")) == Credentials("PLAIN", "alice", "pw", "alice")


def test_plain_authzid_is_compared_without_case() -> None:
    step = PlainExchange().start(b64("Alice@Example.test\0alice@example.test\0pw"))
    assert isinstance(step, Credentials)
    refused = PlainExchange().start(b64("root\0alice\0pw"))
    assert isinstance(refused, Refusal) and refused.reply.code == 535


def test_a_star_cancels_but_only_as_a_response() -> None:
    exchange = PlainExchange()
    exchange.start(None)
    assert exchange.respond("*") == Refusal(replies.AUTH_CANCELLED)
    assert PlainExchange().start("*") == Refusal(replies.AUTH_BAD_BASE64)


@pytest.mark.parametrize("text", ["=YWJj", "YW Jj", "ä", "YWJ"])
def test_bad_base64_is_refused(text: str) -> None:
    assert PlainExchange().start(text) == Refusal(replies.AUTH_BAD_BASE64)


def test_login_asks_for_user_then_password() -> None:
    exchange = LoginExchange()
    assert exchange.start(None) == Challenge("VXNlcm5hbWU6")
    assert exchange.respond(b64("alice")) == Challenge("UGFzc3dvcmQ6")
    assert exchange.respond(b64("pw")) == Credentials("LOGIN", "alice", "pw")


def test_login_refuses_empty_names_and_passwords() -> None:
    assert isinstance(LoginExchange().start("="), Refusal)
    exchange = LoginExchange()
    exchange.start(b64("alice"))
    step = exchange.respond("")
    assert isinstance(step, Refusal) and step.reply.code == 501


def test_credentials_hide_the_password_in_repr() -> None:
    assert "hunter2" not in repr(Credentials("PLAIN", "alice", "hunter2"))


def test_the_registry_names_both_mechanisms() -> None:
    assert set(MECHANISMS) == {"PLAIN", "LOGIN"}
    assert start_exchange("LOGIN").mechanism == "LOGIN"
    with pytest.raises(KeyError):
        start_exchange("CRAM-MD5")
