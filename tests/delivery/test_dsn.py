"""What a bounce may carry: pure functions of dsn.py, fed bytes (core)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailwright.delivery.dsn import (
    MAX_ORIGINAL_HEADERS,
    Action,
    ReportedRecipient,
    ReturnedContent,
    build_report,
    headers_to_return,
)
from mailwright.errors import ConfigError
from mailwright.model import Address
from mailwright.protocol.reply import Reply
from tests.helpers import make_config


def headers_of(message: bytes, limit: int | None = None) -> bytes:
    return headers_to_return(message) if limit is None else headers_to_return(message, limit)


def test_the_header_section_ends_at_the_empty_line() -> None:
    message = b"Subject: s\r\nX-A: 1\r\n\r\nBody: looks like a header\r\n"
    assert headers_of(message) == b"Subject: s\r\nX-A: 1\r\n"


def test_a_folded_field_is_kept_or_dropped_whole() -> None:
    folded = b"X-Long: one\r\n two\r\n\tthree\r\n"
    message = b"Subject: s\r\n" + folded + b"X-Next: n\r\n\r\nbody\r\n"
    whole = len(b"Subject: s\r\n" + folded)
    for limit in range(len(b"Subject: s\r\n"), whole):  # any cut inside X-Long drops all of it
        assert headers_of(message, limit) == b"Subject: s\r\n"
    assert headers_of(message, whole) == b"Subject: s\r\n" + folded


def test_the_cut_is_within_the_limit_and_on_a_field_boundary() -> None:
    fields = [f"X-F{n}: {'v' * 90}\r\n\t{'w' * 90}\r\n".encode() for n in range(400)]
    message = b"".join(fields) + b"\r\nbody\r\n"
    returned = headers_of(message)
    assert MAX_ORIGINAL_HEADERS - len(fields[0]) < len(returned) <= MAX_ORIGINAL_HEADERS
    assert returned == b"".join(fields[: len(returned) // len(fields[0])])


def test_a_body_without_the_empty_line_is_never_returned() -> None:
    message = b"Subject: s\r\nX-A: 1\r\nBODY-MARKER and more text\r\nline two\r\n"
    assert headers_of(message) == b"Subject: s\r\nX-A: 1\r\n"


def test_a_message_of_headers_only_is_returned_whole() -> None:
    assert headers_of(b"Subject: s\r\nX-A: 1\r\n") == b"Subject: s\r\nX-A: 1\r\n"


def test_one_field_longer_than_the_limit_returns_nothing() -> None:
    message = b"X-Huge: " + b"h" * (2 * MAX_ORIGINAL_HEADERS) + b"\r\n\r\nbody\r\n"
    assert headers_of(message) == b""


def test_a_report_carries_no_control_characters_of_a_stored_reply() -> None:
    """Replies stored before they were cleaned are cleaned again on the way out."""
    text = section_report(
        original=Address("bob", "elsewhere.test"),
        reply=Reply.parse("550 5.1.1 gone\x1b[2J\u2028Forged-Field: yes\x00"),
        remote_mta="mx.elsewhere.test[127.0.0.1]:25\x85",
    )
    assert "Diagnostic-Code: smtp; 550 5.1.1 gone[2J Forged-Field: yes\r\n" in text
    assert "Remote-MTA: dns; mx.elsewhere.test[127.0.0.1]:25 \r\n" in text
    assert not any(c in text for c in "\x1b\u2028\x00\x85")


def test_a_route_may_name_an_address_literal_in_any_spelling(tmp_path: Path) -> None:
    config = make_config(
        tmp_path, '[routes]\n"[IPv6:0:0::1]" = "127.0.0.1:2525"\n"[127.0.0.1]" = "h:25"\n'
    )
    assert dict(config.routes) == {"[ipv6:::1]": "127.0.0.1:2525", "[127.0.0.1]": "h:25"}


@pytest.mark.parametrize("key", ["[300.1.1.1]", "[IPv6:nonsense]", "[tag:general]"])
def test_a_route_for_a_malformed_address_literal_is_refused(key: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="address literal"):
        make_config(tmp_path, f'[routes]\n"{key}" = "127.0.0.1:2525"\n')


def report_of(
    *,
    returned: bytes = b"Subject: s\r\n",
    whole: bool = False,
    envid: str | None = None,
    **fields: object,
) -> bytes:
    """A report of one section built from ``fields`` (a failure by default)."""
    recipient: dict[str, object] = {
        "action": Action.FAILED,
        "address": Address("bob", "elsewhere.test"),
        "original": Address("bob", "example.test"),
        "reply": Reply.parse("550 5.1.1 gone"),
        **fields,
    }
    return build_report(
        reporting_mta="mx.example.test",
        sender=Address("alice", "example.test"),
        queue_id="q1",
        arrival=0.0,
        recipients=[ReportedRecipient(**recipient)],  # type: ignore[arg-type]
        returned=ReturnedContent(returned, whole=whole),
        envid=envid,
    )


def section_report(**fields: object) -> str:
    return report_of(**fields).decode("utf-8")  # type: ignore[arg-type]


def test_an_orcpt_or_envid_with_a_line_break_cannot_forge_a_field() -> None:
    """ORCPT and ENVID arrive as xtext, which may stand for CR LF (``+0D+0A``): they go
    back into the report as xtext (RFC 3464 2.2.1), never as a line of their own."""
    text = section_report(
        orcpt="rfc822;x\r\nForged-Field: yes@b.test", envid="id\r\nForged-Envelope: 1 +="
    )
    assert "Original-Recipient: rfc822; x+0D+0AForged-Field:+20yes@b.test\r\n" in text
    assert "Original-Envelope-Id: id+0D+0AForged-Envelope:+201+20+2B+3D\r\n" in text
    assert "\r\nForged" not in text


def test_a_utf8_address_is_of_type_utf8_in_a_global_delivery_status() -> None:
    """RFC 6533 3 and 6: a non-ASCII address is never called rfc822, and the report
    that names one is a message/global-delivery-status."""
    text = section_report(address=Address("jörg", "elsewhere.test"))
    assert "Final-Recipient: utf-8; jörg@elsewhere.test\r\n" in text
    assert "Original-Recipient: rfc822; bob@example.test\r\n" in text
    assert "report-type=global-delivery-status;" in text
    assert "Content-Type: message/global-delivery-status\r\n" in text
    ascii_only = section_report()
    assert "report-type=delivery-status;" in ascii_only
    assert "Content-Type: message/delivery-status\r\n" in ascii_only


def test_a_printable_orcpt_is_given_back_as_the_sender_wrote_it() -> None:
    text = section_report(orcpt="rfc822;Bob+Tag@Original.test")
    assert "Original-Recipient: rfc822; Bob+Tag@Original.test\r\n" in text


@pytest.mark.parametrize(
    ("action", "reply", "expired", "status"),
    [
        (Action.FAILED, "550 5.1.1 gone", False, "5.1.1"),
        (Action.FAILED, "554 no enhanced code", False, "5.0.0"),
        (Action.FAILED, "550 4.1.1 a code of the wrong class", False, "5.0.0"),
        (Action.FAILED, "451 4.4.1 still failing", True, "4.4.7"),
        (Action.DELAYED, "451 4.3.2 later", False, "4.3.2"),
        (Action.DELAYED, "421 closing", False, "4.0.0"),
        (Action.DELIVERED, "250 2.0.0 delivered to Maildir", False, "2.0.0"),
        (Action.RELAYED, "250 2.6.0 queued", False, "2.6.0"),
        (Action.EXPANDED, None, False, "2.0.0"),
    ],
)
def test_the_status_is_the_replys_enhanced_code_when_it_fits_the_action(
    action: Action, reply: str | None, expired: bool, status: str
) -> None:
    """RFC 3464 2.3.4 and RFC 3463: the class of Status agrees with the Action."""
    recipient = ReportedRecipient(
        action=action,
        address=Address("bob", "elsewhere.test"),
        original=Address("bob", "elsewhere.test"),
        reply=Reply.parse(reply) if reply else None,
        expired=expired,
    )
    assert recipient.status == status


def test_a_delayed_section_says_until_when_it_is_tried() -> None:
    text = section_report(
        action=Action.DELAYED, reply=Reply.parse("451 4.3.2 later"), will_retry_until=86400.0
    )
    assert "Action: delayed\r\nStatus: 4.3.2\r\n" in text
    assert "Will-Retry-Until: Fri, 02 Jan 1970 00:00:00 +0000\r\n" in text
    assert "Subject: Delayed Mail (still being retried)\r\n" in text


def test_a_whole_original_with_8bit_text_is_marked_8bit() -> None:
    """RFC 2046 5.2.1: message/rfc822 is 7bit, 8bit or binary; 8-bit text must say so."""
    report = report_of(returned="Subject: s\r\n\r\nGrüße\r\n".encode(), whole=True)
    assert (
        b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        b"Subject: s\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n\r\n--" in report
    )
