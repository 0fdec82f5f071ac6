"""Checks of the addresses a server accepts: the null sender, postmaster, relaying, VRFY, EXPN."""

from __future__ import annotations

from typing import Final

from mailwright.check.context import CheckContext
from mailwright.check.model import Finding, failed, passed, warned
from mailwright.check.steps import described, mail_line, rcpt_line, start_transaction
from mailwright.client import ConnectionLost
from mailwright.protocol.reply import Reply

#: A domain that is nobody's to relay to: reserved for examples (RFC 2606), with a null MX.
OUTSIDE_DOMAIN: Final = "example.com"
#: An address no mail can reach, for the address-literal trick (TEST-NET-1, RFC 5737).
OUTSIDE_IP: Final = "192.0.2.1"
#: The local part of the relay tricks' recipient.
RELAY_USER: Final = "relaytest"


async def null_sender(ctx: CheckContext) -> Finding:
    """``MAIL FROM:<>`` (the null reverse-path) is accepted.

    RFC 5321 4.5.5: delivery status notifications are sent from the null
    sender so that they can never bounce back in a loop; a server refusing
    it refuses every bounce meant for its users.
    """
    async with ctx.session() as client:
        reply = await client.send_line(mail_line(None))
        if reply.is_positive:
            await client.send_line("RSET")
    if reply.code == 250:
        return passed("MAIL FROM:<> got 250")
    return failed(f"MAIL FROM:<> got {described(reply)}: bounces to this server are refused", reply)


async def postmaster(ctx: CheckContext) -> Finding:
    """``RCPT TO:<postmaster>`` and ``<postmaster@domain>`` are accepted.

    RFC 5321 4.5.1: every server must accept mail for postmaster, with or
    without a domain, so problems with it can always be reported to someone.
    """
    addresses = ("postmaster", f"postmaster@{ctx.facts.domain}")
    refused: list[tuple[str, Reply]] = []
    async with ctx.session() as client:
        await start_transaction(client, ctx)
        for address in addresses:
            reply = await client.send_line(rcpt_line(address))
            if reply.code not in (250, 251):
                refused.append((address, reply))
        await client.send_line("RSET")
    if not refused:
        return passed(f"<{addresses[0]}> and <{addresses[1]}> were accepted")
    address, reply = refused[0]
    return failed(f"RCPT TO:<{address}> got {described(reply)}", reply)


def relay_tricks(domain: str) -> tuple[tuple[str, str], ...]:
    """(name, recipient) pairs that try to make ``domain``'s server relay to another domain.

    The classic forms from open-relay test suites: plain, the percent hack,
    quoted local parts, source routes (RFC 5321 C), bang paths, address
    literals, a trailing dot, mixed case.  Every one must be refused to an
    unauthenticated client.
    """
    out, user = OUTSIDE_DOMAIN, RELAY_USER
    return (
        ("outside domain", f"{user}@{out}"),
        ("percent hack", f"{user}%{out}@{domain}"),
        ("quoted local part", f'"{user}@{out}"@{domain}'),
        ("source route", f"@{domain}:{user}@{out}"),
        ("double @", f"{user}@{out}@{domain}"),
        ("IP literal", f"{user}@[{OUTSIDE_IP}]"),
        ("trailing dot", f"{user}@{out}."),
        ("mixed case", f"{user}@{out.upper()[:4]}{out[4:]}"),
        ("bang path", f"{out}!{user}@{domain}"),
        ("quoted percent hack", f'"{user}%{out}"@{domain}'),
        ("percent hack, no domain", f"{user}%{out}"),
        ("bang path, quoted", f'"{out}!{user}"@{domain}'),
    )


async def open_relay(ctx: CheckContext) -> Finding:
    """Mail for other domains is refused to an unauthenticated client, however it is dressed up.

    RFC 5321 7.1 and RFC 2505 2: an open relay forwards anyone's mail anywhere,
    spam and forged mail included, and gets the server blocklisted.  Each
    trick is tried twice: from our sender and from the null sender (which
    bounces use).  Nothing is sent: every transaction ends with RSET.  A
    server that hangs up on a trick has not relayed it; the tricks left are
    tried on a new connection.
    """
    tricks = relay_tricks(ctx.facts.domain)
    accepted: list[tuple[str, str, Reply, int]] = []
    dropped: list[str] = []
    for sender in (ctx.sender, None):
        # A connection each: servers count refused recipients and close after a few dozen.
        left = list(tricks)
        while left:
            async with ctx.session() as client:
                mail = await client.send_line(mail_line(sender))
                if not mail.is_positive:
                    break
                while left:
                    name, address = left.pop(0)
                    start = ctx.position
                    try:
                        reply = await client.send_line(rcpt_line(address))
                    except ConnectionLost:
                        client.abandoned = True
                        dropped.append(name)
                        break
                    if reply.code in (250, 251):
                        accepted.append((name, address, reply, start))
                else:
                    await client.send_line("RSET")
    if accepted:
        name, address, reply, start = accepted[0]
        names = ", ".join(dict.fromkeys(n for n, _, _, _ in accepted))
        return failed(
            f"relaying accepted: {name} <{address}> got {reply.code} (all: {names})",
            reply,
            evidence=start,
        )
    if dropped:
        closed = ", ".join(dict.fromkeys(dropped))
        return passed(
            f"all {len(tricks)} relay tricks were refused (the server hung up on: {closed})"
        )
    return passed(f"all {len(tricks)} relay tricks were refused")


async def _harvest(ctx: CheckContext, verb: str) -> Finding:
    async with ctx.session() as client:
        reply = await client.send_line(f"{verb} postmaster")
    if reply.code in (252, 502, 550):
        return passed(f"{verb} postmaster got {reply.code}")
    if reply.code in (250, 251):
        return warned(f"{verb} gives out mailboxes: {described(reply)}", reply)
    return passed(f"{verb} postmaster got {reply.code}: no mailbox given out")


async def vrfy(ctx: CheckContext) -> Finding:
    """VRFY does not confirm mailboxes (252, 502 or 550).

    RFC 5321 7.3: VRFY lets anyone test addresses one by one, which spammers
    use to harvest them; 252 (cannot verify, will try delivery) is the safe answer.
    """
    return await _harvest(ctx, "VRFY")


async def expn(ctx: CheckContext) -> Finding:
    """EXPN does not list the members of a mailing list or alias (252, 502 or 550).

    RFC 5321 7.3: EXPN hands out every address on a list to whoever asks.
    """
    return await _harvest(ctx, "EXPN")
