"""AUTH: password checks, failure delays and lockouts per client and per account.

A password guesser reconnects, so every count here outlives the connection:

- **Per client** (an IPv4 address or an IPv6 /64, ``client_key``): after
  ``[smtp] auth_max_failures`` failed checks the client is *locked out*: every
  AUTH gets ``454 4.7.0`` (RFC 4954 6, temporary authentication failure), the
  right password too, and no password is checked, until ``auth_lockout``
  seconds after its last failure.
- **Per account, from every client**: recent failures only *delay* the next
  check of that account (``auth_failure_delay`` seconds per failure, at most
  ``AUTH_FAILURE_DELAY_MAX_STEPS`` of them), whatever its outcome.  An account is
  never refused: a lockout per account would let anyone lock its owner out.
  The delay comes *before* the check, so hanging up early saves a guesser
  nothing and the time of the answer does not tell success from failure.
- **Per client and account**: a success forgives that client's failures on
  that account (the owner's typos), in the client's count and the account's;
  its failures on other accounts stay counted, so logging in to one's own
  account does not reset a lockout earned guessing someone else's.
- **At most one check per client at a time**: a second AUTH from the same
  client waits for the first (then it sees the first one's failure count), so
  one client holds at most one of the ``MAX_CONCURRENT_PASSWORD_CHECKS`` slots
  whatever number of connections it opens.

Failures are forgotten ``auth_lockout`` seconds after the last one, and each
table keeps at most ``AUTH_TRACKED_ENTRIES`` entries (the oldest is dropped),
so memory stays bounded whatever names and addresses are tried.  The tables
live in this process: with ``[smtp] processes`` > 1 each receiving process
counts on its own (a guesser whose connections are spread over N processes
gets up to N times ``auth_max_failures`` attempts per lockout period).

Decisions (``AuthGuard``) are pure, with the clock injected; ``Authenticator``
adds the waiting: the per-client lock, the delay, the bounded pool of scrypt
checks in threads.
"""

from __future__ import annotations

import asyncio
import copy
import enum
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from mailwright import passwords
from mailwright.config import (
    AUTH_TRACKED_ENTRIES,
    MAX_CONCURRENT_PASSWORD_CHECKS,
    Config,
    SmtpConfig,
)
from mailwright.model import Address
from mailwright.policy.clientkey import client_key
from mailwright.protocol import replies
from mailwright.protocol.reply import Reply

#: An account name that is not an address is tracked by this many characters at most.
MAX_ACCOUNT_NAME = 256

Clock = Callable[[], float]
PasswordCheck = Callable[[str, str | None], bool]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(slots=True)
class _Failures:
    count: int
    expires: float


class FailureTable:
    """Recent failures per key; each key forgotten ``ttl`` seconds after its last failure.

    Entries are kept in the order of their last failure, which is also the
    order in which they expire (the ttl is the same for all): expired entries
    are dropped from the front, and beyond ``max_entries`` the oldest goes
    first.  Every operation is O(1) amortised.
    """

    def __init__(self, ttl: float, max_entries: int) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self._entries: OrderedDict[Hashable, _Failures] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def count(self, key: Hashable, now: float) -> int:
        self._expire(now)
        entry = self._entries.get(key)
        return entry.count if entry is not None else 0

    def add(self, key: Hashable, now: float) -> int:
        """Record one failure of ``key``; returns its recent failures, this one included."""
        self._expire(now)
        entry = self._entries.pop(key, None)
        count = entry.count + 1 if entry is not None else 1
        self._entries[key] = _Failures(count, now + self._ttl)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        return count

    def forgive(self, key: Hashable, failures: int, now: float) -> None:
        """Take back ``failures`` of ``key``'s failures (never below none)."""
        self._expire(now)
        entry = self._entries.get(key)
        if entry is None or failures <= 0:
            return
        entry.count -= failures
        if entry.count <= 0:
            del self._entries[key]

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries:
            key, entry = next(iter(entries.items()))
            if entry.expires > now:
                return
            del entries[key]


def account_key(username: str) -> str:
    """The account an AUTH user name names: its address key, else the name case-folded.

    Names that are not addresses are tracked too (cut to ``MAX_ACCOUNT_NAME``),
    so the delay does not reveal which accounts exist.
    """
    try:
        return Address.from_text(username).key
    except ValueError:
        return username.casefold()[:MAX_ACCOUNT_NAME]


