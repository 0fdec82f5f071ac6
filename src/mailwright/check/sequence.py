"""Checks of command order (RFC 5321 4.1.4, 3.3): each command only where it belongs.

A server that accepts commands out of order lets a confused or malicious
client build transactions nobody intended; the answer RFC 5321 4.1.4 gives
for a command in the wrong place is 503 (bad sequence of commands).
"""

from __future__ import annotations

from mailwright.check.context import CheckContext
from mailwright.check.model import Finding, failed, passed, warned
from mailwright.check.steps import described, mail_line, rcpt_line, start_transaction


async def mail_before_helo(ctx: CheckContext) -> Finding:
    """MAIL before EHLO or HELO is refused with 503.

    RFC 5321 4.1.4: a session must open with EHLO or HELO, so the server
    knows who claims to be talking before any mail is accepted; many servers
    are lenient here, which is why acceptance is a warning, not a failure.
    """
    async with ctx.session(hello=False) as client:
        reply = await client.send_line(mail_line(ctx.sender))
        if reply.code == 250:
            await client.send_line("RSET")
    if reply.code == 503:
        return passed("MAIL before EHLO got 503")
    if reply.is_positive:
        return warned(f"MAIL before EHLO was accepted: {described(reply)}", reply)
    return failed(f"MAIL before EHLO got {described(reply)}, not 503", reply)


async def rcpt_before_mail(ctx: CheckContext) -> Finding:
    """RCPT before MAIL is refused with 503: a recipient needs a transaction to belong to."""
    async with ctx.session() as client:
        reply = await client.send_line(rcpt_line(ctx.recipient))
    if reply.code == 503:
        return passed("RCPT before MAIL got 503")
    return failed(f"RCPT before MAIL got {described(reply)}, not 503", reply)


async def data_before_rcpt(ctx: CheckContext) -> Finding:
    """DATA with no accepted recipient is refused with 503 or 554.

    RFC 5321 3.3: with no valid recipient there is nobody to deliver to;
    503 (bad sequence) and 554 (no valid recipients) are both allowed.  A 354
    here would take a message for nobody.
    """
    async with ctx.session() as client:
        await start_transaction(client, ctx)
        reply = await client.send_line("DATA")
        if reply.code == 354:
            client.abandoned = True  # inside a body: close without ending it
    if reply.code in (503, 554):
        return passed(f"DATA without recipients got {reply.code}")
    return failed(f"DATA without recipients got {described(reply)}, not 503 or 554", reply)


async def mail_twice(ctx: CheckContext) -> Finding:
    """A second MAIL inside a transaction is refused with 503.

    RFC 5321 4.1.4: MAIL starts a transaction and may not be sent again
    until it ends (end of data or RSET); accepting it silently mixes two
    senders' envelopes.
    """
    async with ctx.session() as client:
        await start_transaction(client, ctx)
        reply = await client.send_line(mail_line(ctx.sender))
        await client.send_line("RSET")
    if reply.code == 503:
        return passed("a second MAIL got 503")
    return failed(f"a second MAIL got {described(reply)}, not 503", reply)


async def rset_clears(ctx: CheckContext) -> Finding:
    """RSET is answered 250 and ends the transaction, so a RCPT after it gets 503.

    RFC 5321 4.1.1.5: RSET discards the sender, the recipients and any data;
    a client relies on it to start over cleanly on the same connection.
    """
    async with ctx.session() as client:
        await start_transaction(client, ctx)
        rset = await client.send_line("RSET")
        rcpt = await client.send_line(rcpt_line(ctx.recipient))
        if rcpt.is_positive:
            await client.send_line("RSET")
    if rset.code != 250:
        return failed(f"RSET got {described(rset)}, not 250", rset)
    if rcpt.code == 503:
        return passed("RSET got 250 and a RCPT after it got 503")
    return failed(f"after RSET, RCPT got {described(rcpt)}: the transaction was not cleared", rcpt)
