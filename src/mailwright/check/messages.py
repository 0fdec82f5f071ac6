"""Checks that send a message, run only with ``--deliver``: where a message ends.

RFC 5321 4.1.1.4: the data ends with CRLF "." CRLF and nothing else.  A
server that also ends it at a bare LF or CR reads differently from the
servers before it on the path, and an attacker uses the difference to
smuggle a second, forged message inside the first (SMTP smuggling,
CVE-2023-51764 and kin).

Each message is small, has a Subject saying it is a conformance test from
``mailwright check``, and goes to ``--to``; at most five are sent in a run
(four smuggling variants, one normal message).
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from mailwright.check.context import CheckContext
from mailwright.check.model import CheckError, Finding, Verdict, failed, passed, skipped
from mailwright.check.session import CheckClient
from mailwright.check.steps import add_recipient, described, start_transaction
from mailwright.cli.message import complete_message
from mailwright.client import ConnectionLost, SmtpTimeout
from mailwright.protocol.reply import Reply

#: The fake endings ``smuggling`` tries, one message each: bare LF, bare CR, and the two halves.
FAKE_ENDINGS: Final = (b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n")
#: How long to wait, after a fake ending, for a reply that must not come (bounded by --timeout).
PREMATURE_REPLY_WAIT: Final = 1.0
_NOT_DELIVERED = "skipped without --deliver: it sends a message"


def conformance_message(ctx: CheckContext, purpose: str, text: bytes) -> bytes:
    """A small message whose Subject and text say what it is and who sent it."""
    subject = f"Subject: mailwright check: conformance test ({purpose})\r\n"
    intro = (
        b"This message was sent by `mailwright check`, a conformance test of this\r\n"
        b"mail server. It can be deleted.\r\n"
    )
    message, _ = complete_message(
        subject.encode("ascii") + b"\r\n" + intro + text,
        sender=ctx.sender,
        recipients=[ctx.recipient],
        now=datetime.now().astimezone(),
    )
    return message


def _escaped(ending: bytes) -> str:
    return ending.decode("ascii").replace("\r", "\\r").replace("\n", "\\n")


async def end_of_data(ctx: CheckContext) -> Finding:
    """A normal small message, ended with CRLF.CRLF, is accepted with 250.

    RFC 5321 4.1.1.4 and 6.1: the 250 after the data is the server taking
    responsibility for the message; it is what every sender waits for.
    """
    if not ctx.plan.deliver:
        return skipped(_NOT_DELIVERED)
    message = conformance_message(ctx, "end of data", b"Nothing else is in it.\r\n")
    async with ctx.session() as client:
        result = await client.send_transaction(ctx.sender, [ctx.recipient], message)
    end = result.end_of_data
    if end is None:
        refusal = result.data or (result.refused[0].reply if result.refused else result.mail)
        raise CheckError(f"could not test: the message was refused before DATA: {refusal}", refusal)
    if end.code == 250:
        return passed("a normal message got 250 after CRLF.CRLF")
    return failed(f"a normal message got {described(end)} at its end", end)


async def smuggling(ctx: CheckContext) -> Finding:
    """Only CRLF.CRLF ends a message: a bare LF or CR with a dot is not an end.

    RFC 5321 4.1.1.4 and 2.3.8 (CR and LF only as CRLF); SMTP smuggling,
    CVE-2023-51764.  For each fake ending, the check waits briefly for a
    reply that must not come, then sends the real ending and a NOOP: a 250
    before the real end, or a NOOP answered by something else (the real
    end read as commands), means the message ended early.  Refusing the
    bare line ending with a 5xx, or hanging up without a reply, is a pass.
    """
    if not ctx.plan.deliver:
        return skipped(_NOT_DELIVERED)
    findings = []
    for ending in FAKE_ENDINGS:
        finding = await _smuggle(ctx, ending)
        if finding.verdict is not Verdict.PASS:
            return finding  # no more messages once one shows the flaw
        findings.append(finding)
    outcomes = "; ".join(f.summary for f in findings)
    return passed(f"no fake ending ended a message ({outcomes})", evidence=findings[0].evidence)


async def _smuggle(ctx: CheckContext, ending: bytes) -> Finding:
    """One message whose text has ``ending`` in it, on a connection of its own."""
    shown = _escaped(ending)
    message = conformance_message(ctx, f"smuggling {shown}", b"Before the fake ending.")
    async with ctx.session() as client:
        await start_transaction(client, ctx)
        await add_recipient(client, ctx)
        start = ctx.position
        data = await client.send_line("DATA")
        if data.code != 354:
            raise CheckError(f"could not test: DATA got {data}", data)
        await client.write_raw(message + ending, f"<message text ending {shown}>")
        real_end = client.expect_reply(".")
        try:
            early = await _premature_reply(client, ctx)
        except ConnectionLost:
            # Closing without a reply accepts nothing: a blunt but safe way to refuse.
            client.abandoned = True
            return passed(f"{shown}: the server hung up without a reply", evidence=start)
        if early is not None:
            client.abandoned = True
            if early.is_permanent:
                return passed(f"{shown}: refused at once with {early.code}", evidence=start)
            return failed(
                f"{shown} ended the message: {described(early)} before the real end",
                early,
                evidence=start,
            )
        await client.write_raw(b"\r\n" + real_end, ".")
        end = await client.read_reply()
        if end.code != 250:
            client.abandoned = True  # a server refusing bare line endings may hang up now
            if end.is_permanent:
                return passed(f"{shown}: the message was refused ({end.code})", evidence=start)
            return failed(f"{shown}: the message got {described(end)}", end, evidence=start)
        after = await client.send_line("NOOP")
    if after.code != 250:
        return failed(
            f"{shown} ended the message: the real end was read as commands "
            f"(NOOP got {described(after)})",
            end,
            evidence=start,
        )
    return passed(f"{shown}: kept in the message", evidence=start)


async def _premature_reply(client: CheckClient, ctx: CheckContext) -> Reply | None:
    """A reply that came before the real end (there should be none), waiting a short while."""
    try:
        return await client.read_reply(min(PREMATURE_REPLY_WAIT, ctx.plan.timeout))
    except SmtpTimeout:
        return None
