"""Which language explanations are written in.

The reference is bilingual (English and Simplified Chinese).  The choice is an
argument everywhere; only the CLI consults the environment, through
``default_lang``, so library callers never depend on the process locale.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

LANGUAGES: Final[tuple[str, ...]] = ("en", "zh")
DEFAULT_LANGUAGE: Final[str] = "en"

# POSIX precedence: LC_ALL overrides LC_MESSAGES, which overrides LANG.
_LOCALE_VARIABLES: Final[tuple[str, ...]] = ("LC_ALL", "LC_MESSAGES", "LANG")


def default_lang(environ: Mapping[str, str] | None = None) -> str:
    """The language the user's locale asks for: ``zh`` for any ``zh*`` locale, else ``en``.

    The first of LC_ALL, LC_MESSAGES and LANG that is set and non-empty
    decides, as it does for message catalogues.
    """
    env = os.environ if environ is None else environ
    for name in _LOCALE_VARIABLES:
        value = env.get(name, "")
        if value:
            return "zh" if value.lower().startswith("zh") else DEFAULT_LANGUAGE
    return DEFAULT_LANGUAGE


def check_lang(lang: str) -> str:
    """Return ``lang`` if the reference is written in it; raise ValueError otherwise."""
    if lang not in LANGUAGES:
        raise ValueError(f"unsupported language {lang!r}; choose one of {', '.join(LANGUAGES)}")
    return lang
