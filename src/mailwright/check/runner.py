"""Running the checks: the first connection, then each check in turn, one connection at a time.

The first connection is the one every run needs: no connection, or a
greeting other than 220, ends the run there (exit status 3), with the
``greeting`` check saying why.  Otherwise it learns the facts the checks
share (``ServerFacts``) and each selected check runs with a ``CheckContext``
of its own.  Whatever a check meets that it does not handle (a timeout, a
closed connection, a malformed or endless reply) becomes its ``error``
verdict, with the last command and what was received before; the run goes on
with the next check, on a new connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import Sequence

from mailwright.check.context import (
    RUN_BUDGET,
    CheckContext,
    CheckPlan,
    ServerFacts,
    TlsStart,
    implicit_tls_context,
    new_client,
)
from mailwright.check.model import (
    Check,
    CheckError,
    CheckReport,
    CheckResult,
    Finding,
    TranscriptLine,
    errored,
    failed,
)
from mailwright.check.session import CheckClient
from mailwright.client import (
    Capabilities,
    CommandRefused,
    ConnectError,
    ConnectionLost,
    SmtpClientError,
    SmtpTimeout,
    TlsError,
    opportunistic_tls_context,
)
from mailwright.errors import MailwrightError, RemoteProtocolError
from mailwright.model import Address
from mailwright.protocol.reply import Reply
from mailwright.syntax import is_valid_domain

#: The local part of the default sender, ``check@<this host's name>``.
SENDER_LOCAL_PART = "check"


async def run_checks(plan: CheckPlan, checks: Sequence[Check]) -> CheckReport:
    """Run ``checks`` (in this order; those ``plan.only`` names) against the server.

    ``checks`` must hold the ``greeting`` check: when there is no session, it
    is the one result, whatever ``--only`` says.
    """
    run_deadline = asyncio.get_running_loop().time() + RUN_BUDGET * plan.timeout
    first = await _first_connection(plan, run_deadline)
    if not isinstance(first, ServerFacts):
        finding, transcript = first
        greeting = next(check for check in checks if check.id == "greeting")
        return CheckReport(
            plan.target, (CheckResult(greeting, finding, transcript),), reachable=False
        )
    results = []
    for check in checks:
        if plan.only is not None and check.id not in plan.only:
            continue
        results.append(await run_one(check, CheckContext(plan, first, run_deadline)))
    return CheckReport(plan.target, tuple(results))


async def run_one(check: Check, ctx: CheckContext) -> CheckResult:
    """One check; what it cannot handle becomes its ``error`` verdict."""
    if asyncio.get_running_loop().time() >= ctx.run_deadline:
        finding = errored(f"not run: the run's time limit ({RUN_BUDGET} x --timeout) was reached")
    else:
        try:
            finding = await check.run(ctx)
        except CheckError as exc:
            finding = errored(exc.summary, exc.reply)
        except MailwrightError as exc:  # the client's errors, and the core's
            finding = errored(failure_summary(exc, ctx.transcript))
    return CheckResult(check, finding, tuple(ctx.transcript))


def failure_summary(exc: Exception, transcript: Sequence[TranscriptLine]) -> str:
    """What went wrong, and after which command: the last thing seen says where it stopped."""
    last_sent = next((line for side, line in reversed(transcript) if side == "C"), None)
    where = f" after {_short(last_sent)}" if last_sent is not None else ""
    if isinstance(exc, SmtpTimeout):
        return f"no complete answer in time{where}: {exc}"
    if isinstance(exc, ConnectionLost):
        return f"the connection closed{where}: {exc}"
    if isinstance(exc, ConnectError):
        return f"cannot connect: {exc}"
    if isinstance(exc, TlsError):
        return f"TLS failed{where}: {exc}"
    if isinstance(exc, RemoteProtocolError):
        return f"the server broke the reply grammar{where}: {exc}"
    return f"{exc}{where}"


def _short(line: str, limit: int = 60) -> str:
    return line if len(line) <= limit else f"{line[:limit]}... ({len(line)} characters)"


# ------------------------------------------------------------ the first connection


async def _first_connection(
    plan: CheckPlan, run_deadline: float
) -> ServerFacts | tuple[Finding, tuple[TranscriptLine, ...]]:
    """Connect, greet, EHLO (and STARTTLS with ``--starttls``): the facts, or why not."""
    transcript: list[TranscriptLine] = []
    client = new_client(plan, run_deadline)
    client.transcript = transcript
    try:
        greeting = await client.open(
            plan.host, plan.port, implicit_tls=implicit_tls_context(plan), local_hostname=plan.helo
        )
        if greeting.code != 220:
            # RFC 5321 3.1: 554 (no service here) or 421 (not now): no session either way.
            finding = failed(f"the server offers no session: it greeted with {greeting}", greeting)
            return finding, tuple(transcript)
        hello_start = len(transcript)
        ehlo = await _try_hello(client)
        hello = tuple(transcript[hello_start:])
        plain = client.capabilities
        if plan.tls is TlsStart.STARTTLS and plain.starttls:
            with contextlib.suppress(CommandRefused):  # each check's own session says so
                await client.starttls(opportunistic_tls_context(), plan.host)
        return ServerFacts(
            greeting=greeting,
            hello=hello,
            ehlo=ehlo,
            plain_capabilities=plain if plan.tls is not TlsStart.IMPLICIT else Capabilities(),
            capabilities=client.capabilities,
            sender=plan.sender or default_sender(client),
            recipient=plan.recipient or default_recipient(plan.host, greeting),
        )
    except (SmtpClientError, RemoteProtocolError) as exc:
        finding = errored(failure_summary(exc, transcript))
        return finding, tuple(transcript)
    finally:
        client.transcript = None
        await client.quit()
        await client.close()


async def _try_hello(client: CheckClient) -> Reply | None:
    """EHLO (HELO when EHLO is unknown); None when both were refused: the ``ehlo`` check says so."""
    try:
        return await client.ehlo()
    except CommandRefused:
        return None


def default_sender(client: CheckClient) -> Address:
    """``check@<this host's name>`` (or an address literal of our end when it has no full name)."""
    return Address(SENDER_LOCAL_PART, client.local_hostname)


def default_recipient(host: str, greeting: Reply) -> Address:
    """``postmaster@HOST`` for a name; for an address, the domain the greeting names
    (RFC 5321 4.2: the 220 line starts with the server's name), else the address literal."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return Address("postmaster", host)
    words = greeting.lines[0].split() if greeting.lines else []
    if words and is_valid_domain(words[0]) and "." in words[0]:
        return Address("postmaster", words[0])
    return Address("postmaster", f"[IPv6:{ip}]" if ip.version == 6 else f"[{ip}]")
