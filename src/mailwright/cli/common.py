"""What every command shares: registering it, the exit statuses, reading the configuration.

Exit statuses are the contract scripts rely on; each command's module says
what its own mean (the client tools' in cli/options.py).  2 is argparse's own
convention for a wrong command line, and a configuration that does not load
is one.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, TypeAlias

from mailwright.errors import ConfigError

if TYPE_CHECKING:
    from mailwright.config import Config

EXIT_OK: Final = 0
EXIT_USAGE: Final = 2
#: sysexits.h EX_TEMPFAIL: a temporary failure (the queue's database unreachable at
#: start-up); a service manager tries again.
EXIT_TEMPFAIL: Final = 75

Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Run = Callable[[argparse.Namespace], int]


def add_command(
    subcommands: Subcommands,
    name: str,
    run: Run | None,
    *,
    help: str,
    description: str | None = None,
) -> argparse.ArgumentParser:
    """Register the command ``name`` (``main`` calls ``run``); its parser, for the arguments.

    ``run`` None: the command's own subcommands each set theirs (``queue``).
    """
    parser = subcommands.add_parser(name, help=help, description=description)
    if run is not None:
        parser.set_defaults(func=run)
    return parser


def load_config_or_say_why(path: str | None) -> Config | None:
    """The configuration at ``path`` (None: the embedded default), or None after
    printing why it does not load, one line on standard error."""
    from mailwright.config import load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"mailwright: configuration error: {exc}", file=sys.stderr)
        return None
