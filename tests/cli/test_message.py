"""The headers ``send`` adds, and the bytes it leaves alone."""

from __future__ import annotations

from datetime import UTC, datetime

from mailwright.cli.message import DEFAULT_MESSAGE, complete_message
from mailwright.model import Address

SENDER = Address("sender", "remote.test")
ALICE = Address("alice", "example.test")
NOW = datetime(2024, 5, 17, 9, 30, tzinfo=UTC)


def test_a_complete_message_is_returned_as_it_is() -> None:
    message = (
        b"Date: Fri, 17 May 2024 09:30:00 +0000\r\nMessage-ID: <1@x.test>\r\n"
        b"FROM: a@x.test\r\nto: b@y.test\r\n\r\nbody\r\n"
    )
    assert complete_message(message, sender=SENDER, recipients=[ALICE], now=NOW) == (message, ())


def test_missing_headers_go_first_and_the_message_follows_untouched() -> None:
    message = b"Subject: =?utf-8?q?caf=C3=A9?=\nX-Long: a\n b\n\n\xff binary-ish body\n"
    completed, added = complete_message(message, sender=SENDER, recipients=[ALICE], now=NOW)
    assert added == ("Date", "Message-ID", "From", "To")
    head, original = completed[: -len(message)], completed[-len(message) :]
    assert original == message
    lines = head.split(b"\n")
    assert lines[0] == b"Date: Fri, 17 May 2024 09:30:00 +0000"  # in the message's own LF
    assert lines[1].startswith(b"Message-ID: <") and lines[1].endswith(b"@remote.test>")
    assert lines[2:] == [b"From: sender@remote.test", b"To: alice@example.test", b""]


def test_a_message_without_a_header_section_gets_a_separator() -> None:
    completed, _ = complete_message(b"just text\r\n", sender=SENDER, recipients=[ALICE], now=NOW)
    assert completed.endswith(b"To: alice@example.test\r\n\r\njust text\r\n")


def test_headers_in_the_body_do_not_count() -> None:
    message = b"Subject: s\r\n\r\nFrom: in the body\r\nTo: also body\r\n"
    _, added = complete_message(message, sender=SENDER, recipients=[ALICE], now=NOW)
    assert added == ("Date", "Message-ID", "From", "To")


def test_many_recipients_are_folded() -> None:
    recipients = [Address(f"user{i}", "example.test") for i in range(8)]
    completed, _ = complete_message(DEFAULT_MESSAGE, sender=SENDER, recipients=recipients, now=NOW)
    to_field = completed[completed.index(b"To: ") : completed.index(b"Subject:")]
    assert to_field.startswith(b"To: user0@example.test,\r\n user1@example.test,\r\n")
    assert all(len(line) <= 78 for line in to_field.split(b"\r\n"))


def test_an_address_literal_sender_gets_a_neutral_message_id_domain() -> None:
    sender = Address("me", "[192.0.2.1]")
    completed, _ = complete_message(DEFAULT_MESSAGE, sender=sender, recipients=[ALICE], now=NOW)
    assert b"@mailwright.invalid>" in completed
    assert b"From: me@[192.0.2.1]\r\n" in completed
