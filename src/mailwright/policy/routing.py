"""Where a recipient's mail goes, decided at RCPT time from the configuration alone.

For a recipient in a local domain the order is: mailbox, alias, forward (251),
relocated (551), postmaster (RFC 5321 4.5.1), auto mailbox, else 550 5.1.1.  A
recipient in any other domain is relayed only when the client may relay.
An SRS address at the SRS domain (``SRS0=...``, ``SRS1=...``) comes before all
of these: a bounce to mail we forwarded, relayed to the original sender when
its hash and age are good, refused with the reason otherwise, never delivered
to a mailbox of its own.

The decision looks at the parsed ``Address`` and nothing else: ``%``, ``!``,
source routes and quoted local parts are plain characters of a local part here,
never a second address to relay to.  The router is pure (no I/O; the clock SRS
needs is passed in), so every rule is a plain test.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from mailwright.config import DEFAULT_MAX_ALIAS_DEPTH, Config
from mailwright.mailauth import srs
from mailwright.model import Address, Target
from mailwright.protocol.replies import RECIPIENT_OK
from mailwright.protocol.reply import Reply
from mailwright.syntax import is_safe_local_part

#: RFC 5321 4.5.1: every domain we receive for has a postmaster, whatever its case.
POSTMASTER = "postmaster"
NO_SUCH_USER = Reply(550, "5.1.1", "Mailbox unavailable: no such user here")
RELAYING_DENIED = Reply(550, "5.7.1", "Relaying denied")


def srs_refused(reason: str) -> Reply:
    """550 5.1.1 for an SRS address we cannot reverse, saying why (srs.INVALID, EXPIRED...)."""
    return Reply(550, "5.1.1", reason)


def will_forward(target: Address) -> Reply:
    """RFC 5321 3.4: 251, the message is accepted and passed on to ``target``."""
    return Reply(251, "2.1.5", f"User not local; will forward to <{target}>")


def user_moved(target: Address) -> Reply:
    """RFC 5321 3.4: 551, nothing is accepted; the client is told where to try instead."""
    return Reply(551, "5.1.6", f"User not local; please try <{target}>")


@dataclass(frozen=True, slots=True)
class RecipientDecision:
    """The answer to one RCPT TO and the copies it makes.

    ``targets`` is empty exactly when the reply refuses the recipient.
    ``reason`` is for the log only and is never sent to the client: it says why
    an alias lost some of its targets (a loop, the depth limit, an unknown user)
    or why nothing was left.
    """

    reply: Reply
    targets: tuple[Target, ...] = ()
    reason: str = field(default="", compare=False)

    @property
    def accepted(self) -> bool:
        return bool(self.targets)


def unique_targets(targets: Iterable[Target]) -> tuple[Target, ...]:
    """Targets without repeats of the same destination, first one kept.

    Use it across the RCPTs of one transaction too: ``team@`` and ``alice@``
    both reaching alice must give her one copy.
    """
    seen: set[tuple[str, bool]] = set()
    result = []
    for target in targets:
        identity = (target.address.key, target.local)
        if identity not in seen:
            seen.add(identity)
            result.append(target)
    return tuple(result)


class Router:
    """Decides RCPT TO from a Config: which reply, and which targets to queue.

    Built once by app.py and shared by every session; it holds only lookups
    derived from the configuration and never changes.
    """

    def __init__(
        self,
        config: Config,
        *,
        max_alias_depth: int = DEFAULT_MAX_ALIAS_DEPTH,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._srs = srs.from_config(config)
        self._clock = clock
        self._local_domains = frozenset(config.local_domains)
        self._auto_mailbox = frozenset(config.auto_mailbox_domains)
        self._mailboxes = frozenset(config.mailboxes)
        self._aliases = dict(config.aliases)
        self._forward = dict(config.forward)
        self._relocated = dict(config.relocated)
        self._max_alias_depth = max_alias_depth
        hostname = config.hostname.lower().rstrip(".")
        self._primary_domain = (
            hostname
            if hostname in self._local_domains
            else min(self._local_domains, default=hostname)
        )

    def is_local_domain(self, domain: str) -> bool:
        """Whether mail for ``domain`` is delivered here (case and trailing dot ignored)."""
        return domain.lower().rstrip(".") in self._local_domains

    def route_recipient(self, rcpt: Address, *, may_relay: bool) -> RecipientDecision:
        """The decision for one RCPT TO; ``may_relay`` comes from RelayPolicy.may_relay."""
        if rcpt.domain == "" and rcpt.local_part.lower() == POSTMASTER:
            rcpt = Address(POSTMASTER, self._primary_domain)  # RCPT TO:<Postmaster>
        if self._srs is not None and self._is_srs_address(rcpt, self._srs):
            return self._reverse_srs(rcpt, self._srs)
        if rcpt.domain_key not in self._local_domains:
            if not may_relay:
                return RecipientDecision(RELAYING_DENIED)
            return RecipientDecision(RECIPIENT_OK, (Target(rcpt, rcpt, local=False),))
        key = rcpt.key
        if key in self._mailboxes:
            return RecipientDecision(RECIPIENT_OK, (Target(_canonical(rcpt), rcpt, local=True),))
        if key in self._aliases:
            return self._expand_for(rcpt, self._aliases[key], RECIPIENT_OK)
        if key in self._forward:
            target = self._forward[key]
            return self._expand_for(rcpt, (target,), will_forward(target))
        if key in self._relocated:
            return RecipientDecision(user_moved(self._relocated[key]))
        if self._is_implicit_mailbox(rcpt):
            return RecipientDecision(RECIPIENT_OK, (Target(_canonical(rcpt), rcpt, local=True),))
        return RecipientDecision(NO_SUCH_USER, reason=f"no mailbox {key}")

    @staticmethod
    def _is_srs_address(rcpt: Address, rewriting: srs.Srs) -> bool:
        return rcpt.domain_key == rewriting.domain and srs.is_srs(rcpt.local_part)

    def _reverse_srs(self, rcpt: Address, rewriting: srs.Srs) -> RecipientDecision:
        """A bounce to an address we wrote: on to the original sender, or 550 saying why.

        Accepted whatever the client (it is mail for us, not relaying), so a
        forged address must fail here: the hash proves we wrote it, the
        timestamp that we wrote it recently.  The original is routed like an
        alias target, so an original that happens to be local reaches its
        mailbox and a remote one is relayed as a forwarded copy.
        """
        try:
            original = rewriting.reverse(rcpt, self._clock())
        except srs.SrsError as exc:
            return RecipientDecision(srs_refused(exc.reason), reason=f"{rcpt}: {exc.reason}")
        return self._expand_for(rcpt, (original,), RECIPIENT_OK)

    def _is_implicit_mailbox(self, address: Address) -> bool:
        """A local address with a Maildir though no mailbox entry names it.

        postmaster@ any local domain (RFC 5321 4.5.1) is delivered to its own
        Maildir, postmaster@<domain>, unless an entry says otherwise; in an
        auto_mailbox domain every local part safe as a directory name is one.
        """
        local_part = address.local_part.lower()
        if local_part == POSTMASTER:
            return True
        # The canonical (lower-case) form is the Maildir's name: check that one, or an
        # address accepted here (İ) is refused at delivery and bounces to a forged sender.
        return address.domain_key in self._auto_mailbox and is_safe_local_part(local_part)

    def _expand_for(
        self, rcpt: Address, start: tuple[Address, ...], reply: Reply
    ) -> RecipientDecision:
        """Accept ``rcpt`` with ``reply`` if its expansion reaches at least one destination.

        An expansion that reaches nothing deliverable (every branch an unknown
        user, a relocated address, a loop, or too deep) is refused with
        550 5.1.1 rather than accepted and silently dropped; ``reason`` tells
        the log why.  Branches that fail beside good ones are dropped and logged.
        """
        found, problems = self._expand(start, seen={rcpt.key})
        reason = "; ".join(problems)
        if not found:
            return RecipientDecision(NO_SUCH_USER, reason=f"{rcpt.key}: {reason}")
        targets = unique_targets(Target(address, rcpt, local=local) for address, local in found)
        return RecipientDecision(reply, targets, reason=reason)

    def _expand(
        self, start: tuple[Address, ...], *, seen: set[str]
    ) -> tuple[list[tuple[Address, bool]], list[str]]:
        """Depth-first expansion to (address, local) pairs, and the problems met on the way.

        ``seen`` holds every alias or forward entry already expanded: meeting
        one again is a loop (or a second path to the same place) and adds
        nothing.  A forward entry met inside an expansion is followed like a
        one-target alias.  Remote addresses are final whoever the client is:
        the operator configured them, so this is not relaying for the client.
        """
        found: list[tuple[Address, bool]] = []
        problems: list[str] = []
        stack = [(address, 1) for address in reversed(start)]
        while stack:
            address, depth = stack.pop()
            key = address.key
            if address.domain_key not in self._local_domains:
                found.append((address, False))
            elif key in self._mailboxes:
                found.append((_canonical(address), True))
            elif key in self._aliases or key in self._forward:
                if key in seen:
                    problems.append(f"loop at {key}")
                elif depth >= self._max_alias_depth:
                    problems.append(f"alias depth limit {self._max_alias_depth} reached at {key}")
                else:
                    seen.add(key)
                    nested = self._aliases.get(key) or (self._forward[key],)
                    stack.extend((n, depth + 1) for n in reversed(nested))
            elif key in self._relocated:
                problems.append(f"{key} is relocated")
            elif self._is_implicit_mailbox(address):
                found.append((_canonical(address), True))
            else:
                problems.append(f"no mailbox {key}")
        return found, problems


def _canonical(address: Address) -> Address:
    """A local destination in lookup form (lower case), so duplicates compare equal."""
    return Address(address.local_part.lower(), address.domain_key)
