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


#: RFC 3461 4.1: the NOTIFY keywords; NEVER stands alone.
NOTIFY_KEYWORDS = frozenset({"SUCCESS", "FAILURE", "DELAY"})
#: No NOTIFY given: failures and delays are reported (RFC 3461 4.1 leaves it to the MTA;
#: sendmail and Exim do the same).
DEFAULT_NOTIFY = frozenset({"FAILURE", "DELAY"})


@dataclass(frozen=True, slots=True)
class MailOptions:
    """What MAIL FROM asked for the message as a whole, kept with it in the queue.

    ``ret`` and ``envid`` are RFC 3461's (4.3, 4.4): FULL or HDRS, and the
    sender's envelope id with its xtext decoded; ``body`` is the BODY parameter
    (RFC 6152 7BIT/8BITMIME, RFC 3030 BINARYMIME); ``smtputf8`` RFC 6531's.
    None: not given.
    """

    ret: str | None = None
    envid: str | None = None
    body: str | None = None
    smtputf8: bool = False


#: MAIL FROM with none of the parameters MailOptions keeps.
NO_OPTIONS = MailOptions()


@dataclass(frozen=True, slots=True)
class Notify:
    """RFC 3461 4.1 NOTIFY of one recipient: ``keywords`` empty means NEVER.

    ``given`` is False when the client sent no NOTIFY: the default
    (``DEFAULT_NOTIFY``) applies, and a next hop is told nothing.
    """

    keywords: frozenset[str] = DEFAULT_NOTIFY
    given: bool = False

    def wants(self, keyword: str) -> bool:
        return keyword in self.keywords

    def __str__(self) -> str:
        """The parameter value: "NEVER" or the keywords in RFC order."""
        if not self.keywords:
            return "NEVER"
        return ",".join(k for k in ("SUCCESS", "FAILURE", "DELAY") if k in self.keywords)

    @classmethod
    def parse(cls, value: str | None) -> Notify:
        """The stored form (``str``) back; None is the default.  ValueError for junk."""
        if value is None:
            return cls()
        words = value.upper().split(",")
        if words == ["NEVER"]:
            return cls(frozenset(), given=True)
        if not words or any(word not in NOTIFY_KEYWORDS for word in words):
            raise ValueError(f"not a NOTIFY value: {value!r}")
        return cls(frozenset(words), given=True)


#: RCPT without NOTIFY.
NOTIFY_NOT_GIVEN = Notify()


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
    message that DMARC says to quarantine), None for the inbox.  ``notify`` and
    ``orcpt`` are the RCPT's DSN parameters (RFC 3461 4.1, 4.2): which reports
    the sender wants, and the original recipient as ``addr-type;address`` with
    its xtext decoded (None when the client gave none).
    """

    address: Address
    original: Address
    local: bool
    folder: str | None = None
    notify: Notify = NOTIFY_NOT_GIVEN
    orcpt: str | None = None

    @property
    def forwarded(self) -> bool:
        """Relayed to another server on the operator's behalf: a [forward] or [aliases] target.

        The router gives a relayed recipient (relay networks, authenticated
        clients) itself as ``original``; only an expansion, or the reversal of an
        SRS address, changes the destination, so this needs no stored flag.
        """
        return not self.local and self.original.key != self.address.key
