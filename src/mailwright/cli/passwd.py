"""``mailwright passwd``: an scrypt hash for ``[mailboxes] "user@domain" = { password = "..." }``.

On a terminal the password is asked twice without echo; otherwise the first
line of standard input is the password (for scripts).  The password is never
an argument: the command line shows in ``ps``.
"""

from __future__ import annotations

import argparse
import sys

from mailwright.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    Subcommands,
    add_command,
)


def add_passwd_parser(subcommands: Subcommands) -> None:
    """Register ``passwd``; it runs ``run_passwd``."""
    summary = "hash a password for [mailboxes] (asks twice, or reads one line from stdin)"
    add_command(subcommands, "passwd", run_passwd, help=summary)


def run_passwd(args: argparse.Namespace) -> int:
    import getpass

    from mailwright.passwords import hash_password

    if sys.stdin.isatty():
        try:
            password = getpass.getpass("Password: ")
            again = getpass.getpass("Password again: ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 1
        if password != again:
            print("mailwright: the passwords differ; nothing printed", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not password:
        print("mailwright: empty password refused", file=sys.stderr)
        return EXIT_USAGE
    print(hash_password(password))
    return EXIT_OK
