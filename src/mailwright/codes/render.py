"""Turning explanations into text for people and dicts for programs.

Text output is plain lines of ``label: value``, never wrapped, so that it reads
well in a terminal and can still be searched with grep.  The dict form is
JSON-serialisable and carries every field, for scripts and for ``--json``.
"""

from __future__ import annotations

from typing import Any, Final

from mailwright.codes.explain import Comparison, Difference, Explanation
from mailwright.codes.language import check_lang

_LABELS: Final[dict[str, dict[str, str]]] = {
    "en": {
        "colon": ": ",
        "dash": " — ",
        "reply": "Reply",
        "class": "Class",
        "subject": "Subject",
        "rfc": "Defined in",
        "meaning": "Meaning",
        "when": "When it occurs",
        "fix": "How to fix",
        "as_class": "As {code}",
        "unregistered": "{code} is not in the IANA registry (probably vendor-specific)",
        "comparing": "Comparing {codes}",
        "differences": "Key differences",
        "no_differences": "None: they mean the same thing.",
        "shared": "In common",
        "applies": "When each one applies",
        "aspect.class": "Class",
        "aspect.subject": "Subject",
        "aspect.meaning": "Meaning",
        "aspect.retry": "Retry",
        "aspect.action": "What to do",
        "and": " and ",
    },
    "zh": {
        "colon": "：",
        "dash": "——",
        "reply": "回复",
        "class": "类别",
        "subject": "主题",
        "rfc": "定义于",
        "meaning": "含义",
        "when": "何时出现",
        "fix": "如何解决",
        "as_class": "作为 {code}",
        "unregistered": "{code} 不在 IANA 注册表中（可能是厂商自定义代码）",
        "comparing": "对比 {codes}",
        "differences": "主要区别",
        "no_differences": "无：两者含义相同。",
        "shared": "共同点",
        "applies": "各自的适用场合",
        "aspect.class": "类别",
        "aspect.subject": "主题",
        "aspect.meaning": "含义",
        "aspect.retry": "是否重试",
        "aspect.action": "怎么办",
        "and": " 与 ",
    },
}


def aspect_title(aspect: str, lang: str) -> str:
    """The heading of a comparison aspect (``class``, ``retry`` ...) in ``lang``."""
    return _LABELS[lang][f"aspect.{aspect}"]


def render_text(subject: Explanation | Comparison, lang: str = "en") -> str:
    """Plain text for a terminal; a Comparison is rendered in its own language."""
    if isinstance(subject, Comparison):
        return _comparison_text(subject)
    check_lang(lang)
    return _explanation_text(subject, lang)


def to_dict(subject: Explanation | Comparison, lang: str = "en") -> dict[str, Any]:
    """A JSON-serialisable dict with every field, in ``lang`` (a Comparison's own language)."""
    if isinstance(subject, Comparison):
        return _comparison_dict(subject)
    check_lang(lang)
    return _explanation_dict(subject, lang)


def _line(lang: str, label: str, value: str, indent: str = "  ") -> str:
    return f"{indent}{_LABELS[lang][label]}{_LABELS[lang]['colon']}{value}"


def _explanation_text(exp: Explanation, lang: str) -> str:
    labels = _LABELS[lang]
    colon = labels["colon"]
    info = exp.class_info(lang)
    out = []
    if exp.reply_text:
        out.append(f"{labels['reply']}{colon}{exp.label} {exp.reply_text}")
    if exp.code is None and exp.enhanced_code is not None and info.enhanced_name is not None:
        class_name = f"{exp.enhanced_code[0]}.x.x {info.enhanced_name}"
    else:
        class_name = f"{info.key} {info.name}"
    out.append(f"{labels['class']}{colon}{class_name}{labels['dash']}{info.meaning}")
    if exp.basic is not None:
        texts = exp.basic.texts[lang]
        out += [
            "",
            f"{exp.basic.code}  {exp.basic.text}",
            _line(lang, "rfc", exp.basic.rfc),
            _line(lang, "meaning", texts.description),
            _line(lang, "when", texts.when),
            _line(lang, "fix", texts.fix),
        ]
    subject = exp.subject_info(lang)
    if exp.enhanced is not None and exp.enhanced_code is not None:
        texts = exp.enhanced.texts[lang]
        out += ["", f"{exp.enhanced_code}  {exp.enhanced.text}"]
        if subject is not None:
            out.append(_line(lang, "subject", f"{subject.key} {subject.name}"))
        out += [
            _line(lang, "rfc", exp.enhanced.rfc),
            _line(lang, "meaning", texts.description),
        ]
        note = exp.class_note(lang)
        if note is not None:
            label = labels["as_class"].format(code=exp.enhanced_code)
            out.append(f"  {label}{colon}{note}")
        out += [_line(lang, "when", texts.when), _line(lang, "fix", texts.fix)]
    elif exp.enhanced_code is not None:
        out += ["", labels["unregistered"].format(code=exp.enhanced_code)]
        if subject is not None:
            described = f"{subject.key} {subject.name}{labels['dash']}{subject.meaning}"
            out.append(_line(lang, "subject", described))
    return "\n".join(out)


