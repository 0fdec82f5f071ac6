"""``mailwright check`` against mailwright itself and against servers broken on purpose.

mailwright must pass every check (issue 15: the tool's own server is its
first reference).  The broken servers are small asyncio servers on loopback,
each with one defect, and each defect must come out as a ``fail`` with the
right id; hostile ones (silent, dripping, flooding) must give ``error`` or
exit status 3, never a hang.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from mailwright.check import CHECK_IDS
from mailwright.check.basics import software_version
from tests.cli.conftest import ToolRun, address
from tests.helpers import BASE_CONFIG, RunningServer, maildir_messages, wait_for
from tests.peers import Tarpit
from tests.server.test_tls_auth import TLS_CONFIG, write_pems

Tool = Callable[..., ToolRun]
ALICE = "alice@example.test"
SUMMARY = re.compile(r"^(\d+) pass, (\d+) fail, (\d+) warn, (\d+) skip, (\d+) error$")
#: Short waits: the hostile servers below make the tool wait this long, and no longer.
HOSTILE_TIMEOUT = "1"


def check(tool: Tool, target: str, *args: str) -> ToolRun:
    return tool("check", target, *args)


def report(run: ToolRun) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(run.out)
    return data


def verdicts(data: dict[str, Any]) -> dict[str, str]:
    return {entry["id"]: entry["verdict"] for entry in data["checks"]}


def assert_json_shape(data: dict[str, Any]) -> None:
    """Issue 15's shape: target, checks (id, verdict, summary, rfc, transcript,
    explanation), counts that add up."""
    assert set(data) == {"target", "checks", "counts"}
    assert isinstance(data["target"], str)
    for entry in data["checks"]:
        assert set(entry) == {"id", "verdict", "summary", "rfc", "transcript", "explanation"}
        assert entry["id"] in CHECK_IDS
        assert entry["verdict"] in ("pass", "fail", "warn", "skip", "error")
        assert entry["summary"] and isinstance(entry["summary"], str)
        assert entry["rfc"].startswith("RFC ")
        for line in entry["transcript"]:
            assert line[0] in ("C", "S") and isinstance(line[1], str) and len(line) == 2
        assert entry["explanation"] is None or isinstance(entry["explanation"], str)
    counted = {verdict: 0 for verdict in ("pass", "fail", "warn", "skip", "error")}
    for entry in data["checks"]:
        counted[entry["verdict"]] += 1
    assert data["counts"] == counted


# ------------------------------------------------------------------ mailwright itself


@pytest.fixture
def tls_server(
    server_factory: Callable[..., RunningServer], tmp_path: Path, ca: trustme.CA
) -> RunningServer:
    """mailwright with STARTTLS on port 25 and implicit TLS for submission, so every check runs."""
    write_pems(ca, tmp_path)
    return server_factory(
        base=TLS_CONFIG.replace("[smtp]\n", "[smtp]\nmax_message_size = 100000\n")
    )


def test_mailwright_passes_every_check(tls_server: RunningServer, tool: Tool) -> None:
    target = address(tls_server.host, tls_server.port)
    run = check(tool, target, "--to", ALICE, "--deliver", "--json")
    data = report(run)
    assert_json_shape(data)
    assert [entry["id"] for entry in data["checks"]] == list(CHECK_IDS)
    assert verdicts(data) == {check_id: "pass" for check_id in CHECK_IDS}, run.out
    assert run.status == 0
    assert data["target"] == target
    size = next(entry for entry in data["checks"] if entry["id"] == "size")
    assert "SIZE=100001" in size["summary"]
    # The only message delivered is end-of-data's; the smuggling ones were refused whole
    # (each got its 554 before the next check began, so none can still be on its way).
    wait_for(lambda: maildir_messages(tls_server.data_dir, ALICE))
    delivered = maildir_messages(tls_server.data_dir, ALICE)
    assert len(delivered) == 1
    assert b"Subject: mailwright check: conformance test (end of data)" in delivered[0]


def test_inside_starttls_and_implicit_tls_every_check_passes(
    tls_server: RunningServer, tool: Tool
) -> None:
    target = address(tls_server.host, tls_server.port)
    starttls = report(check(tool, target, "--to", ALICE, "--starttls", "--json"))
    assert set(verdicts(starttls).values()) == {"pass", "skip"}, starttls
    assert verdicts(starttls)["starttls"] == "pass"
    assert tls_server.app is not None
    implicit = tls_server.app.addresses[-1]
    run = check(tool, address(*implicit), "--to", ALICE, "--tls", "--json", "--only",
                "greeting,ehlo,unknown-command,starttls,auth-plaintext")  # fmt: skip
    assert run.status == 0, run.out
    assert verdicts(report(run)) == {
        "greeting": "pass",
        "ehlo": "pass",
        "unknown-command": "pass",
        "starttls": "skip",  # TLS from the first byte: nothing to upgrade
        "auth-plaintext": "skip",
    }


def test_without_deliver_nothing_is_delivered_and_the_report_reads(
    server: RunningServer, tool: Tool
) -> None:
    run = check(tool, address(server.host, server.port), "--to", ALICE)
    assert run.status == 0, run.out
    lines = run.lines
    assert lines[0] == f"mailwright check {server.host}:{server.port}"
    summary = SUMMARY.match(lines[-1])
    assert summary is not None, lines[-1]
    assert summary.group(2) == summary.group(5) == "0"  # no fail, no error
    assert "skip  smuggling          skipped without --deliver: it sends a message" in lines
    assert "skip  end-of-data        skipped without --deliver: it sends a message" in lines
    rset = lines.index("pass  rset-clears        RSET got 250 and a RCPT after it got 503")
    assert lines[rset + 1 : rset + 7] == [
        "    C: MAIL FROM:<check@client.test>",
        "    S: 250 2.1.0 Ok",
        "    C: RSET",
        "    S: 250 2.0.0 Ok: transaction cleared",
        f"    C: RCPT TO:<{ALICE}>",
        "    S: 503 5.5.1 Bad sequence of commands: send MAIL FROM first",
    ]
    # The pipelined DATA got 354, and the connection was closed with no body sent.
    assert "pass  pipelining         4 pipelined commands got 4 replies in order: " \
        "250, 250, 250, 354" in lines  # fmt: skip
    assert maildir_messages(server.data_dir, ALICE) == []


def test_to_defaults_to_postmaster_at_the_greeting_domain(
    server_factory: Callable[..., RunningServer], tool: Tool
) -> None:
    """HOST is an IP address: the domain is the one the 220 greeting names."""
    server = server_factory(
        base=BASE_CONFIG.replace(
            'local = ["example.test"]', 'local = ["example.test", "mx.example.test"]'
        )
    )
    run = check(tool, address(server.host, server.port), "--json", "--only", "postmaster")
    assert run.status == 0, run.out
    transcript = report(run)["checks"][0]["transcript"]
    assert ["C", "RCPT TO:<postmaster@mx.example.test>"] in transcript


# ------------------------------------------------------------------ servers broken on purpose

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class LoopbackSmtp:
    """An asyncio server on 127.0.0.1 in a thread of its own; ``handler`` serves each client."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._loop = asyncio.new_event_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._serve, "127.0.0.1", 0)
            )
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        self.host, self.port = self._server.sockets[0].getsockname()[:2]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handler(reader, writer)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass  # the client hung up: how these sessions end
        finally:
            self._tasks.discard(task)
            writer.close()

    def stop(self) -> None:
        async def shutdown() -> None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def fake_smtp() -> Iterator[Callable[[Handler], LoopbackSmtp]]:
    servers: list[LoopbackSmtp] = []

    def start(handler: Handler) -> LoopbackSmtp:
        server = LoopbackSmtp(handler)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


