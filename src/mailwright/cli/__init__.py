"""The ``mailwright`` command: one module per subcommand, registered here.

serve, reload, check_config, passwd, explain, queue, send, probe, check and dkim each have a
module with ``add_<command>_parser`` (which sets ``func``) and
``run_<command>``.  What several share is beside them: common.py (exit
statuses, reading the configuration) for all; for the client tools (send,
probe), options.py (their options and exit statuses), report.py (replies
turned into lines), capabilities.py, tls.py and x509.py (what a server
offers and presents), message.py and referrals.py (send's own).

``mailwright`` (pyproject's script) and ``python -m mailwright`` both run
``main``.  Each command is imported when the parser is built; the heavy
parts (the server, the queue, dnspython) only when the command runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    from mailwright.cli.check import add_check_parser
    from mailwright.cli.check_config import add_check_config_parser
    from mailwright.cli.dkim import add_dkim_parser
    from mailwright.cli.explain import add_explain_parser
    from mailwright.cli.passwd import add_passwd_parser
    from mailwright.cli.probe import add_probe_parser
    from mailwright.cli.queue import add_queue_parser
    from mailwright.cli.reload import add_reload_parser
    from mailwright.cli.send import add_send_parser
    from mailwright.cli.serve import add_serve_parser

    parser = argparse.ArgumentParser(
        prog="mailwright", description="A strict, durable, explainable ESMTP server."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_serve_parser(sub)
    add_reload_parser(sub)
    add_check_config_parser(sub)
    add_passwd_parser(sub)
    add_explain_parser(sub)
    add_queue_parser(sub)
    add_send_parser(sub)
    add_probe_parser(sub)
    add_check_parser(sub)
    add_dkim_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
