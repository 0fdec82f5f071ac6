"""Explaining reply codes: one code, a whole reply line, or several side by side.

``lookup`` is strict: what it cannot explain is an error the user should see.
``one_line`` is lenient: it is called for every non-2xx reply that ``send`` and
``probe`` print, and a peer is free to invent codes, so it falls back to what
the class digit alone says instead of raising.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from mailwright.codes.errors import MalformedCodeError, UnknownCodeError
from mailwright.codes.language import LANGUAGES, check_lang
from mailwright.codes.reference import (
    BasicEntry,
    ClassInfo,
    EnhancedEntry,
    Reference,
    SubjectInfo,
    Texts,
    class_key_of,
    default_reference,
)
from mailwright.protocol.reply import Reply

_ENHANCED_QUERY: Final = re.compile(r"(\d)\.(\d{1,3})\.(\d{1,3})(?:\s+(.*))?", re.DOTALL)
_REPLY_LINE: Final = re.compile(r"(\d{3})(?:[ -].*)?", re.DOTALL)
# An enhanced code at the start of reply text that Reply did not take because
# its class digit disagrees with the reply code ("250 5.1.1 ...").
_STRAY_ENHANCED: Final = re.compile(r"(\d)\.\d{1,3}\.\d{1,3}(?:\s|$)")

ASPECTS: Final[tuple[str, ...]] = ("class", "subject", "meaning", "retry", "action")


@dataclass(frozen=True, slots=True)
class Explanation:
    """Everything the reference knows about one code or reply line.

    ``basic`` and ``enhanced`` are the matching entries, either of which may be
    absent: a bare ``5.5.1`` has no basic code, and a reply line may carry a
    vendor's enhanced code that no registry lists.  Language is chosen when
    reading, so one Explanation serves every renderer.
    """

    query: str
    class_key: str
    code: int | None
    enhanced_code: str | None
    reply_text: str
    basic: BasicEntry | None
    enhanced: EnhancedEntry | None
    class_infos: Mapping[str, ClassInfo]
    subject_infos: Mapping[str, SubjectInfo] | None

    @property
    def label(self) -> str:
        """The codes as a person writes them: ``503 5.5.1``, ``503`` or ``5.5.1``."""
        parts = [str(self.code)] if self.code is not None else []
        if self.enhanced_code is not None:
            parts.append(self.enhanced_code)
        return " ".join(parts)

    @property
    def known(self) -> bool:
        return self.basic is not None or self.enhanced is not None

    def class_info(self, lang: str) -> ClassInfo:
        return self.class_infos[lang]

    def subject_info(self, lang: str) -> SubjectInfo | None:
        return None if self.subject_infos is None else self.subject_infos[lang]

    def class_note(self, lang: str) -> str | None:
        """The enhanced entry's note for this class (how 4.7.1 differs from 5.7.1), if any.

        The notes in the data file start with the code they are about
        ("4.7.1: ..."); callers always show the code next to the note, so the
        prefix is dropped here.
        """
        if self.enhanced is None or self.enhanced_code is None:
            return None
        note = self.enhanced.texts[lang].by_class.get(self.class_key)
        if note is None:
            return None
        for prefix in (f"{self.enhanced_code}: ", f"{self.enhanced_code}："):
            if note.startswith(prefix):
                rest = note[len(prefix) :]
                return rest[:1].upper() + rest[1:]
        return note

    def primary(self, lang: str) -> Texts | None:
        """The most specific texts: the enhanced entry, unless it is a generic X.s.0.

        ``X.s.0`` codes only say "something about addresses/security/...", so
        the basic code (530, 454, 421 ...) is the better explanation for them.
        """
        if self.enhanced is not None and self._enhanced_is_primary():
            return self.enhanced.texts[lang]
        if self.basic is not None:
            return self.basic.texts[lang]
        return None

    def summary(self, lang: str) -> str:
        texts = self.primary(lang)
        return texts.summary if texts is not None else self.class_info(lang).meaning

    def advice(self, lang: str) -> str:
        """What to do, in one sentence.

        The entries' ``action`` is written for the class a code is normally
        sent with; where the actual class shifts the meaning (4.7.1 is a
        temporary block, 5.7.1 a standing refusal) or the code is a generic
        X.s.0, the class note says it better.  A specific code in its usual
        permanent class keeps the entry's own action, the more concrete one.
        """
        note = self.class_note(lang)
        if note is not None and self.enhanced is not None and self._enhanced_is_primary():
            unusual = self.class_key not in self.enhanced.classes
            if self.class_key != "5xx" or unusual or self.enhanced.detail == 0:
                return note
        texts = self.primary(lang)
        return texts.action if texts is not None else self.class_info(lang).retry

    def _enhanced_is_primary(self) -> bool:
        return self.enhanced is not None and (self.enhanced.detail != 0 or self.basic is None)

    def when(self, lang: str) -> str:
        texts = self.primary(lang)
        return texts.when if texts is not None else self.class_info(lang).meaning


@dataclass(frozen=True, slots=True)
class Difference:
    """One aspect (class, meaning, retry ...) of every compared item, in order."""

    aspect: str
    values: tuple[str, ...]

    @property
    def same(self) -> bool:
        return len(set(self.values)) == 1


@dataclass(frozen=True, slots=True)
class Comparison:
    """Several codes side by side: each item, then how they differ, then when each applies."""

    lang: str
    items: tuple[Explanation, ...]
    aspects: tuple[Difference, ...]

    @property
    def differences(self) -> tuple[Difference, ...]:
        return tuple(a for a in self.aspects if not a.same)

    @property
    def shared(self) -> tuple[Difference, ...]:
        return tuple(a for a in self.aspects if a.same)


def lookup(code_text: str, *, reference: Reference | None = None) -> Explanation:
    """Explain ``503``, ``5.5.1`` or a reply line such as ``503 5.5.1 Bad sequence of commands``.

    A reply line is parsed with ``Reply`` (several lines joined by newlines
    are accepted too).  Its enhanced code must share the reply code's class
    digit (RFC 3463 2).  Raises MalformedCodeError for input of the wrong
    shape and UnknownCodeError when nothing in it is in the reference; a line
    whose basic code is known but whose enhanced code is a vendor's own is
    still explained, as far as the reference goes.
    """
    ref = reference if reference is not None else default_reference()
    text = code_text.strip()
    if not text:
        raise MalformedCodeError("empty", code_text)
    if match := _ENHANCED_QUERY.fullmatch(text):
        return _lookup_enhanced(text, match, ref)
    return _lookup_reply(text, ref)


def compare(
    codes: Sequence[str], lang: str = "en", *, reference: Reference | None = None
) -> Comparison:
    """Compare two or more codes the way a person would, in ``lang``.

    Every item is looked up strictly first, so one bad code fails the whole
    comparison with that code's error.
    """
    check_lang(lang)
    if len(codes) < 2:
        raise ValueError("compare needs at least two codes")
    ref = reference if reference is not None else default_reference()
    items = tuple(lookup(code, reference=ref) for code in codes)
    aspects = []
    for aspect in ASPECTS:
        values = _aspect_values(aspect, items, lang)
        if values is not None:
            aspects.append(Difference(aspect, values))
    return Comparison(lang=lang, items=items, aspects=tuple(aspects))


def one_line(reply: Reply, lang: str = "en", *, reference: Reference | None = None) -> str:
    """A one-line human explanation of any reply, for ``send`` and ``probe`` output.

    Uses the enhanced code when the reference has it, else the basic code,
    else only the class digit; it never raises for an unknown code.
    """
    check_lang(lang)
    ref = reference if reference is not None else default_reference()
    explanation = _explain(reply.code, reply.enhanced, reply.text, str(reply), ref, strict=False)
    info = explanation.class_info(lang)
    head = f"{explanation.label} [{info.key} {info.name}]"
    if lang == "zh":
        if not explanation.known:
            return f"{head} 参考中没有此代码；按类别理解：{info.meaning}处理：{info.retry}"
        return f"{head} {explanation.summary(lang)}处理：{explanation.advice(lang)}"
    if not explanation.known:
        return f"{head} Not in the reference; by its class: {info.meaning} What to do: {info.retry}"
    return f"{head} {explanation.summary(lang)} What to do: {explanation.advice(lang)}"


def _lookup_enhanced(text: str, match: re.Match[str], ref: Reference) -> Explanation:
    digit = match.group(1)
    enhanced = f"{digit}.{int(match.group(2))}.{int(match.group(3))}"
    if digit not in "245":
        raise MalformedCodeError("enhanced_class", text, enhanced=enhanced)
    return _explain(None, enhanced, match.group(4) or "", text, ref, strict=True)


def _lookup_reply(text: str, ref: Reference) -> Explanation:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not all(_REPLY_LINE.fullmatch(line) for line in lines):
        raise MalformedCodeError("syntax", text)
    if not all(200 <= int(line[:3]) <= 599 for line in lines):
        raise MalformedCodeError("range", text)
    try:
        reply = Reply.parse(lines[0]) if len(lines) == 1 else Reply.parse_lines(lines)
    except ValueError as exc:
        raise MalformedCodeError("syntax", text) from exc
    if reply.enhanced is None and (stray := _STRAY_ENHANCED.match(reply.lines[0])):
        enhanced = stray.group(0).strip()
        reason = "enhanced_class" if stray.group(1) not in "245" else "class_mismatch"
        raise MalformedCodeError(reason, text, code=reply.code, enhanced=enhanced)
    return _explain(reply.code, reply.enhanced, reply.text, text, ref, strict=True)


def _explain(
    code: int | None,
    enhanced_code: str | None,
    reply_text: str,
    query: str,
    ref: Reference,
    *,
    strict: bool,
) -> Explanation:
    basic = ref.basic(code) if code is not None else None
    enhanced = None
    subject_infos = None
    class_digit = code // 100 if code is not None else None
    if enhanced_code is not None:
        digit, subject, detail = (int(p) for p in enhanced_code.split("."))
        class_digit = digit
        enhanced = ref.enhanced(subject, detail)
        found = {lang: ref.subject_info(subject, lang) for lang in LANGUAGES}
        if all(info is not None for info in found.values()):
            subject_infos = MappingProxyType({k: v for k, v in found.items() if v is not None})
    if class_digit is None:
        raise ValueError("an explanation needs a reply code or an enhanced code")
    if strict and basic is None and enhanced is None:
        if code is None:
            raise UnknownCodeError("unknown_enhanced", query, enhanced=enhanced_code)
        reason = "unknown_basic" if enhanced_code is None else "unknown_both"
        raise UnknownCodeError(reason, query, code=code, enhanced=enhanced_code)
    class_key = class_key_of(code) if code is not None else f"{class_digit}xx"
    return Explanation(
        query=query,
        class_key=class_key,
        code=code,
        enhanced_code=enhanced_code,
        reply_text=reply_text,
        basic=basic,
        enhanced=enhanced,
        class_infos=MappingProxyType({lang: ref.class_info(class_key, lang) for lang in LANGUAGES}),
        subject_infos=subject_infos,
    )


def _aspect_values(
    aspect: str, items: tuple[Explanation, ...], lang: str
) -> tuple[str, ...] | None:
    """One value per item for ``aspect``, or None when the aspect does not apply to all."""
    if aspect == "class":
        return tuple(f"{i.class_key} {i.class_info(lang).name}" for i in items)
    if aspect == "subject":
        subjects = [i.subject_info(lang) for i in items]
        if any(s is None for s in subjects):
            return None
        return tuple(f"{s.key} {s.name}" for s in subjects if s is not None)
    if aspect == "meaning":
        return tuple(i.summary(lang) for i in items)
    if aspect == "retry":
        return tuple(i.class_info(lang).retry for i in items)
    if aspect == "action":
        return tuple(i.advice(lang) for i in items)
    raise ValueError(f"unknown aspect {aspect!r}")
