"""What a check is and what it finds: verdicts, findings, results, the registry of checks.

A check is a small async function with a stable id (the JSON and ``--only``
use it), the RFC section its rule comes from, and a docstring whose first line
is that rule in one sentence: the report prints it next to a failure, so the
reader learns why the rule matters, not only that it was broken.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from mailwright.protocol.reply import Reply

if TYPE_CHECKING:
    from mailwright.check.context import CheckContext


class Verdict(enum.Enum):
    """The outcome of one check.  ``error``: it could not finish (timeout, connection lost)."""

    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"
    ERROR = "error"


#: The order of the summary line: ``N pass, N fail, N warn, N skip, N error``.
VERDICT_ORDER: tuple[Verdict, ...] = tuple(Verdict)

TranscriptLine = tuple[Literal["C", "S"], str]


@dataclass(frozen=True, slots=True)
class Finding:
    """What a check concluded: the verdict, one sentence, and the reply that shows it.

    ``reply`` is explained from the reply-code reference when the verdict is
    fail or warn; None when no reply is at issue (a hang, a missing greeting).
    ``evidence`` is where in the check's transcript the exchange that shows the
    finding starts (the report shows a few lines from there); None: the start.
    """

    verdict: Verdict
    summary: str
    reply: Reply | None = None
    evidence: int | None = None


def passed(summary: str, reply: Reply | None = None, *, evidence: int | None = None) -> Finding:
    return Finding(Verdict.PASS, summary, reply, evidence)


def failed(summary: str, reply: Reply | None = None, *, evidence: int | None = None) -> Finding:
    return Finding(Verdict.FAIL, summary, reply, evidence)


def warned(summary: str, reply: Reply | None = None, *, evidence: int | None = None) -> Finding:
    return Finding(Verdict.WARN, summary, reply, evidence)


def skipped(summary: str) -> Finding:
    return Finding(Verdict.SKIP, summary)


def errored(summary: str, reply: Reply | None = None, *, evidence: int | None = None) -> Finding:
    return Finding(Verdict.ERROR, summary, reply, evidence)


class CheckError(Exception):
    """A check cannot go on and says why in one sentence: its verdict is ``error``.

    Raised when a step the check needs was refused (our MAIL FROM, say), so
    the rule under test could not be tried; a timeout or a lost connection
    becomes ``error`` in the runner without this.
    """

    def __init__(self, summary: str, reply: Reply | None = None) -> None:
        super().__init__(summary)
        self.summary = summary
        self.reply = reply


CheckFunction = Callable[["CheckContext"], Awaitable[Finding]]


@dataclass(frozen=True, slots=True)
class Check:
    """One registered check: its id, its RFC section, its rule and its function."""

    id: str
    rfc: str
    run: CheckFunction

    @property
    def rule(self) -> str:
        """The first line of the function's docstring: the rule, in one sentence, as plain text."""
        doc = (self.run.__doc__ or "").strip()
        return doc.splitlines()[0].replace("``", "") if doc else ""


@dataclass(frozen=True, slots=True)
class CheckResult:
    """A check's finding with the exchange that shows it, ready to report."""

    check: Check
    finding: Finding
    transcript: tuple[TranscriptLine, ...] = field(default=())

    @property
    def id(self) -> str:
        return self.check.id

    @property
    def verdict(self) -> Verdict:
        return self.finding.verdict


@dataclass(frozen=True, slots=True)
class CheckReport:
    """A whole run: the target and every result, in the order of the checks."""

    target: str
    results: tuple[CheckResult, ...]
    reachable: bool = True  # False: no connection or no 220 greeting (exit status 3)

    def counts(self) -> dict[str, int]:
        counts = {verdict.value: 0 for verdict in VERDICT_ORDER}
        for result in self.results:
            counts[result.verdict.value] += 1
        return counts
