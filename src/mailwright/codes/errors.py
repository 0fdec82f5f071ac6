"""Errors of the reply-code reference.

A code the reference cannot explain is the user's input problem, not a bug, so
the errors carry a machine-readable ``reason`` and can say what went wrong in
either language: the CLI prints exactly one line in the user's language and
exits with 2.
"""

from __future__ import annotations

from typing import Final

from mailwright.errors import MailwrightError

_MESSAGES: Final[dict[str, dict[str, str]]] = {
    "en": {
        "empty": "no reply code given",
        "syntax": (
            "not a reply code or reply line: {text!r} "
            "(expected e.g. 503, 5.5.1 or '503 5.5.1 Bad sequence of commands')"
        ),
        "range": "not an SMTP reply code: {text!r} (reply codes run from 200 to 599)",
        "enhanced_class": (
            "enhanced status codes start with 2, 4 or 5: {enhanced!r} (e.g. 5.7.1 or 4.7.1)"
        ),
        "class_mismatch": (
            "enhanced code {enhanced} does not match the class of reply code {code} "
            "(both must start with the same digit)"
        ),
        "unknown_basic": "unknown reply code {code}",
        "unknown_enhanced": "unknown enhanced status code {enhanced}",
        "unknown_both": "unknown reply code {code} and enhanced status code {enhanced}",
    },
    "zh": {
        "empty": "没有给出回复码",
        "syntax": (
            "不是回复码也不是回复行：{text!r}"
            "（应为 503、5.5.1 或 '503 5.5.1 Bad sequence of commands' 这样的形式）"
        ),
        "range": "不是 SMTP 回复码：{text!r}（回复码的范围是 200 到 599）",
        "enhanced_class": "增强状态码必须以 2、4 或 5 开头：{enhanced!r}（例如 5.7.1 或 4.7.1）",
        "class_mismatch": (
            "增强状态码 {enhanced} 与回复码 {code} 的类别不一致（两者必须以同一数字开头）"
        ),
        "unknown_basic": "未知的回复码 {code}",
        "unknown_enhanced": "未知的增强状态码 {enhanced}",
        "unknown_both": "未知的回复码 {code} 和增强状态码 {enhanced}",
    },
}


class ReferenceDataError(MailwrightError):
    """The shipped reference file is missing a field or has a wrong shape.

    Raised while loading, so a broken data file fails loudly once instead of
    producing half-empty explanations later.
    """


class CodeError(MailwrightError):
    """A reply code the reference cannot explain; ``reason`` says why.

    ``text`` is what the user typed; ``code`` and ``enhanced`` are the parts
    that were understood, when any were.
    """

    def __init__(
        self,
        reason: str,
        text: str,
        *,
        code: int | None = None,
        enhanced: str | None = None,
    ) -> None:
        if reason not in _MESSAGES["en"]:
            raise ValueError(f"unknown CodeError reason: {reason}")
        self.reason = reason
        self.text = text
        self.code = code
        self.enhanced = enhanced
        super().__init__(self.message("en"))

    def message(self, lang: str = "en") -> str:
        """The one-line explanation in ``lang`` (English if unknown); never contains a newline."""
        template = _MESSAGES.get(lang, _MESSAGES["en"])[self.reason]
        return template.format(text=self.text, code=self.code, enhanced=self.enhanced)


class MalformedCodeError(CodeError):
    """The input is not shaped like a reply code, an enhanced code or a reply line."""


class UnknownCodeError(CodeError):
    """The input is well formed, but the reference has no entry for it."""
