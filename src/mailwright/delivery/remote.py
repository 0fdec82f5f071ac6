"""SMTP delivery to other servers: routes, MX hosts in order, TLS policy, connection reuse.

Built on the same sans-I/O core as the server (through mailwright.client), never
smtplib.  For each destination domain the next hops come from routes.py; each
is tried in order until one gives an answer about the recipients.  A reply is
the answer: 2xx delivered (251 too: the next hop forwards, RFC 5321 3.4), 4xx
deferred, 5xx bounced (551 included: we do not reroute, RFC 5321 7.4).
Connection failures, timeouts, 4xx greetings and replies that break the SMTP
grammar move on to the next host and, when every host failed, defer.  Errors
are temporary unless proven permanent.

The MAIL FROM of a transaction is the message's sender, except for forwarded
recipients ([forward], [aliases], a reversed SRS address) when SRS is on: they
leave with the SRS form of the sender (mailauth/srs.py), so the next hop checks
SPF against us.  The queue keeps the original sender and the SRS form is made at
each attempt with the clock of that attempt, so a restart changes nothing and
a bounce we write ourselves still goes to the original sender.  Recipients of
one domain that need different senders go in separate transactions.

A reply's text is the peer's to choose: before it becomes an attempt's
outcome (stored in the queue, logged, quoted in a bounce) every non-printable
code point is taken out (``printable_text``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from mailwright.client import (
    CommandRefused,
    DsnRequest,
    ExtensionNotOffered,
    MalformedReply,
    SmtpClient,
    SmtpClientError,
    Timeouts,
    TlsError,
    TlsMode,
    TlsPolicy,
    TransactionResult,
    needs_smtputf8,
    open_session,
)
from mailwright.config import Config
from mailwright.delivery.notify import expansions
from mailwright.delivery.outcome import (
    INTERNAL_ERROR,
    NO_END_OF_DATA_REPLY,
    Outcome,
    no_exchanger_reached,
    out_of_time,
)
from mailwright.delivery.routes import NextHop, RouteResolver
from mailwright.errors import DeliveryError
from mailwright.logfmt import kv
from mailwright.mailauth import srs
from mailwright.model import Address, Notify, Target
from mailwright.protocol.reply import Reply
from mailwright.queue.base import QueuedMessage, QueuedRecipient, QueueStore

log = logging.getLogger("mailwright.delivery")

IDLE_CONNECTION_SECONDS = 5.0  # an idle connection kept for the next message to the same host
MAX_MESSAGES_PER_CONNECTION = 100


@dataclass
class _Idle:
    client: SmtpClient
    since: float
    used: int


#: Kept connections are shared by next hop (address, port) and TLS policy.
PoolKey = tuple[str, int, TlsMode]


class ConnectionPool:
    """Idle connections by (address, port), so one connection carries several messages."""

    def __init__(self) -> None:
        self._idle: dict[PoolKey, list[_Idle]] = defaultdict(list)

    def take(self, key: PoolKey) -> _Idle | None:
        now = time.monotonic()
        entries = self._idle.get(key, [])
        while entries:
            entry = entries.pop()
            if now - entry.since <= IDLE_CONNECTION_SECONDS and entry.client.connected:
                return entry
            asyncio.get_running_loop().create_task(_quit(entry.client))
        return None

    def give_back(self, key: PoolKey, client: SmtpClient, used: int) -> None:
        client.deadline = None  # the attempt that used it is over; the next one sets its own
        if used >= MAX_MESSAGES_PER_CONNECTION or not client.connected:
            asyncio.get_running_loop().create_task(_quit(client))
            return
        self._idle[key].append(_Idle(client, time.monotonic(), used))

    async def close(self) -> None:
        entries = [e for items in self._idle.values() for e in items]
        self._idle.clear()
        await asyncio.gather(*(_quit(e.client) for e in entries), return_exceptions=True)


class DestinationLimits:
    """At most ``limit`` deliveries at once per destination; the rest wait their turn.

    A destination is named by its first next hop (the route's host, or the
    primary MX): domains hosted together share one limit, as they share the
    receiving servers.  A waiting delivery then usually takes the connection the
    previous one gave back to the pool.  Entries exist only while in use, so
    many different destinations leave nothing behind.  A delivery waits here
    before it takes one of the global slots (``SmtpDeliverer``), so deliveries
    queued behind a slow destination hold nothing the others need.
    """

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self._entries: dict[str, _Slots] = {}

    @contextlib.asynccontextmanager
    async def slot(self, destination: str) -> AsyncIterator[None]:
        entry = self._entries.get(destination)
        if entry is None:
            entry = self._entries[destination] = _Slots(asyncio.Semaphore(self.limit))
        entry.users += 1  # running or waiting
        try:
            async with entry.semaphore:
                yield
        finally:
            entry.users -= 1
            if not entry.users:
                del self._entries[destination]

    def in_use(self) -> int:
        """Destinations with a delivery running or waiting (for tests and stats)."""
        return len(self._entries)

    def full(self, destination: str) -> bool:
        """Whether a delivery to ``destination`` would have to wait for its turn now."""
        entry = self._entries.get(destination)
        return entry is not None and entry.semaphore.locked()


@dataclass
class _Slots:
    semaphore: asyncio.Semaphore
    users: int = 0


async def _quit(client: SmtpClient) -> None:
    try:
        await client.quit()
    finally:
        await client.close()


class _HostFailed(Exception):
    """This host gave no answer about the recipients; try the next one."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


