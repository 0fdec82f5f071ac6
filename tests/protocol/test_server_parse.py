"""The command parser on its own: a line and the session facts it is given, an event out."""

from __future__ import annotations

import base64

import pytest

from mailwright.model import Address
from mailwright.protocol import replies
from mailwright.protocol.buffer import LineBuffer
from mailwright.protocol.data import BodyProblem
from mailwright.protocol.events import (
    Auth,
    AuthChallenge,
    Data,
    Mail,
    ProtocolViolation,
    Rcpt,
    SyncViolation,
)
from mailwright.protocol.limits import ProtocolConfig
from mailwright.protocol.reply import Reply
from mailwright.protocol.server_parse import CommandParser, Transaction, body_rejection
from mailwright.protocol.state import Fact, State


def parser(config: ProtocolConfig | None = None) -> tuple[CommandParser, LineBuffer]:
    config = config or ProtocolConfig()
    lines = LineBuffer(config.command_buffer_limit)
    return CommandParser(config, lines), lines


def test_the_same_rcpt_line_depends_on_the_state_it_is_given() -> None:
    p, _ = parser()
    line = b"RCPT TO:<bob@example.test>"
    early = p.parse(line, State.READY, Fact.NONE, True, None)
    assert early == ProtocolViolation(reply=replies.NEED_MAIL)
    accepted = p.parse(line, State.MAIL, Fact.NONE, True, Transaction(smtputf8=False))
    assert accepted == Rcpt(recipient=Address("bob", "example.test"))


def test_rcpt_over_the_limit_counts_the_transaction_it_is_given() -> None:
    p, _ = parser(ProtocolConfig(max_recipients=2))
    line = b"RCPT TO:<bob@example.test>"
    full = Transaction(smtputf8=False, accepted=2)
    assert p.parse(line, State.RCPT, Fact.NONE, True, full) == ProtocolViolation(
        reply=replies.TOO_MANY_RECIPIENTS
    )


def test_mail_parameters_need_ehlo_not_helo() -> None:
    p, _ = parser()
    line = b"MAIL FROM:<a@example.test> SIZE=100"
    after_helo = p.parse(line, State.READY, Fact.NONE, False, None)
    assert isinstance(after_helo, ProtocolViolation) and after_helo.reply.code == 555
    after_ehlo = p.parse(line, State.READY, Fact.NONE, True, None)
    assert isinstance(after_ehlo, Mail) and after_ehlo.size == 100


def test_data_with_bytes_pipelined_behind_it_is_a_sync_violation() -> None:
    p, lines = parser()
    transaction = Transaction(smtputf8=False, accepted=1)
    assert p.parse(b"DATA", State.RCPT, Fact.NONE, True, transaction) == Data()
    lines.feed(b"Subject: sent too early\r\n")
    event = p.parse(b"DATA", State.RCPT, Fact.NONE, True, transaction)
    assert event == SyncViolation(reply=replies.SYNC_ERROR)


def test_auth_keeps_its_sasl_exchange_until_the_connection_ends_it() -> None:
    p, _ = parser(ProtocolConfig(auth_mechanisms=("PLAIN",)))
    assert p.sasl is None
    started = p.parse(b"AUTH PLAIN", State.READY, Fact.TLS, True, None)
    assert started == AuthChallenge(reply=Reply(334, None, ""))
    assert p.sasl is not None
    response = base64.b64encode(b"\0alice@example.test\0s3cret")
    done = p.parse(response, State.AUTH, Fact.TLS, True, None)
    assert isinstance(done, Auth)
    assert (done.username, done.password) == ("alice@example.test", "s3cret")


@pytest.mark.parametrize(
    ("problem", "code", "words"),
    [
        (BodyProblem.TOO_BIG, 552, "1000 octets"),
        (BodyProblem.LINE_TOO_LONG, 554, "longer than 1200 octets"),
        (BodyProblem.BARE_LINE_ENDING, 554, "bare CR or LF"),
    ],
)
def test_each_body_problem_gets_its_reply(problem: BodyProblem, code: int, words: str) -> None:
    config = ProtocolConfig(max_message_size=1000, max_body_line=1200)
    reply = body_rejection(problem, config)
    assert reply.code == code and words in reply.text
