"""compare(): codes side by side, their key differences, and when each applies."""

from __future__ import annotations

import json

import pytest

from mailwright.codes import Comparison, UnknownCodeError, compare, render_text, to_dict


def values_of(comparison: Comparison, aspect: str) -> tuple[str, ...]:
    for diff in comparison.aspects:
        if diff.aspect == aspect:
            return diff.values
    raise AssertionError(f"no aspect {aspect}")


def test_251_against_503_differs_in_class_meaning_retry_and_fix() -> None:
    comparison = compare(["251", "503"], "en")
    assert {d.aspect for d in comparison.differences} == {"class", "meaning", "retry", "action"}
    assert values_of(comparison, "class") == (
        "2xx Positive Completion",
        "5xx Permanent Negative Completion",
    )
    accepted, out_of_order = values_of(comparison, "meaning")
    assert "accepted" in accepted and "forward" in accepted
    assert "out of order" in out_of_order
    no_fix, follow = values_of(comparison, "action")
    assert no_fix.startswith("No fix needed")
    assert "EHLO, MAIL, RCPT, DATA" in follow and "RSET" in follow


def test_comparison_text_reads_items_then_differences_then_when() -> None:
    text = render_text(compare(["251", "503"], "en"))
    order = [
        "Comparing 251 and 503",
        "251  User not local; will forward to <forward-path>",
        "503  Bad sequence of commands",
        "Key differences",
        "2xx Positive Completion",
        "5xx Permanent Negative Completion",
        "When each one applies",
    ]
    position = 0
    for marker in order:
        position = text.index(marker, position)  # each one after the previous

    assert "    251: No fix needed" in text
    assert "    503: Follow EHLO, MAIL, RCPT, DATA; send RSET to start over." in text


def test_comparison_in_chinese() -> None:
    text = render_text(compare(["251", "503"], "zh"))
    assert text.startswith("对比 251 与 503")
    assert "主要区别" in text and "各自的适用场合" in text
    assert "2xx 肯定完成（成功）" in text and "5xx 永久性否定（永久失败）" in text
    assert "无需修复" in text


def test_shared_aspects_are_listed_in_common() -> None:
    comparison = compare(["550 5.1.1", "550 5.7.1"], "en")
    assert {d.aspect for d in comparison.shared} >= {"class", "retry"}
    subjects = values_of(comparison, "subject")
    assert subjects == ("X.1 Addressing Status", "X.7 Security or Policy Status")
    text = render_text(comparison)
    assert "In common" in text and "  Class: 5xx Permanent Negative Completion" in text


def test_same_enhanced_code_in_two_classes_shows_each_class_note() -> None:
    comparison = compare(["4.7.1", "5.7.1"], "en")
    assert [d.aspect for d in comparison.differences] == ["class", "retry", "action"]
    text = render_text(comparison)
    assert "As 4.7.1: A temporary policy block" in text
    assert "As 5.7.1: A standing refusal" in text


def test_identical_codes_have_no_differences() -> None:
    comparison = compare(["503", "503"], "en")
    assert comparison.differences == ()
    assert "None: they mean the same thing." in render_text(comparison)


def test_three_codes_are_compared_in_order() -> None:
    comparison = compare(["250", "450", "550"], "en")
    assert len(values_of(comparison, "class")) == 3
    assert "Comparing 250 and 450 and 550" in render_text(comparison)


def test_comparison_needs_two_codes() -> None:
    with pytest.raises(ValueError, match="at least two"):
        compare(["503"], "en")


def test_one_unknown_code_fails_the_comparison() -> None:
    with pytest.raises(UnknownCodeError):
        compare(["503", "299"], "en")


def test_comparison_dict_is_json_and_keeps_the_order() -> None:
    data = json.loads(json.dumps(to_dict(compare(["251", "503"], "zh")), ensure_ascii=False))
    assert data["lang"] == "zh"
    assert data["codes"] == ["251", "503"]
    assert [item["class"]["key"] for item in data["items"]] == ["2xx", "5xx"]
    class_diff = next(d for d in data["differences"] if d["aspect"] == "class")
    assert class_diff["title"] == "类别"
    assert [v["code"] for v in class_diff["values"]] == ["251", "503"]
    assert [w["code"] for w in data["when"]] == ["251", "503"]
