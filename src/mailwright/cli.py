"""The ``mailwright`` command: serve, check-config, explain, and the tools around them."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from mailwright.errors import ConfigError, StorageError

EXIT_USAGE = 2


def _run_async(coro: object) -> None:
    """Run with uvloop when it is installed (an optional speed-up), else asyncio."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]
    else:
        uvloop.run(coro)  # type: ignore[arg-type]


def cmd_serve(args: argparse.Namespace) -> int:
    from mailwright.app import App
    from mailwright.config import describe, load_config
    from mailwright.logfmt import setup_logging

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"mailwright: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(args.log_level)
    print(describe(config), file=sys.stderr, flush=True)
    try:
        if config.smtp.processes > 1:
            from mailwright.server.processes import Supervisor

            return Supervisor(config, _run_async).run()
        _run_async(App(config).serve_forever())
    except (OSError, StorageError) as exc:
        print(f"mailwright: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from mailwright.config import describe, load_config

    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(f"mailwright: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(describe(config))
    print("configuration ok")
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    """Print an scrypt hash for ``[mailboxes] "user@domain" = { password = "..." }``.

    On a terminal the password is asked twice without echo; otherwise the
    first line of standard input is the password (for scripts).
    """
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
    return 0


def build_parser() -> argparse.ArgumentParser:
    from mailwright.cli_queue import add_queue_parser
    from mailwright.codes.cli import add_explain_parser
    from mailwright.tools import add_probe_parser, add_send_parser

    parser = argparse.ArgumentParser(
        prog="mailwright", description="A strict, durable, explainable ESMTP server."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the SMTP server")
    serve.add_argument("--config", metavar="FILE", help="TOML configuration (default: embedded)")
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (default: info)",
    )
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("file", metavar="FILE")
    check.set_defaults(func=cmd_check_config)

    passwd = sub.add_parser(
        "passwd",
        help="hash a password for [mailboxes] (asks twice, or reads one line from stdin)",
    )
    passwd.set_defaults(func=cmd_passwd)

    add_explain_parser(sub)
    add_queue_parser(sub)
    add_send_parser(sub)
    add_probe_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        from mailwright.codes.cli import run_explain

        func = run_explain
    return int(func(args))


if __name__ == "__main__":
    sys.exit(main())
