"""The explain command: through argparse in-process, and as ``python -m mailwright explain``."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys

import pytest

from mailwright.cli.explain import add_explain_parser, run_explain
from mailwright.codes import default_lang


def parse(*argv: str) -> argparse.Namespace:
    """Build the main parser the way src/mailwright/cli/ does, and parse ``explain ...``."""
    parser = argparse.ArgumentParser(prog="mailwright")
    add_explain_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["explain", *argv])


def run(*argv: str, environ: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = run_explain(parse(*argv), stdout=out, stderr=err, environ=environ or {})
    return status, out.getvalue(), err.getvalue()


def run_module(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("LC_ALL", "LC_MESSAGES", "LANG")}
    environ.update(PYTHONIOENCODING="utf-8", **env)
    return subprocess.run(
        [sys.executable, "-m", "mailwright", "explain", *argv],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=environ,
        timeout=60,
        check=False,
    )


def test_subcommand_registers_its_handler() -> None:
    args = parse("503")
    assert args.func is run_explain
    assert args.codes == ["503"] and args.lang is None and args.json is False


def test_single_code_prints_its_entry() -> None:
    status, out, err = run("503", "--lang", "en")
    assert status == 0 and err == ""
    assert "503  Bad sequence of commands" in out
    assert "How to fix:" in out


def test_reply_line_is_one_argument() -> None:
    status, out, _ = run("503 5.5.1 Bad sequence of commands", "--lang", "en")
    assert status == 0
    assert out.startswith("Reply: 503 5.5.1 Bad sequence of commands\n")
    assert "5.5.1  Invalid command" in out


def test_two_codes_print_a_comparison() -> None:
    status, out, _ = run("251", "503", "--lang", "en")
    assert status == 0
    assert out.startswith("Comparing 251 and 503")
    assert "Key differences" in out


def test_json_output_parses() -> None:
    status, out, _ = run("--json", "--lang", "en", "550 5.1.1 User unknown")
    assert status == 0
    data = json.loads(out)
    assert data["code"] == 550 and data["enhanced_code"] == "5.1.1"
    assert data["class"]["name"] == "Permanent Negative Completion"
    assert data["enhanced"]["registry_key"] == "X.1.1"
    assert data["basic"]["rfc"].startswith("RFC 5321")


def test_unknown_code_is_one_line_on_stderr_and_exit_2() -> None:
    status, out, err = run("299", "--lang", "en")
    assert status == 2
    assert out == ""
    assert err == "mailwright explain: unknown reply code 299\n"


def test_error_follows_the_language() -> None:
    status, _, err = run("250 5.1.1 Ok", "--lang", "zh")
    assert status == 2
    assert err.count("\n") == 1 and "类别不一致" in err


def test_language_defaults_from_the_locale() -> None:
    _, out, _ = run("503", environ={"LANG": "zh_CN.UTF-8"})
    assert "如何解决" in out
    _, out, _ = run("503", environ={"LC_ALL": "C.UTF-8", "LANG": "zh_CN.UTF-8"})
    assert "How to fix" in out


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "en"),
        ({"LANG": "zh_CN.UTF-8"}, "zh"),
        ({"LANG": "zh_TW"}, "zh"),
        ({"LANG": "en_US.UTF-8"}, "en"),
        ({"LC_MESSAGES": "zh_CN", "LANG": "en_US"}, "zh"),
        ({"LC_ALL": "en_GB", "LC_MESSAGES": "zh_CN"}, "en"),
        ({"LC_ALL": "", "LANG": "zh_SG"}, "zh"),
    ],
)
def test_default_lang_reads_lc_all_then_lc_messages_then_lang(
    environ: dict[str, str], expected: str
) -> None:
    assert default_lang(environ) == expected


def test_module_explains_one_code() -> None:
    result = run_module("503", "--lang", "en")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "503  Bad sequence of commands" in result.stdout


def test_module_compares_in_chinese_from_the_locale() -> None:
    result = run_module("251", "503", LANG="zh_CN.UTF-8")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("对比 251 与 503")
    assert "5xx 永久性否定（永久失败）" in result.stdout


def test_module_prints_json() -> None:
    result = run_module("--json", "--lang", "en", "251", "503")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["codes"] == ["251", "503"]


@pytest.mark.parametrize("code", ["299", "5.9.9", "hello", "250 5.1.1 Ok", "3.1.1"])
def test_module_rejects_bad_codes_with_one_line_and_status_2(code: str) -> None:
    result = run_module(code, "--lang", "en")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("mailwright explain: ")


def test_module_error_in_chinese() -> None:
    result = run_module("599", "--lang", "zh")
    assert result.returncode == 2
    assert result.stderr == "mailwright explain: 未知的回复码 599\n"
