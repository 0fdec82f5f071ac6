"""Checks of the service extensions a server offers: PIPELINING, SIZE, STARTTLS, AUTH."""

from __future__ import annotations

from mailwright.check.context import CheckContext, TlsStart
from mailwright.check.model import CheckError, Finding, failed, passed, skipped, warned
from mailwright.check.steps import described, mail_line, plain_mail_accepted, rcpt_line
from mailwright.client import (
    CommandRefused,
    ConnectionLost,
    SmtpTimeout,
    opportunistic_tls_context,
)
from mailwright.protocol.reply import Reply

#: What DATA may be answered with in the pipelined group: 354, or 503/554 when no RCPT was
#: accepted.  Another reply there means the replies came out of order (RFC 2920 3.1).
_DATA_ANSWERS = frozenset({354, 503, 554})


def _rcpt_answer(reply: Reply) -> bool:
    return reply.code in (250, 251) or reply.code >= 400


async def pipelining(ctx: CheckContext) -> Finding:
    """With PIPELINING, MAIL, two RCPTs and DATA sent in one write get one reply each, in order.

    RFC 2920 3.1: a client that pipelines matches replies to commands by
    their order alone, so a reply missing, doubled or out of place makes it
    misread every reply after.  DATA's 354 is never followed by a body: the
    connection is closed, so nothing is delivered.
    """
    if not ctx.capabilities.pipelining:
        return skipped("PIPELINING is not offered")
    lines = [
        mail_line(ctx.sender),
        rcpt_line(ctx.recipient),
        rcpt_line(f"postmaster@{ctx.facts.domain}"),
        "DATA",
    ]
    replies: list[Reply] = []
    async with ctx.session() as client:
        client.abandoned = True  # DATA may get 354: close without a body, no QUIT
        await client.write_lines(lines)
        try:
            for _ in lines:
                replies.append(await client.read_reply())
        except SmtpTimeout:
            return failed(f"only {len(replies)} replies to {len(lines)} pipelined commands")
    mail, first, second, data = replies
    if mail.code >= 400:
        raise CheckError(f"could not test: MAIL FROM:<{ctx.sender}> got {mail} (try --from)", mail)
    if mail.code != 250:
        return failed(f"MAIL got {described(mail)}: the replies are out of order", mail)
    wrong = next((r for r in (first, second) if not _rcpt_answer(r)), None)
    if wrong is not None:
        return failed(f"a RCPT got {described(wrong)}: the replies are out of order", wrong)
    if data.code not in _DATA_ANSWERS:
        return failed(f"DATA got {described(data)}: the replies are out of order", data)
    return passed(
        f"4 pipelined commands got 4 replies in order: {mail.code}, "
        f"{first.code}, {second.code}, {data.code}"
    )


async def size(ctx: CheckContext) -> Finding:
    """With SIZE, a MAIL declaring more than the limit is refused with 552 (or 452).

    RFC 1870 6.1: refusing at MAIL saves sending the whole message only to
    have it refused at the end.
    """
    limit = ctx.capabilities.max_size
    if limit is None:
        return skipped("SIZE is not offered with a limit")
    async with ctx.session() as client:
        reply = await client.send_line(mail_line(ctx.sender, f"SIZE={limit + 1}"))
        if reply.is_positive:
            await client.send_line("RSET")
        elif reply.code not in (552, 452):
            await plain_mail_accepted(client, ctx)
    if reply.code in (552, 452):
        return passed(f"MAIL with SIZE={limit + 1} (limit {limit}) got {reply.code}")
    return failed(
        f"MAIL with SIZE={limit + 1} over the limit {limit} got {described(reply)}", reply
    )


def _starttls_unavailable(ctx: CheckContext) -> Finding | None:
    if ctx.plan.tls is TlsStart.IMPLICIT:
        return skipped("the connection is TLS from the first byte (--tls)")
    if not ctx.facts.plain_capabilities.starttls:
        return skipped("STARTTLS is not offered")
    return None


async def starttls(ctx: CheckContext) -> Finding:
    """STARTTLS is answered 220, the TLS handshake works, and EHLO is answered again inside TLS.

    RFC 3207 4 and 4.2: a server that offers STARTTLS and then cannot
    complete it makes careful senders give up or, worse, fall back to plain
    text.  The certificate is not checked here (``mailwright probe`` does).
    """
    unavailable = _starttls_unavailable(ctx)
    if unavailable is not None:
        return unavailable
    async with ctx.session(secure=False) as client:
        try:
            await client.starttls(opportunistic_tls_context(), ctx.plan.host)
        except CommandRefused as exc:
            return failed(f"{exc.command} was refused: {exc}", exc.reply)
    tls = client.tls_info
    version = f"{tls.version}, {tls.cipher}" if tls is not None else "TLS"
    extensions = ", ".join(client.capabilities.keywords) or "none"
    return passed(f"STARTTLS works ({version}); extensions after TLS: {extensions}")


async def starttls_injection(ctx: CheckContext) -> Finding:
    """A command sent in plain text right after STARTTLS is discarded, never run inside TLS.

    RFC 3207 4.2 and CVE-2011-0411: a server that keeps what it read before
    the handshake runs commands a man in the middle injected into the plain
    text as if the client had sent them inside TLS.  Sent: ``STARTTLS`` and
    ``NOOP`` in one write; after the handshake, EHLO then QUIT must be
    answered by their own replies (a 250 to QUIT is the NOOP's late answer).
    """
    unavailable = _starttls_unavailable(ctx)
    if unavailable is not None:
        return unavailable
    async with ctx.session(secure=False) as client:
        client.abandoned = True  # QUIT is part of the test
        await client.write_lines(["STARTTLS", "NOOP"])
        reply = await client.read_reply()
        if reply.code != 220:
            if reply.is_permanent:
                return passed(f"STARTTLS followed by NOOP was refused: {described(reply)}")
            return failed(f"STARTTLS got {described(reply)}", reply)
        try:
            await client.start_tls_now(opportunistic_tls_context(), ctx.plan.host)
        except ConnectionLost:
            return passed("the server closed the connection rather than run the NOOP")
        await client.send_line(f"EHLO {client.local_hostname}")
        quit_reply = await client.send_line("QUIT")
    if quit_reply.code == 221:
        return passed("the NOOP sent with STARTTLS was discarded")
    return failed(
        "the NOOP sent in plain text with STARTTLS was answered inside TLS "
        f"(QUIT got {described(quit_reply)}, one reply late)",
        quit_reply,
    )


async def auth_plaintext(ctx: CheckContext) -> Finding:
    """AUTH is not offered on a plain-text connection.

    RFC 4954 4 and RFC 8314 3: a password sent before TLS can be read by
    anyone on the path; offering AUTH only after STARTTLS keeps clients from
    sending it.
    """
    if ctx.plan.tls is TlsStart.IMPLICIT:
        return skipped("the connection is TLS from the first byte (--tls)")
    mechanisms = ctx.facts.plain_capabilities.auth_mechanisms
    for side, line in ctx.facts.hello:
        if side == "S" and line[4:].upper().startswith("AUTH"):
            ctx.note(side, line)
    if mechanisms or ctx.facts.plain_capabilities.has("AUTH"):
        offered = " ".join(mechanisms) or "AUTH"
        return warned(f"AUTH {offered} is offered before TLS: passwords may cross in plain text")
    return passed("AUTH is not offered before TLS")
