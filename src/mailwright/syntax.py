"""The grammar of addresses, domains and ``host:port``, written once for every stage.

The protocol core checks what a client sends with it, configuration checks what
an operator writes, policy checks a local part before it names a Maildir, and
the tools check what a person types.  Each asks a slightly different question
(a HELO name may carry an underscore, a configured domain must already be in
lower case), so each question is its own function here, built from the same
pieces: one set of atext characters, one rule for labels, one parser of
address literals.  Pure functions of text: no I/O, so protocol/ may import it.
"""

from __future__ import annotations

import ipaddress
import json
import re

#: RFC 5321 4.5.3.1.1: the longest local part (octets on the wire; characters where
#: configuration and Maildir names count it).
MAX_LOCAL_PART = 64
#: RFC 5321 4.5.3.1.2: the longest domain, in octets.
MAX_DOMAIN = 255
#: RFC 1035 2.3.4 and 3.1: a host name written as text, without its trailing dot.
MAX_HOST_NAME = 253
#: RFC 1035 2.3.4: the longest label.
MAX_LABEL = 63
#: The well-known ports a ``host`` without ``:port`` means (RFC 5321 4.5.4.2; RFC 1035 4.2).
SMTP_PORT = 25
DNS_PORT = 53

ALPHA_DIGIT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
#: RFC 5322 3.2.3 atext: what an atom of a Dot-string is made of.
ATEXT = ALPHA_DIGIT | frozenset("!#$%&'*+-/=?^_`{|}~")
#: RFC 5321 4.1.2 Let-dig and Ldh-str: the characters of a domain label.
LDH = ALPHA_DIGIT | frozenset("-")
# EHLO/HELO names in the wild carry underscores (Windows host names); accept them there only.
_HELO_LDH = LDH | frozenset("_")

# RFC 5321 4.1.2 Dot-string: Atoms of atext joined by single dots; any non-ASCII
# character counts as atext too (RFC 6531 3.3).  One compiled pattern, not a
# loop over characters: every log line and delivery formats addresses.
_ATOM = "[" + re.escape("".join(sorted(ATEXT))) + "\u0080-\U0010ffff]+"
_DOT_STRING = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")
_ASCII_ATOM = "[" + re.escape("".join(sorted(ATEXT))) + "]+"
_ASCII_DOT_STRING = re.compile(rf"{_ASCII_ATOM}(?:\.{_ASCII_ATOM})*")

#: Longest quoted value shown in a message, quotes included.
_MAX_QUOTED = 60


def is_atext(ch: str, *, utf8: bool) -> bool:
    """Whether one character may stand in an atom; non-ASCII only with SMTPUTF8 (RFC 6531 3.3)."""
    return ch in ATEXT or (utf8 and ord(ch) > 127)


def is_dot_string(local: str, *, utf8: bool = True) -> bool:
    """RFC 5321 4.1.2 Dot-string: atoms joined by single dots, no dot first or last."""
    pattern = _DOT_STRING if utf8 else _ASCII_DOT_STRING
    return pattern.fullmatch(local) is not None


def is_valid_domain(domain: str, *, allow_utf8: bool = False, helo: bool = False) -> bool:
    """Domain = sub-domain *("." sub-domain) (RFC 5321 4.1.2); U-labels with SMTPUTF8 (RFC 6531).

    Case is free.  ``helo`` accepts what EHLO names in the wild carry: an
    underscore and a trailing dot.
    """
    if not domain or len(domain.encode("utf-8")) > MAX_DOMAIN:
        return False
    chars = _HELO_LDH if helo else LDH
    labels = domain[:-1].split(".") if domain.endswith(".") and helo else domain.split(".")
    for label in labels:
        if not label or len(label) > MAX_LABEL or label[0] == "-" or label[-1] == "-":
            return False
        for ch in label:
            if ch not in chars and not (allow_utf8 and ord(ch) > 127):
                return False
    return True


def is_domain_name(text: str) -> bool:
    """Whether ``text`` is a lower-case ASCII host name (LDH labels, no trailing dot).

    The form configuration stores and Maildir paths use.  Internationalised
    names are written in their xn-- form; a name that passes is also safe as one
    directory name (no ``/``, no ``..``, no control characters).
    """
    return len(text) <= MAX_HOST_NAME and text == text.lower() and is_valid_domain(text)


