"""The SMTP reply-code reference and its explanations (``mailwright explain``).

Every basic reply code of RFC 5321 and its extensions and every enhanced
status code of the RFC 3463 / IANA registry, in English and Chinese, read
from ``reference.json``.  ``lookup`` explains one code or reply line,
``compare`` sets several side by side, ``one_line`` explains any Reply in a
line for the client tools, and ``render_text`` / ``to_dict`` present them.
"""

from mailwright.codes.errors import (
    CodeError,
    MalformedCodeError,
    ReferenceDataError,
    UnknownCodeError,
)
from mailwright.codes.explain import (
    Comparison,
    Difference,
    Explanation,
    compare,
    lookup,
    one_line,
)
from mailwright.codes.language import DEFAULT_LANGUAGE, LANGUAGES, default_lang
from mailwright.codes.reference import (
    BasicEntry,
    ClassInfo,
    EnhancedEntry,
    Reference,
    SubjectInfo,
    Texts,
    default_reference,
)
from mailwright.codes.render import render_text, to_dict

__all__ = [
    "DEFAULT_LANGUAGE",
    "LANGUAGES",
    "BasicEntry",
    "ClassInfo",
    "CodeError",
    "Comparison",
    "Difference",
    "EnhancedEntry",
    "Explanation",
    "MalformedCodeError",
    "Reference",
    "ReferenceDataError",
    "SubjectInfo",
    "Texts",
    "UnknownCodeError",
    "compare",
    "default_lang",
    "default_reference",
    "lookup",
    "one_line",
    "render_text",
    "to_dict",
]
