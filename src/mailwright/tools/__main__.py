"""``python -m mailwright.tools send|probe ...``: the tools without the rest of the CLI."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mailwright.tools import add_probe_parser, add_send_parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mailwright", description="SMTP client tools")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_send_parser(subparsers)
    add_probe_parser(subparsers)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
