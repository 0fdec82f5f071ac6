"""The conformance lab: ``mailwright check`` against Postfix, Exim, OpenSMTPD, aiosmtpd and itself.

    python benchmarks/conformance.py --install    # first time: fetch what is missing
    python benchmarks/conformance.py              # run, then write docs/conformance.md

Run it as root on Debian/Ubuntu: Postfix's master must start as root, and Exim
and OpenSMTPD run from their unpacked packages in private mount namespaces
(benchmarks/mtas.py).  ``--install`` gets Postfix with apt-get (as run.py does),
unpacks Exim and OpenSMTPD with ``apt-get download`` + ``dpkg -x`` into
~/.cache/mailwright-bench/debian (their packages conflict with Postfix's), and
aiosmtpd comes from the benchmark's private venv; run again, it fetches nothing.

Each server starts in its own temporary directory on a free 127.0.0.1 port,
accepting mail for bench.test and its own host name into a Maildir.  The lab
first proves it with one plain exchange (EHLO, MAIL, RCPT, DATA) and waits for
the message to be stored, then runs ``mailwright check 127.0.0.1:PORT --from
bench@client.test --to user@bench.test --deliver --json`` (this tree's
mailwright).  Every server is
stopped at the end, on error and on Ctrl-C too.  The raw reports go to a JSON
file; docs/conformance.md gets the table, with the reviewed notes from
benchmarks/conformance_notes.toml under it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import deps
from mtas import LAB_USER, Exim, OpenSmtpd, UnpackedMta, lab_mailboxes
from run import REPO, Lab, mailwright_version, postfix_version, wait_stored
from servers import (
    LOCAL_DOMAIN,
    LOOPBACK,
    SENDER,
    Aiosmtpd,
    Mailwright,
    Postfix,
    Server,
    ServerError,
)

SERVER_KEYS = ("postfix", "postfix-strict", "exim", "opensmtpd", "aiosmtpd", "mailwright")
UNPACKED: dict[str, type[UnpackedMta]] = {"exim": Exim, "opensmtpd": OpenSmtpd}
DOC = REPO / "docs" / "conformance.md"
NOTES = Path(__file__).with_name("conformance_notes.toml")
#: Per-reply wait of ``mailwright check`` (its --timeout).
CHECK_TIMEOUT = 10.0
#: The whole check run against one server.
CHECK_RUN_TIMEOUT = 600.0
STORE_TIMEOUT = 30.0
#: The longest reply the harness's own exchange reads.
MAX_REPLY = 64 * 1024
VERDICTS = ("pass", "fail", "warn", "skip", "error")


class LabPostfix(Postfix):
    """The benchmark's Postfix, with the lab's mailboxes and no trusted network."""

    def settings(self) -> dict[str, object]:
        hostname = f"postfix.{LOCAL_DOMAIN}"
        maps = ", ".join(f"{address}=box/" for address in lab_mailboxes(hostname))
        # The benchmark accepts any local user (local_recipient_maps empty);
        # here Postfix's default applies: unknown users are refused at RCPT.
        settings = super().settings()
        del settings["local_recipient_maps"]
        return settings | {
            # Postfix trusts its own host (mynetworks_style = host) and relays for
            # it; the check must be an outside client, as on an MX.
            "mynetworks": "",
            "virtual_mailbox_domains": f"{LOCAL_DOMAIN}, {hostname}",
            "virtual_mailbox_maps": f"inline:{{ {maps} }}",
        }


#: What the "Postfix, strict" column adds to the lab's Postfix.
STRICT_POSTFIX = {
    "smtpd_helo_required": "yes",
    "strict_rfc821_envelopes": "yes",
    "smtpd_forbid_bare_newline": "normalize",
}


class StrictPostfix(LabPostfix):
    """Postfix with the three settings that its non-passes in the table name.

    A column of its own, so the page shows which verdicts are Postfix's
    defaults (deliberate choices) rather than things it cannot do.
    """

    def settings(self) -> dict[str, object]:
        return super().settings() | STRICT_POSTFIX


class LabMailwright(Mailwright):
    processes = 1
    domains = (LOCAL_DOMAIN, f"mailwright.{LOCAL_DOMAIN}")
    mailboxes = (LAB_USER,)  # postmaster@ every local domain is built in


def make_server(key: str, directory: Path) -> Server:
    if key == "postfix":
        return LabPostfix(directory)
    if key == "postfix-strict":
        return StrictPostfix(directory)
    if key == "mailwright":
        return LabMailwright(directory)
    if key == "aiosmtpd":
        return Aiosmtpd(directory, handler="fsync")
    return UNPACKED[key](directory)


LABELS = {
    "postfix": "Postfix",
    "postfix-strict": "Postfix, strict",
    "exim": "Exim",
    "opensmtpd": "OpenSMTPD",
    "aiosmtpd": "aiosmtpd",
    "mailwright": "mailwright",
}


@dataclass
class Outcome:
    """What the lab saw of one server."""

    server: str
    version: str
    #: The harness's own exchange, as (C|S, line) pairs, then "stored".
    smoke: list[list[str]] = field(default_factory=list)
    report: dict[str, Any] | None = None
    error: str = ""


# ------------------------------------------------------------------ the servers' versions


def version_of(key: str) -> str:
    if key == "postfix":
        return f"Postfix {postfix_version()} (Debian package postfix)"
    if key == "postfix-strict":
        settings = ", ".join(f"`{k} = {v}`" for k, v in STRICT_POSTFIX.items())
        return f"the same Postfix with {settings}"
    if key == "mailwright":
        return f"mailwright {mailwright_version()}"
    if key == "aiosmtpd":
        out = subprocess.run(
            [str(deps.venv_python()), "-c", "import aiosmtpd; print(aiosmtpd.__version__)"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return f"aiosmtpd {out.stdout.strip() or '?'} (plain handler: accepts any recipient)"
    cls = UNPACKED[key]
    return f"{cls.label} {deps.unpacked_version(cls.package) or '?'} (Debian package {cls.package})"


# ------------------------------------------------------------------ the harness's own exchange


class ExchangeError(RuntimeError):
    pass


def read_reply(reader: Any, transcript: list[list[str]]) -> int:
    """One (multi-line) reply; its code.  Bounded by MAX_REPLY and the socket's timeout."""
    size = 0
    while True:
        line = reader.readline(MAX_REPLY)
        size += len(line)
        if not line or size > MAX_REPLY:
            raise ExchangeError("connection closed or reply too long")
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        transcript.append(["S", text])
        if len(text) < 3 or not text[:3].isdigit():
            raise ExchangeError(f"not a reply: {text[:80]!r}")
        if text[3:4] != "-":
            return int(text[:3])


