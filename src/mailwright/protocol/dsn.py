"""The DSN parameters of MAIL and RCPT (RFC 3461 4): RET, ENVID, NOTIFY, ORCPT.

Each value is checked here and turned into what the queue keeps: RET and NOTIFY
as their keywords, ENVID and ORCPT with their xtext decoded (RFC 3461 4).  A
bad value raises ``CommandSyntaxError`` with ``501 5.5.4`` and a text naming
the parameter, so a client's author sees which one was wrong.  Written by hand:
the grammar is a dozen lines of RFC, and no maintained library parses it.
"""

from __future__ import annotations

import re

from mailwright.model import NOTIFY_KEYWORDS, Notify
from mailwright.protocol.commands import CommandSyntaxError
from mailwright.protocol.reply import Reply

#: RFC 3461 4.4: "the ENVID parameter ... MUST NOT exceed 100 characters" (as sent).
MAX_ENVID = 100
#: RFC 3461 4.2: the ORCPT value with its address type, as sent, at most 500 characters.
MAX_ORCPT = 500
#: RFC 3461 3 (5) and (6): DSN parameters lengthen MAIL by 100 and RCPT by 500 characters.
MAIL_LINE_EXTRA = 100
RCPT_LINE_EXTRA = 500

#: RFC 3461 4: xtext = *( xchar / hexchar ); xchar is "!".."~" except "+" and "=",
#: hexchar is "+" and two upper-case hex digits.
_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})*")
_HEXCHAR = re.compile(r"\+([0-9A-F]{2})")
#: RFC 3461 4.2: addr-type = atom (RFC 5322 atext).
_ADDR_TYPE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")


def _bad(parameter: str, problem: str) -> CommandSyntaxError:
    return CommandSyntaxError(Reply(501, "5.5.4", f"Syntax error in {parameter}: {problem}"))


def decode_xtext(text: str) -> str | None:
    """The characters ``text`` stands for; None when it is not xtext."""
    if not _XTEXT.fullmatch(text):
        return None
    return _HEXCHAR.sub(lambda match: chr(int(match.group(1), 16)), text)


def encode_xtext(text: str) -> str:
    """``text`` as xtext: "+", "=", and anything outside "!".."~" as +XX (RFC 3461 4).

    xtext stands for octets, and ``decode_xtext`` gives each as the character of its
    code (0 to 0xFF): such text is encoded back octet for octet, so a value passed on
    is the one received (RFC 3461 5.2.1).  Characters above 0xFF cannot be xtext;
    text holding any is UTF-8 encoded first, so nothing is lost (RFC 6533 3 does the
    same for its utf-8 type).
    """
    octets = text.encode("latin-1") if max(text, default="\0") <= "\xff" else text.encode("utf-8")
    out = []
    for octet in octets:
        char = chr(octet)
        out.append(char if 0x21 <= octet <= 0x7E and char not in "+=" else f"+{octet:02X}")
    return "".join(out)


def parse_ret(value: str | None) -> str:
    """RFC 3461 4.3: RET=FULL or RET=HDRS."""
    if value is None or value.upper() not in ("FULL", "HDRS"):
        raise _bad("RET", "must be FULL or HDRS")
    return value.upper()


def parse_envid(value: str | None) -> str:
    """RFC 3461 4.4: ENVID=xtext, at most MAX_ENVID characters; decoded."""
    if value is None:
        raise _bad("ENVID", "a value is required")
    if len(value) > MAX_ENVID:
        raise _bad("ENVID", f"longer than {MAX_ENVID} characters")
    decoded = decode_xtext(value)
    if decoded is None:
        raise _bad("ENVID", "not valid xtext")
    return decoded


def parse_notify(value: str | None) -> Notify:
    """RFC 3461 4.1: NOTIFY=NEVER, or a comma list of SUCCESS, FAILURE and DELAY."""
    if value is None:
        raise _bad("NOTIFY", "a value is required")
    words = value.upper().split(",")
    if "NEVER" in words:
        if len(words) > 1:
            raise _bad("NOTIFY", "NEVER cannot be combined with other values")
        return Notify(frozenset(), given=True)
    unknown = [word for word in words if word not in NOTIFY_KEYWORDS]
    if unknown:
        raise _bad("NOTIFY", f"unknown keyword {unknown[0]!r}")
    if len(set(words)) != len(words):
        raise _bad("NOTIFY", "a keyword is given twice")
    return Notify(frozenset(words), given=True)


def parse_orcpt(value: str | None, *, smtputf8: bool) -> str:
    """RFC 3461 4.2: ORCPT=addr-type;xtext, returned as ``addr-type;address`` decoded.

    With SMTPUTF8, the ``utf-8`` address type may carry UTF-8 as it is
    (RFC 6533 3: utf-8-addr-unitext); it is kept as sent.
    """
    if value is None:
        raise _bad("ORCPT", "a value is required")
    if len(value) > MAX_ORCPT:
        raise _bad("ORCPT", f"longer than {MAX_ORCPT} characters")
    addr_type, semicolon, address = value.partition(";")
    if not semicolon:
        raise _bad("ORCPT", "expected addr-type;address, such as rfc822;user@example.org")
    if not _ADDR_TYPE.fullmatch(addr_type) or not address:
        raise _bad("ORCPT", "expected addr-type;address, such as rfc822;user@example.org")
    if smtputf8 and addr_type.lower() == "utf-8" and not address.isascii():
        return f"{addr_type};{address}"
    decoded = decode_xtext(address)
    if decoded is None:
        raise _bad("ORCPT", "the address is not valid xtext")
    return f"{addr_type};{decoded}"


def orcpt_parameter(orcpt: str, *, smtputf8: bool = False) -> str:
    """A kept ORCPT (``addr-type;address``) as the parameter value to send on.

    A non-ASCII address of the utf-8 type goes as it is (RFC 6533 3,
    utf-8-addr-unitext) in an SMTPUTF8 transaction (``smtputf8``) only; in any
    other, where a command carries no 8-bit octet (RFC 6531 3.4), each non-ASCII
    character is written \\x{HEX} (RFC 6533 3, utf-8-addr-xtext).
    """
    addr_type, _, address = orcpt.partition(";")
    if addr_type.lower() == "utf-8" and not address.isascii():
        if smtputf8:
            return orcpt
        address = "".join(c if c.isascii() else f"\\x{{{ord(c):X}}}" for c in address)
    return f"{addr_type};{encode_xtext(address)}"
