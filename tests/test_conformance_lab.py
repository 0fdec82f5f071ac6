"""The conformance lab's own parts (benchmarks/conformance.py) that run without the Debian MTAs.

The lab itself needs root, Postfix, Exim and OpenSMTPD and is run by hand; what
CI can prove is that its harness exchange really tells a server that takes a
message from one that does not, and that the page it writes shows every
verdict and every unreviewed non-pass.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers import RunningServer, maildir_messages, wait_for

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def lab(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("conformance")


def test_harness_exchange_delivers_a_message(
    lab: ModuleType, server_factory: Callable[..., RunningServer]
) -> None:
    server = server_factory()
    transcript = lab.smoke_exchange(server.port, "alice@example.test")
    assert transcript[0][0] == "S" and transcript[0][1].startswith("220 ")
    assert ["C", "RCPT TO:<alice@example.test>"] in transcript
    assert transcript[-1][1].startswith("221")
    messages = wait_for(lambda: maildir_messages(server.data_dir, "alice@example.test"))
    assert b"conformance lab: harness test message" in messages[0]  # type: ignore[index]


def test_harness_exchange_refused_recipient_is_an_error(
    lab: ModuleType, server_factory: Callable[..., RunningServer]
) -> None:
    server = server_factory()
    with pytest.raises(lab.ExchangeError, match=r"RCPT TO:<user@elsewhere.test>' got 5\d\d"):
        lab.smoke_exchange(server.port, "user@elsewhere.test")


def report(*checks: tuple[str, str]) -> dict[str, object]:
    return {
        "target": "127.0.0.1:2525",
        "checks": [
            {
                "id": check_id,
                "verdict": verdict,
                "summary": "",
                "rfc": "RFC 5321 4.1.1.1",
                "transcript": [["C", f"{check_id.upper()} sent"], ["S", "250 OK"]],
                "explanation": "",
            }
            for check_id, verdict in checks
        ],
        "counts": {"pass": 1, "fail": 1, "warn": 0, "skip": 0, "error": 0},
    }


def test_page_shows_each_verdict_and_a_note_or_a_flag_for_each_non_pass(lab: ModuleType) -> None:
    outcomes = [
        lab.Outcome(
            "postfix", "Postfix 3.7", report=report(("greeting", "pass"), ("vrfy", "warn"))
        ),
        lab.Outcome("exim", "Exim 4.96", report=report(("greeting", "fail"), ("vrfy", "pass"))),
        lab.Outcome("aiosmtpd", "aiosmtpd 1.4", error="ServerError: did not start"),
    ]
    notes = {"vrfy": {"postfix": "A deliberate choice: VRFY is on by default."}}
    page = lab.render(outcomes, "2026-12-04 17:00 UTC", notes)
    assert "| check | Postfix | Exim | aiosmtpd |" in page
    assert "| `greeting` | pass | **fail** | **error** |" in page
    assert "| `vrfy` | warn | pass | **error** |" in page
    assert "**Postfix: warn** (RFC 5321 4.1.1.1). A deliberate choice" in page
    assert "**Exim: fail** (RFC 5321 4.1.1.1). _Not reviewed yet" in page
    assert "C: GREETING sent\nS: 250 OK" in page
    assert "**aiosmtpd** could not be checked: ServerError: did not start" in page


def test_reviewed_notes_parse_and_name_only_lab_servers(lab: ModuleType) -> None:
    notes = lab.load_notes()
    assert notes, f"{lab.NOTES} is missing or empty"
    for check_id, servers in notes.items():
        assert set(servers) <= set(lab.SERVER_KEYS), check_id
        assert all(text.strip() for text in servers.values()), check_id