def smoke_exchange(port: int, recipient: str, timeout: float = CHECK_TIMEOUT) -> list[list[str]]:
    """EHLO, MAIL, RCPT, DATA, QUIT over a plain socket: does the server take a message?

    Independent of ``mailwright check`` on purpose, so a server the lab set up
    wrongly is told apart from a finding of the check.
    """
    body = (
        f"From: <{SENDER}>\r\nTo: <{recipient}>\r\n"
        "Subject: mailwright conformance lab: harness test message\r\n\r\n"
        "Sent by benchmarks/conformance.py before the checks.\r\n."
    )
    steps = [
        ("EHLO lab.client.test", 250),
        (f"MAIL FROM:<{SENDER}>", 250),
        (f"RCPT TO:<{recipient}>", 250),
        ("DATA", 354),
        (body, 250),
        ("QUIT", 221),
    ]
    transcript: list[list[str]] = []
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        reader = sock.makefile("rb")
        if (code := read_reply(reader, transcript)) != 220:
            raise ExchangeError(f"greeting {code}")
        for command, expected in steps:
            first, *rest = command.splitlines()
            transcript.append(["C", f"{first} (+{len(rest)} lines)" if rest else first])
            sock.sendall(command.encode() + b"\r\n")
            if (code := read_reply(reader, transcript)) != expected:
                raise ExchangeError(f"{command.splitlines()[0]!r} got {code}, not {expected}")
    return transcript


# ------------------------------------------------------------------ the check


def check_env() -> dict[str, str]:
    """This tree's mailwright first on the path, whatever is installed."""
    src = str(REPO / "src")
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=f"{src}{os.pathsep}{path}" if path else src)


