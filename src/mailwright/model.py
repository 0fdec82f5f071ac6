"""Frozen values shared by every stage of the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field

from mailwright.syntax import is_dot_string


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
        if not is_dot_string(local):
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


#: The Maildir++ folder (a dot, then the name) where quarantined mail goes: the
#: name Dovecot, Courier and most mail clients show as "Junk".
JUNK_FOLDER = ".Junk"


@dataclass(frozen=True, slots=True)
class Target:
    """Where one copy of an accepted message must go.

    ``address`` is the final destination (after alias or forward expansion);
    ``original`` is the recipient as the client gave it in RCPT TO, kept for
    bounces (RFC 3464 Original-Recipient) and logs.  ``local`` is True for a
    Maildir under data_dir, False for SMTP delivery to another server.
    ``folder`` is the Maildir++ folder of a local copy (``JUNK_FOLDER`` for a
    message that DMARC says to quarantine), None for the inbox.
    """

    address: Address
    original: Address
    local: bool
    folder: str | None = None

    @property
    def forwarded(self) -> bool:
        """Relayed to another server on the operator's behalf: a [forward] or [aliases] target.

        The router gives a relayed recipient (relay networks, authenticated
        clients) itself as ``original``; only an expansion, or the reversal of an
        SRS address, changes the destination, so this needs no stored flag.
        """
        return not self.local and self.original.key != self.address.key
