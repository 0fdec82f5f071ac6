"""The command-line grammar of RFC 5321 4.1, and ESMTP parameters (4.1.2, 1870, 6152, 6531).

Parsing returns values or raises ``CommandSyntaxError`` carrying the reply that
explains the mistake; it never looks at the session state (state.py does).
Written by hand rather than with regular expressions per line: the grammar of a
path (quoted local parts, address literals, source routes) is small enough to
scan once, and each failure gets its own precise reply.  The pieces shared with
configuration and the tools (atext, domain labels, address literals) are in
syntax.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailwright.model import Address
from mailwright.protocol.reply import Reply
from mailwright.syntax import (
    ALPHA_DIGIT,
    LDH,
    MAX_DOMAIN,
    MAX_LOCAL_PART,
    is_atext,
    is_valid_address_literal,
    is_valid_domain,
)

# RFC 5321 4.5.3.1.3
MAX_PATH = 256
MAX_SIZE_DIGITS = 20  # RFC 1870: size-value ::= 1*20DIGIT


class CommandSyntaxError(Exception):
    """A command line broke the grammar; ``reply`` says how, and what to send instead."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


@dataclass(frozen=True, slots=True)
class CommandLine:
    """A command split into its verb (upper case) and the rest of the line."""

    verb: str
    argument: str


def split_command(line: str) -> CommandLine:
    """Split ``VERB[ SP argument]``; verbs are case-insensitive (RFC 5321 2.4)."""
    verb, _, argument = line.partition(" ")
    return CommandLine(verb.upper(), argument)


def parse_helo_argument(argument: str, verb: str) -> str:
    """The client's name in EHLO/HELO: a domain or an address literal (RFC 5321 4.1.1.1)."""
    name = argument.strip(" ")
    if not name:
        raise CommandSyntaxError(
            Reply(501, "5.5.4", f"Syntax error: send {verb} followed by your host name")
        )
    if " " in name:
        # RFC 5321 allows nothing after the domain; some clients append comments.
        name = name.split(" ", 1)[0]
    if name.startswith("["):
        if not is_valid_address_literal(name):
            raise CommandSyntaxError(
                Reply(501, "5.5.4", f"Syntax error: {name} is not a valid address literal")
            )
        return name
    if not is_valid_domain(name, allow_utf8=False, helo=True):
        raise CommandSyntaxError(
            Reply(501, "5.5.4", "Syntax error: send a valid host name or [address literal]")
        )
    return name


# --------------------------------------------------------------------- paths


@dataclass(frozen=True, slots=True)
class _PathErrors:
    """The replies for a bad path differ between sender (X.1.7) and recipient (X.1.3)."""

    enhanced: str
    what: str


_SENDER = _PathErrors("5.1.7", "sender")
_RECIPIENT = _PathErrors("5.1.3", "recipient")


def _syntax(kind: _PathErrors, problem: str) -> CommandSyntaxError:
    return CommandSyntaxError(
        Reply(501, kind.enhanced, f"Bad {kind.what} address syntax: {problem}")
    )


def scan_path(text: str, *, recipient: bool) -> tuple[str, str]:
    """Split ``<path> rest`` into the path (with brackets) and the parameter text.

    Respects quoted strings, so ``<"a> b"@x>`` is one path.
    """
    kind = _RECIPIENT if recipient else _SENDER
    if not text.startswith("<"):
        raise _syntax(kind, "enclose the address in angle brackets, e.g. <user@example.com>")
    i = 1
    in_quotes = False
    n = len(text)
    while i < n:
        ch = text[i]
        if in_quotes:
            if ch == "\\":
                i += 2
                continue
            if ch == '"':
                in_quotes = False
        elif ch == '"':
            in_quotes = True
        elif ch == ">":
            break
        i += 1
    else:
        raise _syntax(kind, "missing closing '>'")
    path, rest = text[: i + 1], text[i + 1 :]
    if rest and not rest.startswith(" "):
        raise _syntax(kind, "put a space between the address and its parameters")
    return path, rest.strip(" ")


def _parse_local_part(local: str, kind: _PathErrors, smtputf8: bool) -> str:
    """Dot-string or Quoted-string; returns the local part with quoting removed."""
    if local.startswith('"'):
        if len(local) < 2 or not local.endswith('"'):
            raise _syntax(kind, "unterminated quoted local part")
        out = []
        i = 1
        end = len(local) - 1
        while i < end:
            ch = local[i]
            if ch == "\\":
                if i + 1 >= end:
                    raise _syntax(kind, "backslash at end of quoted local part")
                nxt = local[i + 1]
                if not (32 <= ord(nxt) <= 126):
                    raise _syntax(kind, "invalid quoted character")
                out.append(nxt)
                i += 2
                continue
            if ch == '"':
                raise _syntax(kind, "stray quote in local part")
            code = ord(ch)
            if not (32 <= code <= 126 or (smtputf8 and code > 127)):
                raise _syntax(kind, "invalid character in quoted local part")
            out.append(ch)
            i += 1
        return "".join(out)
    if not local or local.startswith(".") or local.endswith(".") or ".." in local:
        raise _syntax(kind, "misplaced dot in local part")
    for ch in local:
        if ch != "." and not is_atext(ch, utf8=smtputf8):
            raise _syntax(kind, f"character {ch!r} is not allowed in a local part")
    return local