def is_safe_local_part(local_part: str) -> bool:
    """True when ``local_part`` may name a Maildir: data_dir/mailboxes/<domain>/<local part>.

    A letter or digit first, then letters, digits and ``. _ + -``, no ``..``, at
    most 64 characters.  Letters and digits of any script count, so SMTPUTF8
    mailboxes (RFC 6531) work; ``/``, NUL, whitespace, quotes, ``%`` and ``!``
    never pass, so no address can name a path outside its directory.
    """
    if not local_part or len(local_part) > MAX_LOCAL_PART or ".." in local_part:
        return False
    return local_part[0].isalnum() and all(c.isalnum() or c in "._+-" for c in local_part)


# ---------------------------------------------------------------- address literals


def is_address_literal(domain: str) -> bool:
    """Whether ``domain`` is an address literal (RFC 5321 4.1.3), well formed or not."""
    return domain.startswith("[")


def is_valid_address_literal(literal: str) -> bool:
    """``[IPv4]`` or ``[IPv6:address]`` (RFC 5321 4.1.3); general address literals are refused."""
    if not (literal.startswith("[") and literal.endswith("]")):
        return False
    return _literal_ip(literal[1:-1].lower()) is not None


def address_literal_key(domain: str) -> str:
    """The form of an address literal to compare: ``[192.0.2.1]``, ``[ipv6:2001:db8::1]``.

    One IPv6 address has many spellings (``IPv6:0::1``, ``ipv6:::1``); a route
    written for one must match the others.  A literal that is not an IP address
    (a general address literal, or a malformed one) is only lower-cased.
    """
    inner = domain.lower().rstrip(".").removeprefix("[").removesuffix("]")
    ip = _literal_ip(inner)
    if ip is None:
        return f"[{inner}]"
    return f"[ipv6:{ip.compressed}]" if ip.version == 6 else f"[{ip}]"


def _literal_ip(inner: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address inside the brackets (lower case), or None."""
    try:
        if inner.startswith("ipv6:"):
            return ipaddress.IPv6Address(inner[5:])
        return ipaddress.IPv4Address(inner)
    except ValueError:
        return None


# ---------------------------------------------------------------- host:port


def is_ip_address(text: str) -> bool:
    """Whether ``text`` is an IPv4 or IPv6 address, written without brackets."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def quoted(text: str) -> str:
    """``text`` in double quotes, escaped as JSON and TOML do, short enough for one line.

    Used in messages about what someone wrote: control characters show as
    escapes, never as themselves.
    """
    shown = json.dumps(text, ensure_ascii=False)
    return shown if len(shown) <= _MAX_QUOTED else shown[: _MAX_QUOTED - 4] + '..."'


def split_host_port(
    text: str, *, default_port: int | None = None, allow_port_zero: bool = False
) -> tuple[str, int]:
    """Split ``host:port`` or ``[ipv6]:port``; without a port, use ``default_port`` or refuse.

    Raises ValueError with a message fit to show the operator.  The host is a
    domain name or an IP address; IPv6 needs brackets so the port is never
    mistaken for part of the address.  Port 0 (let the system pick a free port)
    makes sense only for a listening address, hence ``allow_port_zero``.
    """
    port_text: str | None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError("missing ] after the IPv6 address")
        host, rest = text[1:end], text[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"not an IPv6 address in brackets: {quoted(host)}") from None
        if not rest:
            port_text = None
        elif rest.startswith(":"):
            port_text = rest[1:]
        else:
            raise ValueError("expected :port after the ]")
    else:
        if text.count(":") > 1:
            raise ValueError("an IPv6 address needs brackets, e.g. [::1]:2525")
        host, sep, port_text_or_empty = text.partition(":")
        port_text = port_text_or_empty if sep else None
        if not host:
            raise ValueError("missing host before the port")
        if not is_ip_address(host) and not is_domain_name(host.lower().rstrip(".")):
            raise ValueError(f"not a host name or IP address: {quoted(host)}")
    if port_text is None:
        if default_port is None:
            raise ValueError("missing port (write host:port, e.g. 127.0.0.1:2525)")
        return host, default_port
    lowest = 0 if allow_port_zero else 1
    if not (port_text.isascii() and port_text.isdigit()) or not lowest <= int(port_text) <= 65535:
        raise ValueError(f"bad port {quoted(port_text)}: expected a number from {lowest} to 65535")
    return host, int(port_text)
