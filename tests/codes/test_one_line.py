"""one_line(): the explanation send and probe print under every non-2xx reply."""

from __future__ import annotations

import pytest

from mailwright.codes import default_reference, one_line
from mailwright.protocol.reply import Reply


def test_uses_the_enhanced_code_when_present() -> None:
    line = one_line(Reply(550, "5.1.1", "User unknown"))
    assert line.startswith("550 5.1.1 [5xx Permanent Negative Completion]")
    assert "mailbox does not exist" in line
    assert "Correct the recipient address" in line


def test_uses_the_basic_code_without_an_enhanced_code() -> None:
    line = one_line(Reply(421, None, "Too busy"))
    assert line.startswith("421 [4xx Transient Negative Completion]")
    assert "closing the connection" in line


def test_falls_back_to_the_basic_code_for_an_unregistered_enhanced_code() -> None:
    line = one_line(Reply(451, "4.9.9", "Odd"))
    assert "internal error" in line


def test_never_raises_for_unknown_codes_and_explains_the_class() -> None:
    line = one_line(Reply(599, None, "Who knows"))
    assert line.startswith("599 [5xx Permanent Negative Completion] Not in the reference")
    assert "Do not retry unchanged" in line


def test_transient_use_of_a_policy_code_says_to_retry() -> None:
    line = one_line(Reply(450, "4.7.1", "Greylisted, try again later"))
    assert "retry later" in line


def test_chinese_one_line() -> None:
    line = one_line(Reply(503, "5.5.1", "Bad sequence of commands"), "zh")
    assert line.startswith("503 5.5.1 [5xx 永久性否定（永久失败）]")
    assert "处理：" in line


def test_unknown_language_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="unsupported language"):
        one_line(Reply(250, None, "Ok"), "fr")


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_every_reference_code_gives_exactly_one_line(lang: str) -> None:
    reference = default_reference()
    replies = [Reply(code, None, "x") for code in reference.basic_codes]
    for key in reference.enhanced_keys:
        entry = reference.enhanced(*(int(p) for p in key.split(".")[1:]))
        assert entry is not None
        for class_key in ("2xx", "4xx", "5xx"):
            code = {"2xx": 250, "4xx": 450, "5xx": 550}[class_key]
            replies.append(Reply(code, entry.with_class(int(class_key[0])), "x"))
    for reply in replies:
        line = one_line(reply, lang)
        assert line and "\n" not in line, reply