def parse_path(path: str, *, null_allowed: bool, smtputf8: bool, recipient: bool) -> Address | None:
    """Parse ``<[@route,@route:]local@domain>`` (RFC 5321 4.1.2).

    A source route is accepted and ignored, as RFC 5321 4.1.1.3 and C say
    servers SHOULD: it never decides where mail goes.
    """
    kind = _RECIPIENT if recipient else _SENDER
    if len(path.encode("utf-8")) > MAX_PATH:
        raise CommandSyntaxError(
            Reply(
                501, kind.enhanced, f"Path too long: at most {MAX_PATH} octets (RFC 5321 4.5.3.1.3)"
            )
        )
    inner = path[1:-1]
    if inner == "":
        if null_allowed:
            return None
        raise _syntax(kind, "the null path <> is only allowed as a sender")
    if inner.startswith("@"):
        route, colon, inner = inner.partition(":")
        if not colon:
            raise _syntax(kind, "source route without ':'")
        for hop in route.split(","):
            if not hop.startswith("@") or not is_valid_domain(hop[1:], allow_utf8=smtputf8):
                raise _syntax(kind, "malformed source route")
    local, at, domain = inner.rpartition("@")
    if not at:
        if recipient and inner.lower() == "postmaster":
            # RFC 5321 4.1.1.3: "RCPT TO:<Postmaster>" must be accepted; the
            # empty domain means "this server" and policy picks the domain.
            return Address("postmaster", "")
        raise _syntax(kind, "missing '@domain'")
    if not local:
        raise _syntax(kind, "empty local part")
    if not smtputf8 and not inner.isascii():
        raise CommandSyntaxError(
            Reply(
                553,
                "5.6.7",
                "Non-ASCII address needs SMTPUTF8: send MAIL FROM:<...> SMTPUTF8 (RFC 6531)",
            )
        )
    local_part = _parse_local_part(local, kind, smtputf8)
    if len(local.encode("utf-8")) > MAX_LOCAL_PART:
        raise CommandSyntaxError(
            Reply(
                553,
                kind.enhanced,
                f"Local part too long: at most {MAX_LOCAL_PART} octets (RFC 5321 4.5.3.1.1)",
            )
        )
    if domain.startswith("["):
        if not is_valid_address_literal(domain):
            raise _syntax(kind, "malformed address literal")
    elif len(domain.encode("utf-8")) > MAX_DOMAIN:
        raise CommandSyntaxError(
            Reply(
                553,
                kind.enhanced,
                f"Domain too long: at most {MAX_DOMAIN} octets (RFC 5321 4.5.3.1.2)",
            )
        )
    elif not is_valid_domain(domain, allow_utf8=smtputf8):
        raise _syntax(kind, f"{domain!r} is not a valid domain")
    return Address(local_part, domain)


# ---------------------------------------------------------------- parameters


def parse_parameters(text: str, *, utf8: bool = False) -> dict[str, str | None]:
    """esmtp-param = esmtp-keyword ["=" esmtp-value] (RFC 5321 4.1.2); keywords upper-cased.

    ``utf8``: the transaction is SMTPUTF8, so a value may also hold non-ASCII
    characters (RFC 6531 3.3: esmtp-value =/ UTF8-non-ascii).
    """
    params: dict[str, str | None] = {}
    if not text:
        return params
    for item in text.split(" "):
        if not item:
            continue
        keyword, eq, value = item.partition("=")
        if not keyword or keyword[0] not in ALPHA_DIGIT or any(c not in LDH for c in keyword):
            raise CommandSyntaxError(Reply(501, "5.5.4", f"Syntax error in parameter {item!r}"))
        if eq and (not value or any(not _value_char(c, utf8) for c in value)):
            raise CommandSyntaxError(
                Reply(501, "5.5.4", f"Syntax error in the value of parameter {keyword.upper()}")
            )
        key = keyword.upper()
        if key in params:
            raise CommandSyntaxError(Reply(501, "5.5.4", f"Parameter {key} given twice"))
        params[key] = value if eq else None
    return params


def _value_char(char: str, utf8: bool) -> bool:
    """RFC 5321 4.1.2: esmtp-value is "!".."~" except "="; RFC 6531 adds non-ASCII."""
    code = ord(char)
    return (33 <= code <= 126 and char != "=") or (utf8 and code > 127)


def split_mail_argument(argument: str, prefix: str) -> str:
    """Check ``FROM:``/``TO:`` and return the text after it.

    RFC 5321 4.1.2 forbids spaces around the colon; a space *after* it is
    tolerated (as Postfix does) because refusing it would lose mail from
    common clients while gaining nothing.
    """
    if argument[: len(prefix)].upper() != prefix:
        verb = "MAIL FROM" if prefix == "FROM:" else "RCPT TO"
        raise CommandSyntaxError(Reply(501, "5.5.4", f"Syntax error: send {verb}:<address>"))
    return argument[len(prefix) :].lstrip(" ")