def run_check(port: int, recipient: str, timeout: float) -> dict[str, Any]:
    argv = [sys.executable, "-m", "mailwright", "check", f"{LOOPBACK}:{port}"]
    argv += [
        "--from",
        SENDER,
        "--to",
        recipient,
        "--deliver",
        "--json",
        "--timeout",
        f"{timeout:g}",
    ]
    out = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=check_env(),
        stdin=subprocess.DEVNULL,
        timeout=CHECK_RUN_TIMEOUT,
    )
    # Exit 1 means "a check failed": the report is still the answer.
    if out.returncode not in (0, 1):
        raise ExchangeError(f"mailwright check exit {out.returncode}: {out.stderr.strip()[-300:]}")
    try:
        report: dict[str, Any] = json.loads(out.stdout)
    except json.JSONDecodeError as exc:
        raise ExchangeError(f"mailwright check printed no JSON: {out.stdout[:200]!r}") from exc
    return report


def examine(lab: Lab, key: str, args: argparse.Namespace) -> Outcome:
    outcome = Outcome(key, version_of(key))
    server = make_server(key, lab.directory(key))
    try:
        with lab.started(server):
            print(f"{key}: listening on {LOOPBACK}:{server.port}", file=sys.stderr, flush=True)
            stored_before = server.delivered() or 0
            outcome.smoke = smoke_exchange(server.port, server.recipient)
            if not wait_stored(server.delivered, stored_before + 1, STORE_TIMEOUT):
                raise ExchangeError(f"the harness's message was not stored in {STORE_TIMEOUT} s")
            outcome.smoke.append(["lab", "message stored"])
            print(f"{key}: harness exchange ok, message stored", file=sys.stderr, flush=True)
            if not args.smoke_only:
                outcome.report = run_check(server.port, server.recipient, args.timeout)
                counts = outcome.report.get("counts", {})
                print(f"{key}: check {counts}", file=sys.stderr, flush=True)
    except (ServerError, ExchangeError, OSError, subprocess.SubprocessError) as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
        print(f"{key}: ERROR {outcome.error}", file=sys.stderr, flush=True)
    return outcome


# ------------------------------------------------------------------ the document


def verdicts(outcome: Outcome) -> dict[str, dict[str, Any]]:
    if outcome.report is None:
        return {}
    return {c["id"]: c for c in outcome.report.get("checks", [])}


def load_notes(path: Path = NOTES) -> dict[str, dict[str, str]]:
    """``notes[check_id][server]``: the reviewed reading of a non-pass, from the TOML file."""
    if not path.exists():
        return {}
    with path.open("rb") as f:
        data = tomllib.load(f)
    return {check: dict(servers) for check, servers in data.items()}


def transcript_block(check: dict[str, Any]) -> str:
    lines = [f"{side}: {text}" for side, text in check.get("transcript", [])]
    return "```\n" + "\n".join(lines or ["(no exchange recorded)"]) + "\n```"


def render(outcomes: list[Outcome], date: str, notes: dict[str, dict[str, str]]) -> str:
    by_server = {o.server: verdicts(o) for o in outcomes}
    ids: list[str] = []
    for o in outcomes:
        for check_id in by_server[o.server]:
            if check_id not in ids:
                ids.append(check_id)
    head = "| check | " + " | ".join(LABELS[o.server] for o in outcomes) + " |"
    rows = [head, "|---|" + "---|" * len(outcomes)]
    for check_id in ids:
        cells = []
        for o in outcomes:
            check = by_server[o.server].get(check_id)
            verdict = check["verdict"] if check else ("error" if o.error else "—")
            cells.append(f"**{verdict}**" if verdict in ("fail", "error") else verdict)
        rows.append(f"| `{check_id}` | " + " | ".join(cells) + " |")
    counts_row = []
    for o in outcomes:
        counts = (o.report or {}).get("counts", {})
        counts_row.append(" / ".join(str(counts.get(v, 0)) for v in VERDICTS) if counts else "—")
    rows.append("| pass / fail / warn / skip / error | " + " | ".join(counts_row) + " |")

    versions = "\n".join(f"- **{LABELS[o.server]}**: {o.version}" for o in outcomes)
    problems = "\n".join(
        f"- **{LABELS[o.server]}** could not be checked: {o.error}" for o in outcomes if o.error
    )
    findings = render_findings(outcomes, ids, by_server, notes)
    return TEMPLATE.format(
        date=date,
        versions=versions,
        problems=f"\n{problems}\n" if problems else "",
        table="\n".join(rows),
        findings=findings,
    )


