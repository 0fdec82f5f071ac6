"""``mailwright explain CODE [CODE ...] [--lang en|zh] [--json]``.

The glue between argparse and the reference (``mailwright.codes``): one code
is explained, two or more are compared.  A code that cannot be explained gets
exactly one line on stderr and exit status 2, the conventional status for bad
command-line input, so scripts can tell it from a crash.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from typing import TextIO

from mailwright.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    Subcommands,
    add_command,
)
from mailwright.codes import (
    LANGUAGES,
    CodeError,
    compare,
    default_lang,
    lookup,
    render_text,
    to_dict,
)

#: A code that cannot be explained is bad command-line input.
EXIT_BAD_CODE = EXIT_USAGE

_DESCRIPTION = (
    "Explain SMTP reply codes (RFC 5321 and extensions) and enhanced status codes "
    "(RFC 3463). Give one code, such as 503 or 5.5.1, or a whole reply line in quotes, "
    "such as '503 5.5.1 Bad sequence of commands'; give two or more to compare them."
)


def add_explain_parser(subcommands: Subcommands) -> None:
    """Register ``explain``; it runs ``run_explain``."""
    summary = "explain or compare SMTP reply codes"
    parser = add_command(
        subcommands, "explain", run_explain, help=summary, description=_DESCRIPTION
    )
    _add_arguments(parser)


def run_explain(
    args: argparse.Namespace,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Print the explanation (or comparison) of ``args.codes``; return the exit status.

    ``args.lang`` of None means "from the locale" (LC_ALL, LC_MESSAGES, LANG).
    The streams and environment are parameters so tests need no patching.
    """
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    lang = args.lang if args.lang is not None else default_lang(environ)
    codes: Sequence[str] = args.codes
    try:
        subject = lookup(codes[0]) if len(codes) == 1 else compare(codes, lang)
    except CodeError as exc:
        err.write(f"mailwright explain: {exc.message(lang)}\n")
        return EXIT_BAD_CODE
    if args.json:
        out.write(json.dumps(to_dict(subject, lang), ensure_ascii=False, indent=2) + "\n")
    else:
        out.write(render_text(subject, lang) + "\n")
    return EXIT_OK


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "codes",
        nargs="+",
        metavar="CODE",
        help="a reply code (503), an enhanced code (5.5.1) or a quoted reply line",
    )
    parser.add_argument(
        "--lang",
        choices=LANGUAGES,
        default=None,
        help="language of the explanation (default: from LC_ALL, LC_MESSAGES or LANG; zh_* -> zh)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON object instead of text",
    )
