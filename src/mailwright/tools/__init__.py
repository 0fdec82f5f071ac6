"""The client tools: ``mailwright send`` and ``mailwright probe`` (issue 5).

Both are built on the client role (``mailwright.client`` and the sans-I/O
core it is made of) and explain what servers answer with the reply-code
reference (``mailwright.codes``).  ``src/mailwright/cli.py`` registers them
with ``add_send_parser`` and ``add_probe_parser``; each sets ``func`` to a
function taking the parsed arguments and returning the exit status.
``python -m mailwright.tools send|probe ...`` runs them on their own.
"""

from mailwright.tools.probe import add_probe_parser, run_probe
from mailwright.tools.send import add_send_parser, run_send

__all__ = ["add_probe_parser", "add_send_parser", "run_probe", "run_send"]
