"""``mailwright check``: a conformance audit of any SMTP server, every finding explained.

Each check (catalogue.py) sends something on a fresh connection and judges
the reply against the RFC rule it names; runner.py runs them one connection
at a time, every wait bounded; report.py prints the findings for a person or
as JSON.  The sessions use the client's own machinery (client/, and the
sans-I/O core in protocol/client.py for framing and reading replies);
session.py only adds the raw writes a conformance test needs.
"""

from mailwright.check.catalogue import CHECK_IDS, CHECKS
from mailwright.check.context import CheckPlan, TlsStart
from mailwright.check.model import Check, CheckReport, CheckResult, Finding, Verdict
from mailwright.check.runner import run_checks

__all__ = [
    "CHECKS",
    "CHECK_IDS",
    "Check",
    "CheckPlan",
    "CheckReport",
    "CheckResult",
    "Finding",
    "TlsStart",
    "Verdict",
    "run_checks",
]