def _comparison_text(comparison: Comparison) -> str:
    lang = comparison.lang
    labels = _LABELS[lang]
    colon = labels["colon"]
    names = [item.label for item in comparison.items]
    out = [labels["comparing"].format(codes=labels["and"].join(names))]
    for item in comparison.items:
        info = item.class_info(lang)
        texts = item.primary(lang)
        title = _entry_title(item)
        out += ["", f"{item.label}  {title}" if title else item.label]
        out.append(_line(lang, "class", f"{info.key} {info.name}"))
        subject = item.subject_info(lang)
        if subject is not None:
            out.append(_line(lang, "subject", f"{subject.key} {subject.name}"))
        out.append(_line(lang, "meaning", texts.description if texts else info.meaning))
    out += ["", labels["differences"]]
    if not comparison.differences:
        out.append(f"  {labels['no_differences']}")
    for diff in comparison.differences:
        out.append(f"  {aspect_title(diff.aspect, lang)}")
        out += [f"    {name}{colon}{value}" for name, value in zip(names, diff.values, strict=True)]
    if comparison.shared and comparison.differences:
        out += ["", labels["shared"]]
        out += [
            f"  {aspect_title(same.aspect, lang)}{colon}{same.values[0]}"
            for same in comparison.shared
        ]
    out += ["", labels["applies"]]
    for name, item in zip(names, comparison.items, strict=True):
        out.append(f"  {name}{colon}{item.when(lang)}")
        note = item.class_note(lang)
        if note is not None:
            label = labels["as_class"].format(code=item.enhanced_code)
            out.append(f"    {label}{colon}{note}")
    return "\n".join(out)


def _entry_title(exp: Explanation) -> str:
    """The standard wording of the entry that ``primary`` explains, for headings."""
    if exp.enhanced is not None and exp.primary("en") is exp.enhanced.texts["en"]:
        return exp.enhanced.text
    return exp.basic.text if exp.basic is not None else ""


def _explanation_dict(exp: Explanation, lang: str) -> dict[str, Any]:
    info = exp.class_info(lang)
    subject = exp.subject_info(lang)
    basic = None
    if exp.basic is not None:
        texts = exp.basic.texts[lang]
        basic = {
            "code": str(exp.basic.code),
            "text": exp.basic.text,
            "rfc": exp.basic.rfc,
            "summary": texts.summary,
            "description": texts.description,
            "when": texts.when,
            "fix": texts.fix,
            "action": texts.action,
        }
    enhanced = None
    if exp.enhanced_code is not None:
        enhanced = {
            "code": exp.enhanced_code,
            "registered": exp.enhanced is not None,
            "subject": None
            if subject is None
            else {"key": subject.key, "name": subject.name, "meaning": subject.meaning},
        }
        if exp.enhanced is not None:
            texts = exp.enhanced.texts[lang]
            enhanced.update(
                {
                    "registry_key": exp.enhanced.key,
                    "text": exp.enhanced.text,
                    "rfc": exp.enhanced.rfc,
                    "usual_classes": list(exp.enhanced.classes),
                    "summary": texts.summary,
                    "description": texts.description,
                    "when": texts.when,
                    "fix": texts.fix,
                    "action": texts.action,
                    "class_note": exp.class_note(lang),
                }
            )
    return {
        "query": exp.query,
        "lang": lang,
        "label": exp.label,
        "code": exp.code,
        "enhanced_code": exp.enhanced_code,
        "reply_text": exp.reply_text,
        "class": {
            "key": info.key,
            "name": info.name,
            "enhanced_name": info.enhanced_name,
            "meaning": info.meaning,
            "retry": info.retry,
        },
        "summary": exp.summary(lang),
        "advice": exp.advice(lang),
        "basic": basic,
        "enhanced": enhanced,
    }


def _comparison_dict(comparison: Comparison) -> dict[str, Any]:
    lang = comparison.lang
    labels = [item.label for item in comparison.items]

    def aspect(diff: Difference) -> dict[str, Any]:
        return {
            "aspect": diff.aspect,
            "title": aspect_title(diff.aspect, lang),
            "same": diff.same,
            "values": [
                {"code": label, "value": value}
                for label, value in zip(labels, diff.values, strict=True)
            ],
        }

    return {
        "lang": lang,
        "codes": labels,
        "items": [_explanation_dict(item, lang) for item in comparison.items],
        "differences": [aspect(d) for d in comparison.differences],
        "shared": [aspect(d) for d in comparison.shared],
        "when": [
            {"code": label, "when": item.when(lang), "class_note": item.class_note(lang)}
            for label, item in zip(labels, comparison.items, strict=True)
        ],
    }