def render_findings(
    outcomes: list[Outcome],
    ids: list[str],
    by_server: dict[str, dict[str, dict[str, Any]]],
    notes: dict[str, dict[str, str]],
) -> str:
    """A paragraph per server and check that did not pass (skips are listed in the table only)."""
    parts: list[str] = []
    for check_id in ids:
        entries = []
        for o in outcomes:
            check = by_server[o.server].get(check_id)
            if check is None or check["verdict"] in ("pass", "skip"):
                continue
            note = notes.get(check_id, {}).get(o.server, "").strip()
            rfc = f" ({check['rfc']})" if check.get("rfc") else ""
            entries.append(
                f"**{LABELS[o.server]}: {check['verdict']}**{rfc}. "
                f"{note or '_Not reviewed yet: read the transcript._'}\n\n"
                f"{transcript_block(check)}"
            )
        if entries:
            parts.append(f"### `{check_id}`\n\n" + "\n\n".join(entries))
    return "\n\n".join(parts) or "Every server passed every check it was given."


TEMPLATE = """\
# Conformance: mailwright check against Postfix, Exim, OpenSMTPD and aiosmtpd

`mailwright check` (docs/check.md) audits any SMTP server against RFC 5321.
To know that its verdicts are right and not merely strict, the lab script
`benchmarks/conformance.py` runs it against four other servers, each as an
operator would set it up to receive mail for a domain, and against mailwright
itself. This page is written by that script; the notes under the table are
read from `benchmarks/conformance_notes.toml`, written after reading the
transcripts.

Run on {date}, on loopback, as `mailwright check 127.0.0.1:PORT --from
bench@client.test --to user@bench.test --deliver --json` (with `--deliver` the
checks that send a message ran too; `--from` because on a machine whose name is
not a full domain name the default sender is `check@[127.0.0.1]`, and Exim
refuses a domain literal in MAIL by default: `501 <check@[127.0.0.1]>: domain
literals not allowed`). The servers:

{versions}
{problems}
Every server was configured the same way, as a small MX would be: listen on
127.0.0.1 only; accept mail for `user@bench.test` and for `postmaster` at
`bench.test` and at its own host name (`<server>.bench.test`, the name in its
greeting) into a Maildir in a temporary directory, and refuse every other
recipient; relay nothing. Postfix gets an empty `mynetworks`: by default it
trusts its own host and would relay for a client on 127.0.0.1. aiosmtpd is the
exception: a plain handler that writes each message to a file and accepts any
recipient (see `open-relay` below). No TLS certificate, so no STARTTLS
anywhere. All other settings are the defaults of each package; the exact
configurations are written by `benchmarks/conformance.py` and
`benchmarks/mtas.py` (`--keep` keeps them). The column "Postfix, strict" is the
same Postfix with the three settings that its own non-passes point to: it shows
which of Postfix's verdicts are defaults chosen on purpose.

## The table

Verdicts as `mailwright check --json` gave them: pass, fail, warn, skip (not
advertised, so not tested), error (no answer in time or the connection lost).

{table}

## Where a server does not pass

For each check that a server failed or warned on: whether it is a real
deviation from the RFC or a deliberate choice, with the exchange that shows it
(`C:` what the check sent, `S:` what the server answered).

{findings}

## How to reproduce

As root on Debian 12 (or Ubuntu), from the repository:

```sh
python3 -m pip install -e .
python3 benchmarks/conformance.py --install   # first time: Postfix (apt-get install),
                                              # Exim and OpenSMTPD (apt-get download +
                                              # dpkg -x into ~/.cache/mailwright-bench),
                                              # aiosmtpd (a private venv)
python3 benchmarks/conformance.py             # about a minute; rewrites this page
```

- `--servers postfix,mailwright` checks a subset; `--smoke-only` only proves
  the lab (one message to each server, no check); `--doc -` prints the page
  instead of writing it; `--keep` keeps the servers' directories (configs,
  logs, Maildirs).
- The raw reports are saved as JSON (the path is printed);
  `--doc-from FILE.json` rewrites this page from them without running any
  server, for instance after editing the notes in
  `benchmarks/conformance_notes.toml`.
- Nothing is installed that conflicts with Postfix: Exim and OpenSMTPD run from
  the unpacked packages in a private mount namespace (their system users and
  OpenSMTPD's /var paths exist only inside it; see `benchmarks/mtas.py`).
- Every server listens on 127.0.0.1 only and is stopped at the end, also on
  error or Ctrl-C.
"""


