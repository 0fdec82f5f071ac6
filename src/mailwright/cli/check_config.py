"""``mailwright check-config FILE``: validate a configuration and print what it means."""

from __future__ import annotations

import argparse

from mailwright.cli.common import EXIT_OK, EXIT_USAGE, load_config_or_say_why


def add_check_config_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register ``check-config``; it runs ``run_check_config``."""
    parser = subparsers.add_parser("check-config", help="validate a configuration file and exit")
    parser.add_argument("file", metavar="FILE")
    parser.set_defaults(func=run_check_config)


def run_check_config(args: argparse.Namespace) -> int:
    from mailwright.config import describe

    config = load_config_or_say_why(args.file)
    if config is None:
        return EXIT_USAGE
    print(describe(config))
    print("configuration ok")
    return EXIT_OK