class AuthGuard:
    """The decisions about one AUTH attempt, from recent failures; pure, clock injected."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock = time.monotonic,
        max_entries: int = AUTH_TRACKED_ENTRIES,
    ) -> None:
        smtp = config.smtp
        self._smtp = smtp
        self._clock = clock
        self.by_client = FailureTable(smtp.auth_lockout, max_entries)
        self.by_client_account = FailureTable(smtp.auth_lockout, max_entries)
        self.by_account = FailureTable(smtp.auth_lockout, max_entries)

    def reloaded(self, smtp: SmtpConfig) -> AuthGuard:
        """The same failure tables (a reload forgives no guesser), judged by ``smtp``'s
        limits.  How long a failure is remembered (``auth_lockout``) waits for a restart."""
        guard = copy.copy(self)
        guard._smtp = smtp
        return guard

    def locked_out(self, client: str) -> bool:
        """True while ``client`` has ``auth_max_failures`` recent failures: answer 454."""
        return self.by_client.count(client, self._clock()) >= self._smtp.auth_max_failures

    def delay(self, account: str) -> float:
        """Seconds to wait before checking a password for ``account`` (its recent failures)."""
        return self._smtp.auth_delay(self.by_account.count(account, self._clock()))

    def failed(self, client: str, account: str) -> int:
        """Record a failed check; returns the client's recent failures, this one included."""
        now = self._clock()
        self.by_client_account.add((client, account), now)
        self.by_account.add(account, now)
        return self.by_client.add(client, now)

    def succeeded(self, client: str, account: str) -> None:
        """The owner got in: forgive this client's failures on this account, and only those."""
        now = self._clock()
        mistakes = self.by_client_account.count((client, account), now)
        self.by_client_account.forgive((client, account), mistakes, now)
        self.by_client.forgive(client, mistakes, now)
        self.by_account.forgive(account, mistakes, now)


class AuthOutcome(enum.Enum):
    OK = "ok"
    FAILED = "failed"
    LOCKED_OUT = "locked-out"


_REPLIES = {
    AuthOutcome.OK: replies.AUTH_OK,
    AuthOutcome.FAILED: replies.AUTH_FAILED,
    AuthOutcome.LOCKED_OUT: replies.AUTH_LOCKED_OUT,
}


@dataclass(frozen=True, slots=True)
class AuthResult:
    """What became of one AUTH: the reply to send and what to log."""

    outcome: AuthOutcome
    client: str  # client_key of the peer
    user: str | None = None  # the mailbox key, when OK
    failures: int = 0  # the client's recent failures after this attempt

    @property
    def reply(self) -> Reply:
        return _REPLIES[self.outcome]


class _KeyedLocks:
    """One lock per key, kept only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class Authenticator:
    """Checks AUTH credentials against the configured mailboxes; one per server process.

    ``verify`` runs in a thread (scrypt takes a tenth of a second and 32 MiB),
    at most ``max_checks`` at once over all clients and one at a time per
    client; unknown users cost one derivation too, so timing does not reveal
    who exists.  ``clock`` and ``sleep`` are injected so tests need not wait.
    """

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock = time.monotonic,
        verify: PasswordCheck = passwords.verify_password,
        sleep: Sleep = asyncio.sleep,
        max_checks: int = MAX_CONCURRENT_PASSWORD_CHECKS,
    ) -> None:
        self._mailboxes = config.mailboxes
        self.guard = AuthGuard(config, clock=clock)
        self._verify = verify
        self._sleep = sleep
        self._checks = asyncio.Semaphore(max_checks)
        self._per_client = _KeyedLocks()

    def reloaded(self, config: Config) -> Authenticator:
        """``config``'s passwords and limits, with this one's failure counts, per-client
        locks and check slots (config/reload.py): nothing a guesser earned is forgiven."""
        authenticator = copy.copy(self)
        authenticator._mailboxes = config.mailboxes
        authenticator.guard = self.guard.reloaded(config.smtp)
        return authenticator

    def has_account(self, account: str) -> bool:
        """Whether ``account`` (an ``account_key``) may still log in: a reload may have
        removed it, or its password, since a session authenticated as it."""
        mailbox = self._mailboxes.get(account)
        return mailbox is not None and mailbox.password_hash is not None

    async def authenticate(self, peer_ip: str, username: str, password: str) -> AuthResult:
        """Decide one AUTH: locked out, or wait the account's delay and check the password."""
        client = client_key(peer_ip)
        account = account_key(username)
        guard = self.guard
        async with self._per_client.hold(client):
            if guard.locked_out(client):
                return AuthResult(AuthOutcome.LOCKED_OUT, client)
            delay = guard.delay(account)
            if delay > 0:
                await self._sleep(delay)
            mailbox = self._mailboxes.get(account)
            stored = mailbox.password_hash if mailbox is not None else None
            loop = asyncio.get_running_loop()
            async with self._checks:
                ok = await loop.run_in_executor(None, self._verify, password, stored)
            if ok and mailbox is not None:
                guard.succeeded(client, account)
                return AuthResult(AuthOutcome.OK, client, user=account)
            failures = guard.failed(client, account)
            return AuthResult(AuthOutcome.FAILED, client, failures=failures)