async def reply(writer: asyncio.StreamWriter, *lines: str) -> None:
    writer.write("".join(line + "\r\n" for line in lines).encode())
    await writer.drain()


async def yes_to_everything(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """250 to every line, QUIT included."""
    await reply(writer, "220 yes.test ESMTP")
    while await reader.readline():
        await reply(writer, "250 ok")


Special = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def simple_smtp(
    *,
    relay: bool = False,
    data_end: bytes = rb"\r\n\.\r\n",
    special: dict[str, Special] | None = None,
    tls: ssl.SSLContext | None = None,
    lazy: bool = False,
    banner: str = "fake.test ESMTP",
    extra: tuple[str, ...] = (),
    esmtp: bool = True,
    max_line: int | None = None,
    hang_up_on: bytes | None = None,
) -> Handler:
    """A small SMTP server, right enough for the checks aimed at it, with knobs for defects.

    ``relay``: every recipient accepted (else only postmaster); ``data_end``: the regular expression that
    ends DATA; ``lazy``: the reply to the end of data waits for the client's next bytes;
    ``special``: a handler taking over for a verb; ``tls``: STARTTLS offered, done the
    naive asyncio way (what was read before it stays in the reader's buffer);
    ``banner``: the greeting's text; ``extra``: more extensions; ``esmtp`` False: EHLO
    refused; ``max_line``: longer lines are cut and each piece run as a command;
    ``hang_up_on``: a line containing it closes the connection.
    """
    extensions = ["PIPELINING", "SIZE 1000", *extra] + (["STARTTLS"] if tls else [])

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reply(writer, f"220 {banner}")
        mail, recipients = False, 0
        cut: list[bytes] = []  # the pieces of a line over max_line, run one by one
        while line := cut.pop(0) if cut else await reader.readline():
            if hang_up_on is not None and hang_up_on in line:
                return
            if max_line is not None and len(line) > max_line:
                cut = [line[i : i + max_line] for i in range(0, len(line), max_line)]
                continue
            command = line.rstrip(b"\r\n").decode("utf-8", "replace")
            verb = command[:8].split(" ")[0].upper()
            if special and verb in special:
                await special[verb](reader, writer)
            elif verb == "EHLO" and not esmtp:
                await reply(writer, "502 HELO only")
            elif verb == "EHLO":
                await reply(writer, "250-fake.test", *[f"250-{e}" for e in extensions[:-1]],
                            f"250 {extensions[-1]}")  # fmt: skip
            elif verb == "MAIL":
                mail = not mail
                await reply(writer, "250 ok" if mail else "503 nested MAIL")
            elif verb == "RCPT":
                local = command.lower().endswith(("<postmaster@fake.test>", "<postmaster>"))
                ok = mail and (relay or local)
                recipients += ok
                await reply(writer, "250 ok" if ok else "503 no MAIL" if not mail else "550 no")
            elif verb == "DATA" and recipients:
                await reply(writer, "354 go on")
                await read_body(reader, data_end)
                mail, recipients = False, 0
                if lazy:  # answer only once more bytes come, and run them as commands
                    after = await reader.read(4096)
                    await reply(writer, "250 queued", *["500 unknown"] * after.count(b"\n"))
                else:
                    await reply(writer, "250 queued")
            elif verb == "STARTTLS" and tls is not None:
                await reply(writer, "220 go ahead")
                await writer.start_tls(tls)
            elif verb in ("RSET", "NOOP", "HELO"):
                mail, recipients = (False, 0) if verb == "RSET" else (mail, recipients)
                await reply(writer, "250 ok")
            elif verb == "QUIT":
                await reply(writer, "221 bye")
                return
            else:
                await reply(writer, "500 unknown" if verb != "DATA" else "503 no RCPT")

    return handler


async def read_body(reader: asyncio.StreamReader, end: bytes) -> None:
    body = b"\r\n"  # the end marker may follow DATA's line directly
    while not re.search(end, body):
        chunk = await reader.read(4096)
        if not chunk:
            raise ConnectionError("client closed in DATA")
        body += chunk


def test_a_server_that_says_yes_to_everything_fails_the_order_and_syntax_checks(
    fake_smtp: Callable[[Handler], LoopbackSmtp], tool: Tool
) -> None:
    fake = fake_smtp(yes_to_everything)
    run = check(tool, address(fake.host, fake.port), "--to", "postmaster@yes.test", "--json")
    assert run.status == 1
    data = report(run)
    assert_json_shape(data)
    found = verdicts(data)
    for check_id in ("rcpt-before-mail", "data-before-rcpt", "mail-twice", "rset-clears",
                     "unknown-command", "syntax-mail", "unknown-parameter", "open-relay"):  # fmt: skip
        assert found[check_id] == "fail", check_id
    for check_id in ("mail-before-helo", "vrfy", "expn"):
        assert found[check_id] == "warn", check_id
    assert found["pipelining"] == found["size"] == found["starttls"] == "skip"
    relay = next(entry for entry in data["checks"] if entry["id"] == "open-relay")
    assert relay["summary"].startswith("relaying accepted: outside domain <relaytest@example.com>")
    assert relay["explanation"].startswith("250 [2xx ")
    assert relay["rfc"] == "RFC 5321 7.1, RFC 2505 2"


def test_failures_are_explained_in_the_human_report(
    fake_smtp: Callable[[Handler], LoopbackSmtp], tool: Tool
) -> None:
    fake = fake_smtp(yes_to_everything)
    run = check(tool, address(fake.host, fake.port), "--only", "mail-twice")
    assert run.status == 1
    assert run.lines[1:] == [
        "fail  mail-twice         a second MAIL got 250 ok, not 503",
        "    C: MAIL FROM:<check@client.test>",
        "    S: 250 ok",
        "    C: MAIL FROM:<check@client.test>",
        "    S: 250 ok",
        "    C: RSET",
        "    S: 250 ok",
        "    RFC 5321 4.1.4: A second MAIL inside a transaction is refused with 503.",
        "    250 [2xx Positive Completion] OK: the command was accepted and done. "
        "The server accepted where the rule above asks for a refusal.",
        "0 pass, 1 fail, 0 warn, 0 skip, 0 error",
    ]


async def refuses_our_sender(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Every MAIL refused with 501, as Exim refuses an address literal sender."""
    await reply(writer, "501 <check@[127.0.0.1]>: domain literals not allowed")


def test_a_refused_sender_is_could_not_test_never_a_finding_on_the_parameter(
    fake_smtp: Callable[[Handler], LoopbackSmtp], tool: Tool
) -> None:
    """size and unknown-parameter send our sender with a parameter; when the server refuses
    the sender itself, the parameter was never judged: error, not fail or warn."""
    fake = fake_smtp(simple_smtp(special={"MAIL": refuses_our_sender}))
    run = check(
        tool, address(fake.host, fake.port), "--only", "size,unknown-parameter", "--json"
    )
    data = report(run)
    assert verdicts(data) == {"size": "error", "unknown-parameter": "error"}
    for entry in data["checks"]:
        assert entry["summary"].startswith("could not test: MAIL FROM:<")
        assert entry["summary"].endswith("(try --from)")


def test_explanations_in_chinese(fake_smtp: Callable[[Handler], LoopbackSmtp], tool: Tool) -> None:
    fake = fake_smtp(yes_to_everything)
    run = check(tool, address(fake.host, fake.port), "--only", "unknown-command", "--lang", "zh")
    assert run.status == 1
    explanation = run.lines[-2]
    assert explanation.startswith("    250 [2xx ")
    assert explanation.endswith("按上述规则应当拒绝，服务器却接受了。")


def test_an_open_relay_is_reported_with_the_trick(
    fake_smtp: Callable[[Handler], LoopbackSmtp], tool: Tool
) -> None:
    fake = fake_smtp(simple_smtp(relay=True))
    run = check(tool, address(fake.host, fake.port), "--to", "postmaster@fake.test",
                "--only", "open-relay,postmaster", "--json")  # fmt: skip
    assert run.status == 1
    found = report(run)["checks"]
    assert [(e["id"], e["verdict"]) for e in found] == [
        ("postmaster", "pass"),
        ("open-relay", "fail"),
    ]
    assert "(all: outside domain, percent hack," in found[1]["summary"]


def test_relay_tricks_go_on_after_the_server_hangs_up_on_one(
    fake_smtp: Callable[[Handler], LoopbackSmtp], tool: Tool
) -> None:
    fake = fake_smtp(simple_smtp(relay=True, hang_up_on=b"@example.com@"))
    run = check(tool, address(fake.host, fake.port), "--to", "postmaster@fake.test",
                "--only", "open-relay", "--json")  # fmt: skip
    assert run.status == 1
    (found,) = report(run)["checks"]
    assert found["verdict"] == "fail"
    # The tricks after "double @" were tried too, on a new connection.
    assert "IP literal" in found["summary"] and "double @" not in found["summary"]
    fake = fake_smtp(simple_smtp(hang_up_on=b"@example.com@"))
    run = check(tool, address(fake.host, fake.port), "--to", "postmaster@fake.test",
                "--only", "open-relay", "--json")  # fmt: skip
    assert run.status == 0, run.out
    (found,) = report(run)["checks"]
    assert found["summary"] == "all 12 relay tricks were refused (the server hung up on: double @)"


def test_a_server_ending_data_at_a_bare_lf_fails_smuggling(
    fake_smtp: Callable[[Handler], LoopbackSmtp], tool: Tool
) -> None:
    fake = fake_smtp(simple_smtp(data_end=rb"\r?\n\.\r?\n"))
    run = check(tool, address(fake.host, fake.port), "--to", "postmaster@fake.test",
                "--deliver", "--only", "smuggling,end-of-data", "--json")  # fmt: skip
    assert run.status == 1
    found = report(run)["checks"]
    assert [(e["id"], e["verdict"]) for e in found] == [
        ("smuggling", "fail"),
        ("end-of-data", "pass"),
    ]
    smuggling = found[0]
    assert smuggling["summary"] == "\\n.\\n ended the message: 250 queued before the real end"
    assert ["C", "<message text ending \\n.\\n>"] in smuggling["transcript"]


def test_a_late_reply_to_a_bare_lf_end_still_fails_smuggling(
    fake_smtp: Callable[[Handler], LoopbackSmtp], tool: Tool
) -> None:
    """The server ends at the fake ending but answers only when the real one comes: the
    NOOP after it then gets the answer to the real ending, read as a command."""
    fake = fake_smtp(simple_smtp(data_end=rb"\r?\n\.\r?\n", lazy=True))
    run = check(tool, address(fake.host, fake.port), "--to", "postmaster@fake.test",
                "--deliver", "--only", "smuggling", "--json")  # fmt: skip
    assert run.status == 1
    (smuggling,) = report(run)["checks"]
    assert smuggling["verdict"] == "fail"
    assert smuggling["summary"] == (
        "\\n.\\n ended the message: the real end was read as commands (NOOP got 500 unknown)"
    )


def test_a_server_that_cuts_long_lines_fails_line_too_long(
    fake_smtp: Callable[[Handler], LoopbackSmtp], tool: Tool
) -> None:
    fake = fake_smtp(simple_smtp(max_line=512))
    run = check(tool, address(fake.host, fake.port), "--only", "line-too-long", "--json")
    assert run.status == 1
    (found,) = report(run)["checks"]
    assert found["verdict"] == "fail"
    assert found["summary"] == (
        "the NOOP after the long line got 500 unknown: the server cut the line "
        "and answered its rest as another command"
    )


def test_helo_only_a_version_in_the_banner_and_auth_before_tls(
    fake_smtp: Callable[[Handler], LoopbackSmtp], tool: Tool
) -> None:
    helo_only = fake_smtp(simple_smtp(esmtp=False))
    run = check(tool, address(helo_only.host, helo_only.port), "--only", "ehlo,helo", "--json")
    assert run.status == 1
    assert verdicts(report(run)) == {"ehlo": "fail", "helo": "pass"}
    chatty = fake_smtp(simple_smtp(banner="fake.test ESMTP Exim 4.96", extra=("AUTH PLAIN",)))
    run = check(tool, address(chatty.host, chatty.port), "--only",
                "auth-plaintext,banner-version", "--json")  # fmt: skip
    assert run.status == 0  # warnings only
    found = report(run)["checks"]
    assert [(e["id"], e["verdict"]) for e in found] == [
        ("auth-plaintext", "warn"),
        ("banner-version", "warn"),
    ]
    assert found[1]["summary"] == "the banner names the software and its version: Exim 4.96"
    assert found[0]["transcript"] == [["S", "250 AUTH PLAIN"]]


async def hang_up_at_a_bare_line_ending(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """DATA whose body is read until a bare CR or LF, where the server closes without a word."""
    await reply(writer, "354 go on")
    body = b""
    while not re.search(rb"(?<!\r)\n|\r(?!\n)", body):
        body += await reader.read(4096)
    raise ConnectionResetError("bare line ending")


def test_hanging_up_at_a_bare_line_ending_passes_smuggling(
    fake_smtp: Callable[[Handler], LoopbackSmtp], tool: Tool
) -> None:
    fake = fake_smtp(simple_smtp(special={"DATA": hang_up_at_a_bare_line_ending}))
    run = check(tool, address(fake.host, fake.port), "--to", "postmaster@fake.test",
                "--deliver", "--only", "smuggling", "--json")  # fmt: skip
    assert run.status == 0, run.out
    (found,) = report(run)["checks"]
    assert found["summary"].startswith(
        "no fake ending ended a message (\\n.\\n: the server hung up without a reply; "
    )


def test_a_correct_small_server_passes_smuggling_and_pipelining(
    fake_smtp: Callable[[Handler], LoopbackSmtp], tool: Tool
) -> None:
    fake = fake_smtp(simple_smtp())
    run = check(tool, address(fake.host, fake.port), "--to", "postmaster@fake.test",
                "--deliver", "--only", "smuggling,pipelining", "--json")  # fmt: skip
    assert run.status == 0, run.out
    assert verdicts(report(run)) == {"smuggling": "pass", "pipelining": "pass"}


def test_a_server_running_commands_injected_before_tls_fails(
    fake_smtp: Callable[[Handler], LoopbackSmtp], tool: Tool, ca: trustme.CA
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("fake.test").configure_cert(context)
    fake = fake_smtp(simple_smtp(tls=context))
    run = check(tool, address(fake.host, fake.port), "--only", "starttls,starttls-injection",
                "--json")  # fmt: skip
    assert run.status == 1
    assert verdicts(report(run)) == {"starttls": "pass", "starttls-injection": "fail"}


@pytest.mark.parametrize(
    ("banner", "found"),
    [
        ("ESMTP Exim 4.96 Fri, 04 Dec 2026 16:58:30 +0000", "Exim 4.96"),
        ("ESMTP Sendmail 8.15.2/8.15.2; Fri, 4 Dec 2026", "Sendmail 8.15.2"),
        ("Python SMTP proxy version 0.3", "proxy version 0.3"),
        ("Hello 192.0.2.1 ESMTP Postfix/3.7.2", "Postfix/3.7.2"),
        ("ESMTP Postfix (Debian/GNU)", None),
        ("Hello client.test [192.0.2.1]", None),
        ("Hello 192.0.2.1", None),
        ("ESMTP mailwright", None),
    ],
)
def test_a_software_version_is_found_in_a_banner(banner: str, found: str | None) -> None:
    assert software_version(banner) == found


# ------------------------------------------------------------------ hostile servers


def test_a_server_that_never_greets_exits_3(tool: Tool) -> None:
    tarpit = Tarpit()
    try:
        run = check(tool, address(tarpit.host, tarpit.port), "--timeout", HOSTILE_TIMEOUT)
    finally:
        tarpit.stop()
    assert run.status == 3
    assert run.lines[1].startswith("error greeting           no complete answer in time")
    assert run.lines[-2] == "no session with the server: the other checks were not run"
    assert run.lines[-1] == "0 pass, 0 fail, 0 warn, 0 skip, 1 error"


def test_nobody_listening_exits_3(closed_port: int, tool: Tool) -> None:
    run = check(tool, f"127.0.0.1:{closed_port}", "--json")
    assert run.status == 3
    data = report(run)
    assert_json_shape(data)
    assert data["checks"][0]["summary"].startswith("cannot connect")


def test_the_exit_status_reaches_the_shell(closed_port: int, tool_process: Tool) -> None:
    run = tool_process("check", f"127.0.0.1:{closed_port}")
    assert run.status == 3
    assert run.lines[1].startswith("error greeting           cannot connect")


async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A reply that never ends: one byte at a time, slower than any timeout allows."""
    writer.write(b"500 ")
    while True:
        writer.write(b"x")
        await writer.drain()
        await asyncio.sleep(0.1)


async def endless_lines(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A reply of continuation lines that never ends."""
    while True:
        writer.write(b"500-again\r\n" * 100)
        await writer.drain()


async def endless_line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One reply line that never ends."""
    while True:
        writer.write(b"500 " + b"x" * 65536)
        await writer.drain()


@pytest.mark.parametrize(
    ("behaviour", "finding"),
    [
        (drip, "no complete answer in time after XYZZY"),
        (endless_lines, "the server broke the reply grammar after XYZZY: reply from"),
        (endless_line, "the server broke the reply grammar after XYZZY: reply from"),
    ],
)
def test_a_hostile_reply_is_an_error_and_the_run_goes_on(
    fake_smtp: Callable[[Handler], LoopbackSmtp], tool: Tool, behaviour: Special, finding: str
) -> None:
    fake = fake_smtp(simple_smtp(special={"XYZZY": behaviour}))
    run = check(tool, address(fake.host, fake.port), "--to", "postmaster@fake.test",
                "--timeout", HOSTILE_TIMEOUT, "--only", "unknown-command,null-sender", "--json")  # fmt: skip
    assert run.status == 1
    data = report(run)
    assert verdicts(data) == {"unknown-command": "error", "null-sender": "pass"}
    assert data["checks"][0]["summary"].startswith(finding)


# ------------------------------------------------------------------ the command line


@pytest.mark.parametrize(
    "args",
    [
        ("--only", "greeting,nonsense"),
        ("--starttls", "--tls"),
        ("--to", "not an address"),
        ("--timeout", "0"),
        ("--lang", "fr"),
    ],
)
def test_usage_errors_exit_2(tool: Tool, args: tuple[str, ...]) -> None:
    run = check(tool, "127.0.0.1:1", *args)
    assert run.status == 2
    assert "usage: mailwright check" in run.err
