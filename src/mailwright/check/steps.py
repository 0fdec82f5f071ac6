"""Steps several checks take before the rule they test: a transaction to test inside of.

When such a step is refused, the rule under test cannot be tried: the check
ends with ``error`` saying which step, and ``--from``/``--to`` are the usual
cure (a server may refuse our default sender or recipient).
"""

from __future__ import annotations

from mailwright.check.context import CheckContext
from mailwright.check.model import CheckError
from mailwright.check.session import CheckClient
from mailwright.model import Address
from mailwright.protocol.reply import Reply


def mail_line(sender: Address | None, *params: str) -> str:
    path = "" if sender is None else str(sender)
    return " ".join([f"MAIL FROM:<{path}>", *params])


def rcpt_line(recipient: Address | str) -> str:
    return f"RCPT TO:<{recipient}>"


async def start_transaction(client: CheckClient, ctx: CheckContext) -> Reply:
    """MAIL FROM with our sender, which must be accepted for the check to go on."""
    reply = await client.send_line(mail_line(ctx.sender))
    if reply.code != 250:
        raise CheckError(
            f"could not test: MAIL FROM:<{ctx.sender}> got {reply} (try --from)", reply
        )
    return reply


async def add_recipient(client: CheckClient, ctx: CheckContext) -> Reply:
    """RCPT TO with our recipient, which must be accepted for the check to go on."""
    reply = await client.send_line(rcpt_line(ctx.recipient))
    if reply.code not in (250, 251):
        raise CheckError(f"could not test: RCPT TO:<{ctx.recipient}> got {reply} (try --to)", reply)
    return reply


def described(reply: Reply) -> str:
    """A reply in a finding: its codes and first line, e.g. ``503 5.5.1 Bad sequence``."""
    codes = f"{reply.code} {reply.enhanced}" if reply.enhanced else str(reply.code)
    return f"{codes} {reply.lines[0] if reply.lines else ''}".rstrip()


async def plain_mail_accepted(client: CheckClient, ctx: CheckContext) -> None:
    """After a MAIL with a parameter under test was refused otherwise than the rule asks:
    the same MAIL without it must be accepted, or it was our sender the server refused,
    not the parameter, and the rule could not be tried (``CheckError``)."""
    await client.send_line("RSET")
    await start_transaction(client, ctx)
    await client.send_line("RSET")
