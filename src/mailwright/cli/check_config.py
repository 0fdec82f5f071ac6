"""``mailwright check-config FILE``: validate a configuration and print what it means."""

from __future__ import annotations

import argparse

from mailwright.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    Subcommands,
    add_command,
    load_config_or_say_why,
)


def add_check_config_parser(subcommands: Subcommands) -> None:
    """Register ``check-config``; it runs ``run_check_config``."""
    summary = "validate a configuration file and exit"
    parser = add_command(subcommands, "check-config", run_check_config, help=summary)
    parser.add_argument("file", metavar="FILE")


def run_check_config(args: argparse.Namespace) -> int:
    from mailwright.config import describe

    config = load_config_or_say_why(args.file)
    if config is None:
        return EXIT_USAGE
    print(describe(config))
    print("configuration ok")
    return EXIT_OK
