"""``mailwright check``: a conformance audit of an SMTP server (issue 15).

::

    mailwright check HOST[:PORT] [--from ADDR] [--to ADDR] [--starttls|--tls] [--deliver]
                     [--json] [--only ID,...] [--timeout S] [--lang en|zh] [--helo NAME]

Argument parsing only: the checks, their runner and the report are in
``mailwright.check``.  Exit statuses: 0 no check failed or errored; 1 one or
more ``fail`` or ``error``; 2 usage error; 3 no connection or no greeting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Final, TextIO

from mailwright.check import (
    CHECK_IDS,
    CHECKS,
    CheckPlan,
    CheckReport,
    TlsStart,
    Verdict,
    run_checks,
)
from mailwright.check.report import render_text, to_json
from mailwright.cli.common import EXIT_OK, Subcommands, add_command
from mailwright.cli.options import (
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    add_helo_option,
    add_lang_option,
    add_server_argument,
    positive_seconds,
    recipient,
    sender,
)
from mailwright.cli.report import console
from mailwright.codes import default_lang

#: Seconds for each wait (connect, each reply): issue 15's default.
DEFAULT_CHECK_TIMEOUT: Final = 10.0
#: 1: a check failed or could not finish.
EXIT_FINDINGS: Final = EXIT_REFUSED

DESCRIPTION = (
    "Check whether an SMTP server follows RFC 5321 and its extensions: command order, "
    "syntax errors, postmaster, relaying, PIPELINING, SIZE, STARTTLS, and (with --deliver) "
    "where a message ends. Nothing is delivered without --deliver. "
    "Exit status: 0 no check failed, 1 a check failed or could not finish, 2 usage error, "
    "3 no connection or no greeting."
)


def add_check_parser(subcommands: Subcommands) -> None:
    """Register ``check``; it runs ``run_check``."""
    summary = "audit an SMTP server's conformance, every finding explained"
    add_arguments(
        add_command(subcommands, "check", run_check, help=summary, description=DESCRIPTION)
    )


def check_ids(text: str) -> frozenset[str]:
    """``--only``: check ids separated by commas, each one of ``CHECK_IDS``."""
    ids = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [i for i in ids if i not in CHECK_IDS]
    if unknown or not ids:
        named = ", ".join(unknown) or repr(text)
        raise argparse.ArgumentTypeError(
            f"unknown check id {named}; the ids are: {', '.join(CHECK_IDS)}"
        )
    return frozenset(ids)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_argument(parser)
    parser.add_argument(
        "--from",
        dest="sender",
        type=sender,
        metavar="ADDR",
        help="sender for the transactions (default: check@<this host's name>)",
    )
    parser.add_argument(
        "--to",
        dest="recipient",
        type=recipient,
        metavar="ADDR",
        help="an address the server accepts mail for (default: postmaster@HOST, or "
        "postmaster@<the greeting's domain> when HOST is an IP address)",
    )
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--starttls", action="store_true", help="run the checks inside STARTTLS")
    tls.add_argument(
        "--tls", action="store_true", help="TLS from the first byte (port 465, RFC 8314)"
    )
    parser.add_argument(
        "--deliver",
        action="store_true",
        help="also run the checks that send a message (at most 5 small test messages to --to)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON object")
    parser.add_argument("--only", type=check_ids, metavar="ID,...", help="run only these checks")
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=DEFAULT_CHECK_TIMEOUT,
        metavar="SECONDS",
        help=f"limit for each wait (default: {DEFAULT_CHECK_TIMEOUT:g})",
    )
    add_lang_option(parser)
    add_helo_option(parser)


def run_check(args: argparse.Namespace, *, stdout: TextIO | None = None) -> int:
    """Run the checks ``args`` ask for, print the report, return the exit status."""
    host, port = args.server
    plan = CheckPlan(
        host=host,
        port=port,
        sender=args.sender,
        recipient=args.recipient,
        tls=tls_start(args),
        deliver=args.deliver,
        timeout=args.timeout,
        helo=args.helo,
        only=args.only,
    )
    lang = args.lang if args.lang is not None else default_lang()
    report = asyncio.run(run_checks(plan, CHECKS))
    out = stdout if stdout is not None else sys.stdout
    if args.json:
        out.write(json.dumps(to_json(report, lang), ensure_ascii=False, indent=2) + "\n")
    else:
        printer = console(out)
        for line in render_text(report, lang):
            print(line, file=printer)
    return exit_status(report)


def tls_start(args: argparse.Namespace) -> TlsStart:
    """``--starttls``, ``--tls`` or neither (argparse refuses both)."""
    if args.starttls:
        return TlsStart.STARTTLS
    return TlsStart.IMPLICIT if args.tls else TlsStart.PLAIN


def exit_status(report: CheckReport) -> int:
    if not report.reachable:
        return EXIT_UNREACHABLE
    if any(result.verdict in (Verdict.FAIL, Verdict.ERROR) for result in report.results):
        return EXIT_FINDINGS
    return EXIT_OK
