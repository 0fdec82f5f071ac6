"""Checks of how a server answers what it cannot parse: unknown verbs, bad paths, long lines."""

from __future__ import annotations

from typing import Final

from mailwright.check.context import CheckContext
from mailwright.check.model import Finding, failed, passed, warned
from mailwright.check.steps import described, mail_line, plain_mail_accepted
from mailwright.client import ConnectionLost, SmtpTimeout

#: The length of the command line ``line-too-long`` sends, CRLF included: four times
#: RFC 5321 4.5.3.1.4's 512, as real clients sometimes send.
LONG_LINE_OCTETS: Final = 2000
#: Sent when a test is over, to see the session still answers.
_ALIVE = "NOOP"


async def unknown_command(ctx: CheckContext) -> Finding:
    """An unknown command gets 500 (not recognised) or 502 (not implemented).

    RFC 5321 4.2.4: the client must learn the command did nothing; any other
    answer lets it believe something happened.
    """
    async with ctx.session() as client:
        reply = await client.send_line("XYZZY")
    if reply.code in (500, 502):
        return passed(f"XYZZY got {reply.code}")
    return failed(f"an unknown command got {described(reply)}, not 500 or 502", reply)


async def syntax_mail(ctx: CheckContext) -> Finding:
    """``MAIL FROM:foo`` (no angle brackets, no domain) is refused with 501 or 553.

    RFC 5321 4.1.2: the reverse-path is enclosed in angle brackets; a server
    that guesses what a malformed path meant accepts addresses nobody can
    reply to.
    """
    async with ctx.session() as client:
        reply = await client.send_line("MAIL FROM:foo")
        if reply.is_positive:
            await client.send_line("RSET")
    if reply.code in (501, 553):
        return passed(f"MAIL FROM:foo got {reply.code}")
    return failed(f"MAIL FROM:foo got {described(reply)}, not 501 or 553", reply)


async def unknown_parameter(ctx: CheckContext) -> Finding:
    """A MAIL parameter of no extension the server offered is refused with 555.

    RFC 5321 4.1.1.11 and 3.3: a parameter the server does not understand
    must not be silently ignored, since the client counts on its meaning.
    """
    async with ctx.session() as client:
        reply = await client.send_line(mail_line(ctx.sender, "FOO=BAR"))
        if reply.is_positive:
            await client.send_line("RSET")
        elif reply.code != 555:
            await plain_mail_accepted(client, ctx)
    if reply.code == 555:
        return passed("MAIL with FOO=BAR got 555")
    if reply.is_positive:
        return failed(f"MAIL with an unknown parameter was accepted: {described(reply)}", reply)
    if reply.is_permanent:
        return warned(f"MAIL with FOO=BAR got {described(reply)}: refused, but 555 is meant", reply)
    return failed(f"MAIL with FOO=BAR got {described(reply)}, not 555", reply)


async def line_too_long(ctx: CheckContext) -> Finding:
    """A 2,000-octet command line is answered whole, and the session still answers after it.

    RFC 5321 4.5.3.1.4 sets 512 octets as the least a server must take and
    4.5.3.1 encourages no limit; a server may refuse a longer line (500),
    but it must not hang, drop the session, or cut the line and run the rest
    as another command (that is how commands get smuggled in).
    """
    line = "NOOP " + "x" * (LONG_LINE_OCTETS - len("NOOP ") - 2)
    async with ctx.session() as client:
        try:
            long_reply = await client.send_line(line)
            alive = await client.send_line(_ALIVE)
        except SmtpTimeout:
            return failed(
                f"no answer in time after a {LONG_LINE_OCTETS}-octet line: the server hangs"
            )
        except ConnectionLost:
            return failed(f"the server dropped the session after a {LONG_LINE_OCTETS}-octet line")
    # A refusal (500 "line too long", or any 5xx) or NOOP's own 250 answers the whole line.
    if long_reply.code != 250 and not long_reply.is_permanent:
        return failed(f"the long line got {described(long_reply)}, not 250 or a 5xx", long_reply)
    if alive.code != 250:
        # The long line got two answers: the server cut it and ran what was left.
        return failed(
            f"the NOOP after the long line got {described(alive)}: the server cut the line "
            "and answered its rest as another command",
            alive,
        )
    return passed(f"the long line got {long_reply.code} and the session still answers")
