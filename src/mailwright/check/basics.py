"""Checks of how a server introduces itself: greeting, EHLO, HELO, what its banner gives away."""

from __future__ import annotations

import re
from typing import Final

from mailwright.check.context import CheckContext
from mailwright.check.model import Finding, failed, passed, warned
from mailwright.check.steps import described
from mailwright.protocol.client import Capabilities
from mailwright.syntax import is_ip_address, is_valid_address_literal, is_valid_domain

#: A product name followed by a version number: ``Exim 4.96``, ``Sendmail 8.15.2/8.15.2``,
#: ``Postfix/3.7.2``, ``proxy version 0.3``, ``v2.1``.  A date or a time has no dotted
#: number, so it does not match.
_SOFTWARE_VERSION: Final = re.compile(
    r"\b[A-Za-z][A-Za-z0-9_-]*(?: version)?[ /]v?(\d+\.\d+(?:\.\d+)*)\b", re.IGNORECASE
)


def software_version(text: str) -> str | None:
    """The first ``name version`` in ``text``; an IPv4 address (``Hello 192.0.2.1``) is none."""
    for found in _SOFTWARE_VERSION.finditer(text):
        if not is_ip_address(found.group(1)):
            return found.group(0)
    return None


def _first_word(text: str) -> str:
    words = text.split()
    return words[0] if words else ""


async def greeting(ctx: CheckContext) -> Finding:
    """The 220 greeting starts with the server's domain name or address literal.

    The name tells a client (and the person reading its log) which host it
    reached, and a client checks it against what it expected; RFC 5321 4.2
    and 4.3.1 put it first in the greeting's text.
    """
    reply = ctx.facts.greeting
    ctx.note("S", described(reply))
    name = _first_word(reply.lines[0] if reply.lines else "")
    if is_valid_domain(name) or is_valid_address_literal(name):
        return passed(f"220 greeting names the server: {name}")
    return failed(f"the 220 greeting does not start with a domain name: {described(reply)}", reply)


async def ehlo(ctx: CheckContext) -> Finding:
    """EHLO is answered with 250 and a list of the service extensions offered.

    Without EHLO a client can use no extension: no STARTTLS, no SIZE, no
    PIPELINING, no 8BITMIME (RFC 5321 4.1.1.1; HELO-only servers are legal but
    a relic).
    """
    for side, line in ctx.facts.hello:
        ctx.note(side, line)
    reply = ctx.facts.ehlo
    if reply is None:
        return failed("neither EHLO nor HELO was accepted")
    if any(side == "C" and line.startswith("HELO") for side, line in ctx.facts.hello):
        return failed("EHLO was refused; only HELO was accepted", reply)
    offered = ", ".join(Capabilities.parse(reply).keywords) or "none"
    return passed(f"250 to EHLO; extensions: {offered}")


async def helo(ctx: CheckContext) -> Finding:
    """HELO, the original greeting command, is still answered with 250.

    Old clients and simple devices send HELO only; RFC 5321 4.1.1.1 requires
    a server to accept it as well as EHLO.
    """
    async with ctx.session(hello=False) as client:
        reply = await client.send_line(f"HELO {client.local_hostname}")
    if reply.code == 250:
        return passed("250 to HELO")
    return failed(f"HELO was not accepted: {described(reply)}", reply)


async def banner_version(ctx: CheckContext) -> Finding:
    """The greeting and EHLO reply do not name the server software and its version.

    A version in the banner tells an attacker which known flaws to try, and
    nothing useful to anyone else (RFC 5321 7.5 lets a server say less).
    """
    facts = ctx.facts
    texts = [(facts.greeting, facts.greeting.lines[0] if facts.greeting.lines else "")]
    if facts.ehlo is not None and facts.ehlo.lines:
        texts.append((facts.ehlo, facts.ehlo.lines[0]))
    for reply, text in texts:
        ctx.note("S", described(reply))
        # The first word is the server's name, which may well contain digits and dots.
        _, _, rest = text.strip().partition(" ")
        found = software_version(rest)
        if found is not None:
            return warned(f"the banner names the software and its version: {found}", reply)
    return passed("the banner names no software version")