# ------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--servers",
        default=",".join(SERVER_KEYS),
        help=f"comma-separated subset of {','.join(SERVER_KEYS)}",
    )
    parser.add_argument(
        "--install",
        action="store_true",
        help="fetch what is missing: Postfix (apt-get install), Exim and OpenSMTPD "
        "(apt-get download + dpkg -x into the cache); root",
    )
    parser.add_argument("--smoke-only", action="store_true", help="prove the lab; no check")
    parser.add_argument(
        "--timeout", type=float, default=CHECK_TIMEOUT, help="mailwright check --timeout"
    )
    parser.add_argument("--doc", default=str(DOC), help="where to write the page ('-': print it)")
    parser.add_argument("--results", type=Path, help="where to save the raw JSON reports")
    parser.add_argument("--doc-from", type=Path, metavar="JSON", help="rewrite the page only")
    parser.add_argument("--keep", action="store_true", help="keep the servers' directories")
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()), help="for the servers"
    )
    args = parser.parse_args(argv)
    args.servers = [s for s in args.servers.split(",") if s]
    if unknown := [s for s in args.servers if s not in SERVER_KEYS]:
        parser.error(f"unknown server {unknown[0]!r}; choose from {', '.join(SERVER_KEYS)}")
    return args


def check_dependencies(args: argparse.Namespace) -> None:
    """What is missing is fetched with --install, or named with the way to get it."""
    if not deps.is_root():
        raise deps.MissingTool("run as root: Postfix's master and the mount namespaces need it")
    postfix = any(k.startswith("postfix") for k in args.servers)
    if postfix and (missing := deps.missing_postfix_tools()):
        if not args.install:
            raise deps.MissingTool(f"{', '.join(missing)} not found; run with --install")
        deps.install_postfix()
    wanted = [UNPACKED[k].package for k in args.servers if k in UNPACKED]
    if missing_packages := [p for p in wanted if deps.unpacked_version(p) is None]:
        if not args.install:
            raise deps.MissingTool(f"{', '.join(missing_packages)} not unpacked; use --install")
        deps.apt_update()
        for package in missing_packages:
            print(f"unpacking {package} (apt-get download, dpkg -x) ...", flush=True)
            deps.unpack_debian_package(package)
    if "aiosmtpd" in args.servers:
        deps.venv_python()


def write_doc(outcomes: list[Outcome], date: str, target: str) -> None:
    text = render(outcomes, date, load_notes())
    if target == "-":
        sys.stdout.write(text)
    else:
        Path(target).write_text(text)
        print(f"wrote {target}", file=sys.stderr)


def rewrite_doc(results: Path, target: str) -> None:
    """The page again from saved reports: after editing the notes, no server needed."""
    saved = json.loads(results.read_text())
    write_doc([Outcome(**o) for o in saved["outcomes"]], saved["date"], target)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.doc_from:
        rewrite_doc(args.doc_from, args.doc)
        return 0
    try:
        check_dependencies(args)
    except (deps.MissingTool, subprocess.CalledProcessError) as exc:
        print(f"conformance: {exc}", file=sys.stderr)
        return 2
    # SIGTERM ends the run like Ctrl-C, through the finally below.
    signal.signal(signal.SIGTERM, _interrupt)
    os.environ.update(PYTHONPATH=check_env()["PYTHONPATH"])  # the mailwright server too
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lab = Lab(args.workdir, args.keep)
    outcomes: list[Outcome] = []
    started = time.monotonic()
    try:
        for key in args.servers:
            outcomes.append(examine(lab, key, args))
    except KeyboardInterrupt:
        print("interrupted; stopping servers", file=sys.stderr)
        return 130
    finally:
        lab.close()
    results = args.results or Path(tempfile.mkdtemp(prefix="mailwright-conformance-")) / "all.json"
    results.write_text(
        json.dumps({"date": date, "outcomes": [asdict(o) for o in outcomes]}, indent=2) + "\n"
    )
    print(f"raw reports in {results} ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    if not args.smoke_only:
        write_doc(outcomes, date, args.doc)
    return 1 if any(o.error for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
