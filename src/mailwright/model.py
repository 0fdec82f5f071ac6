"""Frozen values shared by every stage of the pipeline."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox ``local_part@domain`` as it appeared in a path (RFC 5321 4.1.2).

    The local part keeps its case and any quoting was already removed; the
    domain keeps its case for display, and ``domain_key`` is the form to compare.
    The null reverse-path ``<>`` is not an Address: it is ``None`` wherever a
    sender is expected.
    """

    local_part: str
    domain: str

    def __str__(self) -> str:
        local = self.local_part
        if not _is_dot_string(local):
            local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{local}@{self.domain}"

    @property
    def domain_key(self) -> str:
        """The domain in the form used for comparisons (lower case, no trailing dot)."""
        return self.domain.lower().rstrip(".")

    @property
    def key(self) -> str:
        """The whole address in the form used for lookups in configuration."""
        return f"{self.local_part.lower()}@{self.domain_key}"

    @classmethod
    def from_text(cls, text: str) -> Address:
        """Split a plain ``local@domain`` (as written in configuration files)."""
        local, sep, domain = text.rpartition("@")
        if not sep or not local or not domain:
            raise ValueError(f"not an address (expected local@domain): {text!r}")
        return cls(local, domain)


# RFC 5321 4.1.2 Dot-string: Atoms of atext joined by single dots; any non-ASCII
# character counts as atext too (RFC 6531 3.3).  One compiled pattern, not a
# loop over characters: every log line and delivery formats addresses.
_ATOM = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\U0010ffff]+"
_DOT_STRING = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")


def _is_dot_string(local: str) -> bool:
    return _DOT_STRING.fullmatch(local) is not None


def is_address_literal(domain: str) -> bool:
    """Whether ``domain`` is an address literal (RFC 5321 4.1.3), well formed or not."""
    return domain.startswith("[")


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


def is_ip_address_literal(domain: str) -> bool:
    """Whether ``domain`` is ``[IPv4]`` or ``[IPv6:address]`` (RFC 5321 4.1.3)."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return False
    return _literal_ip(domain[1:-1].lower()) is not None


def _literal_ip(inner: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        if inner.startswith("ipv6:"):
            return ipaddress.IPv6Address(inner[5:])
        return ipaddress.IPv4Address(inner)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Envelope:
    """What the SMTP transaction said about a message, apart from its content.

    ``sender`` is None for the null reverse-path ``<>`` (bounces).
    ``mail_params`` keeps the ESMTP parameters of MAIL FROM (e.g. BODY, SMTPUTF8).
    """

    sender: Address | None
    recipients: tuple[Address, ...]
    mail_params: tuple[tuple[str, str | None], ...] = ()


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """Who is on the other end of a connection; used for policy and Received: headers."""

    peer_host: str
    peer_port: int
    helo_name: str | None = None
    esmtp: bool = False
    tls: bool = False
    authenticated_user: str | None = None
    local_host: str = ""
    local_port: int = 0
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