class SmtpDeliverer:
    """The RemoteDeliverer of the worker: one message, its remote recipients.

    ``[delivery] concurrency`` bounds the SMTP deliveries running at once, over
    all destinations.  A delivery takes its destination's slot first and one of
    these global slots second: had it taken a global slot first, deliveries
    waiting for one slow destination would hold every global slot and stop
    delivery everywhere (a destination that accepts connections and never
    answers, say).
    """

    def __init__(
        self,
        config: Config,
        store: QueueStore,
        resolver: RouteResolver,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.srs = srs.from_config(config)
        self.clock = clock
        self.store = store
        self.resolver = resolver
        self.pool = ConnectionPool()
        self.limits = DestinationLimits(config.delivery.destination_concurrency)
        self.slots = asyncio.Semaphore(max(1, config.delivery.concurrency))
        # Every other step gets RFC 5321 4.5.3.2's minimum, the client's defaults.
        self.timeouts = Timeouts(connect=config.delivery.connect_timeout)

    async def close(self) -> None:
        await self.pool.close()

    def reload(self, config: Config, resolver: RouteResolver) -> None:
        """SIGHUP (app.py): ``[routes]``, their TLS modes and SRS as ``config`` says, from
        the next connection on; slots, limits and kept connections stay.  The keys read
        only here at start (``[delivery]``) keep their values (config/reload.py)."""
        self.config, self.srs, self.resolver = config, srs.from_config(config), resolver

    async def deliver(
        self,
        message: QueuedMessage,
        recipients: Sequence[QueuedRecipient],
        *,
        deadline: float | None = None,
        on_wait: Callable[[bool], None] | None = None,
    ) -> dict[int, Outcome]:
        """An Outcome for every recipient; ``deadline`` (``loop.time()``) ends the attempt.

        The domains of one message are delivered at the same time, so a slow
        one holds up no other, and an error in one stays in it (a temporary
        failure of its recipients).  Whatever is not done by the deadline
        (waiting for a connection, a DNS lookup, an SMTP step) is a temporary
        failure, tried again later.  ``on_wait(True)`` is called when a
        delivery has to wait for its destination's turn or a global slot,
        ``on_wait(False)`` when it stops waiting (the worker claims other work
        meanwhile).
        """
        # One transaction per domain and MAIL FROM (forwarded copies may need the SRS one).
        groups: dict[tuple[str, Address | None], list[QueuedRecipient]] = defaultdict(list)
        now = self.clock()
        for rcpt in recipients:
            sender = self.envelope_sender(message.sender, rcpt.target, now)
            groups[rcpt.target.address.domain_key, sender].append(rcpt)
        jobs = [
            self._deliver_domain_alone(message, sender, domain, rcpts, deadline, on_wait)
            for (domain, sender), rcpts in groups.items()
        ]
        if len(jobs) == 1:  # the usual case: no task of its own
            return await jobs[0]
        results: dict[int, Outcome] = {}
        for outcome in await asyncio.gather(*jobs):
            results.update(outcome)
        return results

    def envelope_sender(self, sender: Address | None, target: Target, now: float) -> Address | None:
        """The MAIL FROM for ``target``: the SRS form of ``sender`` when it is forwarded.

        Not rewritten: the null sender (nothing may bounce, RFC 5321 4.5.5), a
        sender in a local domain (our own SPF covers it), a relayed recipient
        (the client sends as itself), and everything when SRS is off.
        """
        if sender is None or self.srs is None or not target.forwarded:
            return sender
        if sender.domain_key in self.config.local_domains:
            return sender
        return self.srs.forward(sender, now)

    async def _deliver_domain_alone(
        self,
        message: QueuedMessage,
        sender: Address | None,
        domain: str,
        rcpts: list[QueuedRecipient],
        deadline: float | None,
        on_wait: Callable[[bool], None] | None,
    ) -> dict[int, Outcome]:
        """``_deliver_domain``, an error in it a temporary failure of its recipients only."""
        try:
            return await self._deliver_domain(message, sender, domain, rcpts, deadline, on_wait)
        except Exception as exc:
            log.error(
                kv(event="delivery-error", id=message.queue_id, domain=domain, error=repr(exc)),
                exc_info=exc,
            )
            return _all(rcpts, INTERNAL_ERROR)

    async def _deliver_domain(
        self,
        message: QueuedMessage,
        sender: Address | None,
        domain: str,
        rcpts: list[QueuedRecipient],
        deadline: float | None,
        on_wait: Callable[[bool], None] | None,
    ) -> dict[int, Outcome]:
        try:
            async with asyncio.timeout_at(deadline):
                hops = await self.resolver.next_hops(domain)
        except DeliveryError as exc:
            return _all(rcpts, exc.reply)
        except TimeoutError:
            return _all(rcpts, out_of_time(f"looking up {domain}"))
        last = no_exchanger_reached(domain)
        #: A host that failed for now may take the message at a later attempt: then a
        #: permanent failure of another host (no BINARYMIME) is not the destination's answer.
        down_for_now: Reply | None = None
        destination = hops[0].host.lower() if hops else domain
        async with contextlib.AsyncExitStack() as turn:
            waits = self.limits.full(destination) or self.slots.locked()
            if waits and on_wait is not None:
                on_wait(True)
            try:
                async with asyncio.timeout_at(deadline):
                    await turn.enter_async_context(self.limits.slot(destination))
                    await turn.enter_async_context(self.slots)
            except TimeoutError:
                waited = f"waiting for a connection to {destination}"
                return _all(rcpts, out_of_time(waited))
            finally:
                if waits and on_wait is not None:
                    on_wait(False)
            for hop in hops:
                if deadline is not None and asyncio.get_running_loop().time() >= deadline:
                    last = out_of_time(f"delivering to {destination}")
                    break
                try:
                    mode = self._tls_mode(domain)
                    result = await self._via(hop, message, sender, rcpts, mode, deadline)
                except _HostFailed as exc:
                    last = exc.reply
                    if exc.reply.is_transient:
                        down_for_now = exc.reply
                    log.info(
                        kv(
                            event="host-failed",
                            id=message.queue_id,
                            host=hop.host,
                            address=f"{hop.address}:{hop.port}",
                            reply=str(exc.reply),
                        )
                    )
                    continue
                return _attempts(result, rcpts, hop)
        if last.is_permanent and down_for_now is not None:
            last = down_for_now
        return _all(rcpts, last)

    def _tls_mode(self, domain: str) -> TlsMode:
        """The route's own ``tls`` (exact domain, then "*"), else ``delivery.tls``."""
        route_tls = self.config.route_tls
        return TlsMode(route_tls.get(domain) or route_tls.get("*") or self.config.delivery.tls)

    async def _via(
        self,
        hop: NextHop,
        message: QueuedMessage,
        sender: Address | None,
        rcpts: list[QueuedRecipient],
        mode: TlsMode,
        deadline: float | None,
    ) -> TransactionResult:
        key = (hop.address, hop.port, mode)
        idle = self.pool.take(key)
        if idle is not None:
            # RSET goes in front of the transaction's pipelined commands: no round trip.
            idle.client.reset_before_next()
            idle.client.deadline = deadline
            client, used = idle.client, idle.used
        else:
            client, used = await self._open(hop, mode, deadline), 0
        binary = message.options.body == "BINARYMIME"
        if binary and not client.capabilities.binary_mime:
            # RFC 3030 3: a binary body is never converted; another host may take it.
            self.pool.give_back(key, client, used)
            raise _HostFailed(binarymime_not_offered(hop.host))
        addresses = [r.target.address for r in rcpts]
        if needs_smtputf8(sender, addresses) and not client.capabilities.smtputf8:
            # RFC 6531 3.2: never to a server without SMTPUTF8; another host may take it.
            self.pool.give_back(key, client, used)
            raise _HostFailed(smtputf8_not_offered(hop.host))
        while True:
            replies_before = client.replies_read
            try:
                # The queue reads the body off the event loop; opened for each try, so
                # a try on a new connection sends it from its start.
                async with self.store.read_body(message.queue_id) as body:
                    result = await client.send_transaction(
                        sender,
                        addresses,
                        body,
                        size=message.size,
                        binarymime=binary,
                        dsn=dsn_request(message, rcpts),
                    )
                break
            except SmtpClientError as exc:
                await client.close()
                if idle is None or client.replies_read != replies_before:
                    raise _HostFailed(_reply_of(exc)) from None
                # The kept connection had been closed by the server: it answered
                # nothing of this transaction, so it took nothing. A new one.
                idle = None
                client, used = await self._open(hop, mode, deadline), 0
        if result.mail.is_transient and not result.accepted:
            # A 4xx to MAIL is about this host (e.g. greylisting, load): try the next one.
            await _quit(client)
            raise _HostFailed(result.mail)
        self.pool.give_back(key, client, used + 1)
        return result

    async def _open(self, hop: NextHop, mode: TlsMode, deadline: float | None) -> SmtpClient:
        """Connect, EHLO and apply the TLS policy; _HostFailed when this host is no good."""
        ca_file = self.config.delivery.ca_file
        policy = TlsPolicy(mode, server_hostname=hop.host, cafile=ca_file)
        try:
            opened = await open_session(
                hop.address,
                hop.port,
                policy,
                timeouts=self.timeouts,
                local_hostname=self.config.hostname,
                deadline=deadline,
            )
        except SmtpClientError as exc:
            raise _HostFailed(_open_failure(exc, hop, policy)) from None
        return opened.client


def binarymime_not_offered(host: str) -> Reply:
    """RFC 3030 3 and RFC 3463 X.6.3: the next hop cannot take a BINARYMIME body and
    conversion is not supported; permanent, as the message will not change."""
    return Reply(
        554,
        "5.6.3",
        f"{host} does not offer BINARYMIME; a binary message is not converted (RFC 3030 3)",
    )


def smtputf8_not_offered(host: str) -> Reply:
    """RFC 6531 3.2 and 3.6 (X.6.7): an address of the message is not ASCII and the next
    hop does not offer SMTPUTF8; permanent, as the addresses will not change."""
    return Reply(553, "5.6.7", f"{host} does not offer SMTPUTF8, which a non-ASCII address needs")


def _open_failure(exc: SmtpClientError, hop: NextHop, policy: TlsPolicy) -> Reply:
    """Why ``hop`` is no good: the TLS policy's own refusals first, then ``_reply_of``."""
    if policy.required:
        mode = policy.mode.value
        if isinstance(exc, ExtensionNotOffered) and exc.keyword == "STARTTLS":
            return Reply(454, "4.7.10", f"{hop.host} does not offer STARTTLS (delivery.tls={mode})")
        starttls_refused = isinstance(exc, CommandRefused) and exc.command == "STARTTLS"
        if isinstance(exc, TlsError) or starttls_refused:
            return Reply(454, "4.7.5", f"TLS with {hop.host} failed: {exc}")
    return _reply_of(exc)


def _reply_of(exc: SmtpClientError) -> Reply:
    """The reply an attempt that failed with ``exc`` is recorded with: always temporary."""
    if isinstance(exc, MalformedReply):
        # RFC 3463 3.6: X.5.0, something was wrong with the protocol to the next hop.
        return Reply(451, "4.5.0", f"Protocol error: {exc}")
    if exc.reply is not None and exc.reply.code >= 400:
        reply = exc.reply
        # A refusal of the connection itself is about this host: never final.
        return Reply(451, "4.4.0", f"{reply}") if reply.is_permanent else reply
    return Reply(451, "4.4.1", f"Connection problem: {exc}")


def _all(rcpts: Sequence[QueuedRecipient], reply: Reply) -> dict[int, Outcome]:
    """The same outcome for every recipient: no host took part in it."""
    outcome = Outcome(reply.printable())
    return {r.index: outcome for r in rcpts}


def _attempts(
    result: TransactionResult, rcpts: Sequence[QueuedRecipient], hop: NextHop
) -> dict[int, Outcome]:
    relay = f"{hop.host}[{hop.address}]:{hop.port}"
    out: dict[int, Outcome] = {}
    end = result.end_of_data or result.data
    for rcpt, answer in zip(rcpts, result.recipients, strict=True):
        reply = answer.reply or result.mail
        if not answer.accepted:
            outcome = reply
        elif result.delivered:
            assert result.end_of_data is not None
            outcome = result.end_of_data
            if reply.code == 251:  # the next hop forwards: keep its forward-path
                outcome = outcome.with_text(f"{outcome.text} ({reply})")
        elif end is not None and end.code >= 400:
            outcome = end
        else:
            outcome = NO_END_OF_DATA_REPLY
        out[rcpt.index] = Outcome(outcome.printable(), relay, result.dsn_passed_on)
    return out


def dsn_request(message: QueuedMessage, rcpts: Sequence[QueuedRecipient]) -> DsnRequest | None:
    """What the sender asked of DSN, passed on to the next hop (RFC 3461 5.2.2): RET and
    ENVID as given, and each recipient's NOTIFY (only when given: the next hop has
    its own default) and ORCPT.  None when nothing was asked."""
    options = message.options
    grouped = expansions(message.recipients)
    recipients = tuple(
        (_notify_passed_on(r.target, r.target.original.key in grouped), r.target.orcpt)
        for r in rcpts
    )
    if options.ret is None and options.envid is None and not any(n or o for n, o in recipients):
        return None
    return DsnRequest(options.ret, options.envid, recipients)


def _notify_passed_on(target: Target, alias_member: bool) -> str | None:
    """The NOTIFY a next hop is given for ``target``: as the sender gave it, except that a
    member of an alias with several targets loses SUCCESS, since the alias's one
    ``expanded`` report answers it (RFC 3461 6.2.7.3; Postfix does the same): the
    members' own success reports would tell the sender who is on the list.  The
    members are seen among the recipients of this claim; one delivered in an
    earlier attempt is not, which at worst lets a next hop report one more success.
    """
    notify = target.notify
    if not notify.given:
        return None
    if alias_member and notify.wants("SUCCESS"):
        rest = notify.keywords - {"SUCCESS"}
        return str(Notify(rest, given=True)) if rest else "NEVER"
    return str(notify)
