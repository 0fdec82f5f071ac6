"""``mailwright reload [--config FILE]``: make the running server read its configuration again.

The file is loaded and checked here first: one that does not check is named
(exit 2) and the server is not disturbed.  Otherwise the server is found
through the pid file in the file's data_dir (server/pidfile.py) and sent
SIGHUP; what it does then is in its log (``event=reloaded``, or one
``event=reload-failed`` line naming the key; docs/operations.md).

Exit statuses: 0 signalled, 1 no server is running for that data_dir, 2 the
configuration does not load.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Final

from mailwright.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    Subcommands,
    add_command,
    load_config_or_say_why,
)

EXIT_NO_SERVER: Final = 1


def add_reload_parser(subcommands: Subcommands) -> None:
    """Register ``reload``; it runs ``run_reload``."""
    parser = add_command(
        subcommands,
        "reload",
        run_reload,
        help="make the running server read its configuration again (SIGHUP)",
    )
    parser.add_argument(
        "--config", metavar="FILE", help="the server's TOML configuration (default: embedded)"
    )


def run_reload(args: argparse.Namespace) -> int:
    from mailwright.server.pidfile import NoServer, pid_file_of, running_pid

    config = load_config_or_say_why(args.config)
    if config is None:
        print("mailwright: the server was not signalled", file=sys.stderr)
        return EXIT_USAGE
    try:
        pid = running_pid(pid_file_of(config.data_dir))
        os.kill(pid, signal.SIGHUP)
    except NoServer as exc:
        print(f"mailwright: {exc}", file=sys.stderr)
        return EXIT_NO_SERVER
    except OSError as exc:
        print(f"mailwright: cannot signal the server: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_NO_SERVER
    print(f"mailwright: server {pid} signalled to reload; its log says how it went")
    return EXIT_OK
