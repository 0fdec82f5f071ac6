"""A run's findings for a person (one line per check, the exchange, the why) or as JSON.

The frame is English; explanations of replies follow ``--lang``, from the same
reference ``mailwright explain`` uses (``codes.one_line``).  Lines quoted from
the server or our odd commands are cut at ``MAX_SHOWN_LINE`` characters, so a
2,000-octet command or a long reply does not flood the report.
"""

from __future__ import annotations

from typing import Any, Final

from mailwright.check.model import CheckReport, CheckResult, TranscriptLine, Verdict
from mailwright.codes import one_line

#: Transcript lines shown under a check in the human report (the JSON has all of them).
SHOWN_EXCHANGE: Final = 6
#: Longest transcript line shown, in characters; longer ones are cut and their length said.
MAX_SHOWN_LINE: Final = 200
INDENT: Final = "    "
_ID_WIDTH: Final = 19  # the longest id, "starttls-injection", and a space
_VERDICT_WIDTH: Final = 6


def shown_line(line: str) -> str:
    if len(line) <= MAX_SHOWN_LINE:
        return line
    return f"{line[:MAX_SHOWN_LINE]}... ({len(line)} characters)"


def explanation(result: CheckResult, lang: str) -> str | None:
    """The reference's one line about the reply behind a fail or warn; None otherwise."""
    finding = result.finding
    if finding.verdict not in (Verdict.FAIL, Verdict.WARN) or finding.reply is None:
        return None
    line = one_line(finding.reply, lang)
    if finding.reply.is_positive:
        # The reference's advice for a 2xx is "nothing to fix", which reads wrong under a
        # fail: the fault is that the server accepted, so say that instead.
        cut, tail = _POSITIVE_TAIL[lang]
        return line.split(cut, 1)[0].rstrip() + tail
    return line


#: Where the reference's advice starts in ``one_line``, and what replaces it for a 2xx.
_POSITIVE_TAIL = {
    "en": (" What to do:", " The server accepted where the rule above asks for a refusal."),
    "zh": ("处理：", "按上述规则应当拒绝，服务器却接受了。"),
}


def exchange(result: CheckResult) -> list[TranscriptLine]:
    """The few lines of the transcript that show the finding."""
    start = result.finding.evidence or 0
    return list(result.transcript[start : start + SHOWN_EXCHANGE])


def summary_line(report: CheckReport) -> str:
    counts = report.counts()
    return ", ".join(f"{counts[verdict.value]} {verdict.value}" for verdict in Verdict)


def render_text(report: CheckReport, lang: str) -> list[str]:
    """The human report, line by line."""
    lines = [f"mailwright check {report.target}"]
    for result in report.results:
        finding = result.finding
        verdict = finding.verdict.value.ljust(_VERDICT_WIDTH)
        lines.append(f"{verdict}{result.id.ljust(_ID_WIDTH)}{finding.summary}")
        for side, line in exchange(result):
            lines.append(f"{INDENT}{side}: {shown_line(line)}")
        if finding.verdict in (Verdict.FAIL, Verdict.WARN):
            lines.append(f"{INDENT}{result.check.rfc}: {result.check.rule}")
        explained = explanation(result, lang)
        if explained is not None:
            lines.append(f"{INDENT}{explained}")
    if not report.reachable:
        lines.append("no session with the server: the other checks were not run")
    lines.append(summary_line(report))
    return lines


def to_json(report: CheckReport, lang: str) -> dict[str, Any]:
    """The JSON report: ``{"target", "checks": [...], "counts"}`` (issue 15's shape)."""
    return {
        "target": report.target,
        "checks": [
            {
                "id": result.id,
                "verdict": result.verdict.value,
                "summary": result.finding.summary,
                "rfc": result.check.rfc,
                "transcript": [[side, shown_line(line)] for side, line in result.transcript],
                "explanation": explanation(result, lang),
            }
            for result in report.results
        ],
        "counts": report.counts(),
    }
