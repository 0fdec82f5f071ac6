"""lookup(): single codes, enhanced codes, whole reply lines, and what it refuses."""

from __future__ import annotations

import pytest

from mailwright.codes import (
    CodeError,
    MalformedCodeError,
    UnknownCodeError,
    lookup,
    render_text,
)
from mailwright.errors import MailwrightError


def test_basic_code_resolves_to_its_entry() -> None:
    exp = lookup("503")
    assert exp.code == 503
    assert exp.class_key == "5xx"
    assert exp.basic is not None and exp.basic.text == "Bad sequence of commands"
    assert exp.enhanced is None
    assert exp.label == "503"
    assert "out of order" in exp.summary("en")


def test_enhanced_code_resolves_without_a_basic_code() -> None:
    exp = lookup("5.5.1")
    assert exp.code is None
    assert exp.enhanced is not None and exp.enhanced.key == "X.5.1"
    assert exp.class_key == "5xx"
    subject = exp.subject_info("en")
    assert subject is not None and subject.name == "Mail Delivery Protocol Status"


def test_transient_and_permanent_share_one_entry_with_different_notes() -> None:
    transient, permanent = lookup("4.7.0"), lookup("5.7.0")
    assert transient.enhanced is permanent.enhanced
    assert transient.class_key == "4xx" and permanent.class_key == "5xx"
    assert "temporary" in (transient.class_note("en") or "")
    assert "authentication required" in (permanent.class_note("en") or "")


def test_reply_line_is_parsed_into_both_codes_and_its_text() -> None:
    exp = lookup("503 5.5.1 Bad sequence of commands")
    assert exp.code == 503
    assert exp.enhanced_code == "5.5.1"
    assert exp.enhanced is not None and exp.enhanced.key == "X.5.1"
    assert exp.reply_text == "Bad sequence of commands"
    assert exp.label == "503 5.5.1"


def test_multiline_reply_is_parsed_as_one_reply() -> None:
    exp = lookup("550-5.7.1 Relaying denied\n550 5.7.1 Authenticate first")
    assert (exp.code, exp.enhanced_code) == (550, "5.7.1")
    assert exp.reply_text == "Relaying denied Authenticate first"


def test_surrounding_whitespace_is_ignored() -> None:
    assert lookup("  250 \n").code == 250


def test_enhanced_code_must_share_the_reply_class() -> None:
    with pytest.raises(MalformedCodeError) as info:
        lookup("250 5.1.1 Ok")
    assert info.value.reason == "class_mismatch"
    assert "5.1.1" in str(info.value) and "250" in str(info.value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("hello", "syntax"),
        ("50", "syntax"),
        ("5033", "syntax"),
        ("5.5", "syntax"),
        ("199", "range"),
        ("600 Too high", "range"),
        ("3.1.1", "enhanced_class"),
        ("354 2.0.0 Go ahead", "class_mismatch"),
    ],
)
def test_malformed_input_is_refused_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(MalformedCodeError) as info:
        lookup(text)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("text", "reason"),
    [("299", "unknown_basic"), ("5.9.9", "unknown_enhanced"), ("599 5.9.9 Odd", "unknown_both")],
)
def test_unknown_codes_are_refused(text: str, reason: str) -> None:
    with pytest.raises(UnknownCodeError) as info:
        lookup(text)
    assert info.value.reason == reason


def test_code_errors_belong_to_the_package_hierarchy() -> None:
    assert issubclass(CodeError, MailwrightError)
    assert issubclass(UnknownCodeError, CodeError)
    assert issubclass(MalformedCodeError, CodeError)


def test_error_messages_are_one_line_in_both_languages_even_for_odd_input() -> None:
    with pytest.raises(CodeError) as info:
        lookup("5.9.9\nmore")
    for lang in ("en", "zh"):
        assert "\n" not in info.value.message(lang)
    with pytest.raises(UnknownCodeError) as unknown:
        lookup("299")
    assert unknown.value.message("zh") == "未知的回复码 299"


def test_reply_line_with_a_vendor_enhanced_code_is_explained_by_its_basic_code() -> None:
    exp = lookup("550 5.7.606 Access denied, banned sending IP")
    assert exp.basic is not None and exp.basic.code == 550
    assert exp.enhanced is None and exp.enhanced_code == "5.7.606"
    assert exp.subject_info("en") is not None
    text = render_text(exp, "en")
    assert "5.7.606 is not in the IANA registry" in text
    assert "X.7 Security or Policy Status" in text


def test_reply_line_with_an_unlisted_basic_code_is_explained_by_its_enhanced_code() -> None:
    exp = lookup("559 5.1.1 No such user")
    assert exp.basic is None
    assert exp.enhanced is not None and exp.enhanced.key == "X.1.1"


def test_generic_enhanced_code_defers_to_the_basic_code() -> None:
    exp = lookup("530 5.7.0 Authentication required")
    assert exp.basic is not None
    assert exp.summary("en") == exp.basic.texts["en"].summary
    assert "AUTH" in exp.advice("en")


def test_transient_class_changes_the_advice() -> None:
    assert "retry later" in lookup("450 4.7.1 Greylisted").advice("en")
    assert "Authenticate" in lookup("554 5.7.1 Relay access denied").advice("en")


def test_single_code_text_has_meaning_when_and_fix() -> None:
    text = render_text(lookup("503 5.5.1 Bad sequence of commands"), "en")
    assert text.splitlines()[0] == "Reply: 503 5.5.1 Bad sequence of commands"
    for label in (
        "Class: 5xx Permanent Negative Completion",
        "Defined in: RFC 5321",
        "Meaning:",
        "When it occurs:",
        "How to fix:",
        "5.5.1  Invalid command",
        "RFC 3463 3.6",
    ):
        assert label in text


def test_single_code_text_in_chinese() -> None:
    text = render_text(lookup("503"), "zh")
    assert "类别：5xx 永久性否定" in text
    assert "含义：" in text and "何时出现：" in text and "如何解决：" in text
    assert "RSET" in text


def test_bare_enhanced_code_uses_the_rfc_3463_class_name() -> None:
    assert render_text(lookup("4.2.2"), "en").startswith(
        "Class: 4.x.x Persistent Transient Failure"
    )
