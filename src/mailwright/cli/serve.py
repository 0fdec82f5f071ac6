"""``mailwright serve [--config FILE] [--log-level LEVEL]``: run the SMTP server.

The operator summary goes to standard error before the listeners open; with
``[smtp] processes`` above one, a supervisor runs that many workers
(server/processes.py).  SIGTERM and SIGINT stop it gracefully; SIGHUP (or
``mailwright reload``, through the pid file in data_dir) reloads the configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from mailwright.cli.common import (
    EXIT_OK,
    EXIT_TEMPFAIL,
    EXIT_USAGE,
    Subcommands,
    add_command,
    load_config_or_say_why,
)
from mailwright.errors import QueueUnavailable, StorageError


def add_serve_parser(subcommands: Subcommands) -> None:
    """Register ``serve``; it runs ``run_serve``."""
    parser = add_command(subcommands, "serve", run_serve, help="run the SMTP server")
    parser.add_argument("--config", metavar="FILE", help="TOML configuration (default: embedded)")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (default: info)",
    )


def run_serve(args: argparse.Namespace) -> int:
    from mailwright.app import App
    from mailwright.config import describe
    from mailwright.logfmt import setup_logging
    from mailwright.server.pidfile import pid_file_of

    # A SIGHUP (reload) before the server handles it must not end the process.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    config = load_config_or_say_why(args.config)
    if config is None:
        return EXIT_USAGE
    setup_logging(args.log_level)
    print(describe(config), file=sys.stderr, flush=True)
    try:
        if config.smtp.processes > 1:
            from mailwright.server.processes import Supervisor

            return Supervisor(config, run_event_loop).run()
        run_event_loop(App(config).serve_forever(pid_file=pid_file_of(config.data_dir)))
    except QueueUnavailable as exc:  # the database is down now: let the manager retry
        print(f"mailwright: cannot start: {exc}", file=sys.stderr)
        return EXIT_TEMPFAIL
    except (OSError, StorageError) as exc:
        print(f"mailwright: cannot start: {exc}", file=sys.stderr)
        return 1
    return EXIT_OK


def run_event_loop(coro: Coroutine[Any, Any, object]) -> None:
    """Run with uvloop when it is installed (an optional speed-up), else asyncio."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)
