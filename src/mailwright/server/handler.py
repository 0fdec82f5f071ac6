"""What the server answers to each event of one session: policy, then storage.

The protocol core has already checked syntax and sequence (protocol/state.py);
here each command is decided (routing, relay permission, sender ownership, the
free-space reserve, AUTH) and proceeds (the transaction, the spool, the queue's
commit).  The session (server/session.py) moves the bytes; this module never
touches the transport, so a policy decision is never mixed up with flow control.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from mailwright.config.schema import DKIM_HELD_IN_MEMORY, MAX_VERIFIED_SIGNATURES
from mailwright.errors import QueueUnavailable, StorageError
from mailwright.logfmt import kv
from mailwright.mailauth.arc import ArcPlan
from mailwright.mailauth.dkim import SigningKey, SigningPlan
from mailwright.mailauth.dns import SharedLookups
from mailwright.mailauth.verify import check_spf
from mailwright.policy.auth import AuthOutcome, account_key
from mailwright.protocol import replies
from mailwright.protocol.events import (
    Auth,
    AuthChallenge,
    Bdat,
    BodyChunk,
    BodyRejected,
    Data,
    Ehlo,
    EndOfChunk,
    Event,
    Help,
    Mail,
    Noop,
    ProtocolViolation,
    Quit,
    Rcpt,
    Rset,
    Vrfy,
)
from mailwright.protocol.reply import Reply
from mailwright.protocol.server import ServerConnection
from mailwright.server.services import SessionServices
from mailwright.server.transaction import MailTransaction, TraceInfo

log = logging.getLogger("mailwright.smtpd")

MAX_LOGGED_USER_NAME = 256  # a failed AUTH logs the name tried, cut to this many characters


@dataclass(frozen=True, slots=True)
class Peer:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class SessionHandler:
    """Answers the events of one session; owns its mail transaction.

    Who the client said it is (HELO), whether TLS is on and who authenticated
    are read from the protocol core, the one record of them.
    """

    def __init__(
        self,
        services: SessionServices,
        conn: ServerConnection,
        peer: Peer,
        *,
        current: Callable[[], SessionServices] | None = None,
    ) -> None:
        """``current``: the listener's services now (a reload swaps them); None: always
        ``services``."""
        self._services = services
        self._current = current or (lambda: services)
        self.conn = conn
        self.peer = peer
        self.transaction: MailTransaction | None = None
        self._auth_name: str | None = None  # the AUTH name ``_auth_key`` was parsed from
        self._auth_key: str | None = None
        self.messages = 0  # queued in this session
        self.quit = False

    @property
    def services(self) -> SessionServices:
        """The current services between transactions; from MAIL to the end of the
        message, the ones MAIL was decided with (a reload meanwhile waits for the
        next transaction: see SessionServices)."""
        if self.transaction is None:
            self._services = self._current()
        return self._services

    @property
    def authenticated_user(self) -> str | None:
        """The mailbox key of the user who authenticated, None before.

        Derived from the core's record (the one source of truth), parsed once
        per AUTH: MAIL and every RCPT ask for it.
        """
        name = self.conn.authenticated
        if name is None:
            return None
        if name != self._auth_name:
            self._auth_name, self._auth_key = name, account_key(name)
        return self._auth_key

    def answer(self, event: Event) -> Reply | None:
        """The reply to an event that needs no waiting; None for a piece of the body."""
        match event:
            case BodyChunk(data=data):
                if self.transaction is not None:
                    self.transaction.feed(data)
                return None
            case Bdat():
                self._start_chunks()
                return None  # the reply follows the chunk's octets (RFC 3030 2)
            case EndOfChunk(size=size):
                refusal = self._chunks_refused()
                return refusal or replies.chunk_received(size)
            case BodyRejected(reply=reply):
                self.drop_transaction()
                self.refused("DATA", reply)
                return reply
            case ProtocolViolation(reply=reply):
                self.refused("command", reply)
                return reply
            case Ehlo(hostname=name, extended=extended):
                self.drop_transaction()
                hostname = self.services.config.hostname
                capabilities = self.conn.capabilities() if extended else ()
                return replies.greets(hostname, name, capabilities)
            case Mail():
                return self._mail(event)
            case AuthChallenge(reply=reply):
                return reply
            case Rcpt():
                return self._rcpt(event)
            case Data():
                return self._start_data()
            case Rset():
                self.drop_transaction()
                return replies.RESET_OK
            case Noop():
                return replies.NOOP_OK
            case Vrfy():
                # Never disclose which users exist (RFC 5321 3.5.3 allows 252).
                return replies.VRFY_CANNOT
            case Help():
                return replies.HELP
            case Quit():
                self.quit = True
                return replies.BYE
        raise AssertionError(f"unhandled event {event!r}")  # pragma: no cover

    async def authenticate(self, event: Auth) -> Reply:
        """Ask policy/auth.py: a lockout (454), or the account's delay, then the check."""
        result = await self.services.auth.authenticate(
            self.peer.host, event.username, event.password
        )
        if result.outcome is AuthOutcome.OK:
            log.info(
                kv(event="auth", client=str(self.peer), user=result.user, mechanism=event.mechanism)
            )
        else:
            self.services.metrics.auth_failures.inc()
            log.info(
                kv(
                    event=f"auth-{result.outcome.value}",
                    client=str(self.peer),
                    user=event.username[:MAX_LOGGED_USER_NAME],
                    mechanism=event.mechanism,
                    failures=result.failures or None,
                )
            )
        return result.reply

    async def end_data(self, size: int) -> Reply:
        """The end of the body: loop check, then 250 only once the queue has it on disk."""
        refusal = self._chunks_refused()
        if refusal is not None:
            return refusal
        services = self.services  # the transaction's, before it ends here
        txn, self.transaction = self.transaction, None
        assert txn is not None and txn.spool is not None
        if txn.loops(services.config.smtp.max_received_headers):
            txn.discard()
            self.refused("DATA", replies.TOO_MANY_HOPS)
            return replies.TOO_MANY_HOPS
        try:
            signed_by: list[SigningKey] = []
            if txn.held is not None:
                finished = await txn.finish_held(
                    services.dkim,
                    authserv_id=services.config.hostname,
                    max_signatures=MAX_VERIFIED_SIGNATURES,
                )
                if finished.verdict is not None:
                    self._log_verdicts(finished.verdict)
                if finished.refused:
                    assert finished.dmarc is not None and finished.dmarc.from_domain is not None
                    reply = replies.dmarc_rejected(finished.dmarc.from_domain)
                    self.refused("DATA", reply)
                    return reply
                signed_by = finished.signed_by
            queue_id = await txn.commit(services.store)
        except QueueUnavailable as exc:  # the database is away: not a full disk
            log.error(kv(event="store-error", client=str(self.peer), error=exc))
            self.refused("DATA", replies.LOCAL_ERROR)
            return replies.LOCAL_ERROR
        except StorageError as exc:
            log.error(kv(event="store-error", client=str(self.peer), error=exc))
            self.refused("DATA", replies.STORAGE_FULL)
            return replies.STORAGE_FULL
        self.messages += 1
        self.services.metrics.messages.inc()
        self.services.metrics.message_bytes.inc(size)
        log.info(
            kv(
                event="queued",
                id=queue_id,
                client=str(self.peer),
                helo=self.conn.helo_name,
                sender=f"<{txn.sender or ''}>",
                recipients=",".join(f"<{r}>" for r in txn.recipients),
                size=size,
                dkim=",".join(f"{key.domain}/{key.selector}" for key in signed_by) or None,
                result=250,
            )
        )
        services.on_enqueued(queue_id)
        return replies.queued(queue_id)

    def refused(self, command: str, reply: Reply) -> None:
        log.info(kv(event="refused", client=str(self.peer), command=command, reply=str(reply)))

    def drop_transaction(self) -> None:
        if self.transaction is not None:
            self.transaction.discard()
            self.transaction = None

    # ------------------------------------------------------------ commands

    def _mail(self, event: Mail) -> Reply:
        """Sender ownership for authenticated users, then room on the disk for the message."""
        sender, user = event.sender, self.authenticated_user
        if user is not None and not self.services.auth.has_account(user):
            reply = replies.account_removed(user)
            self.refused(f"MAIL FROM:<{sender or ''}>", reply)
            return reply
        if user is not None and not self.services.relay.sender_allowed(user, sender):
            reply = replies.sender_not_owned(user)
            self.refused(f"MAIL FROM:<{sender}>", reply)
            return reply
        refusal = self._space_refusal(event.size)
        if refusal is not None:
            self.refused(f"MAIL FROM:<{sender or ''}>", refusal)
            return refusal
        self.transaction = MailTransaction(mail=event)
        self._start_verdicts(self.transaction)
        return replies.SENDER_OK

    def waits_at_mail(self) -> bool:
        """MAIL is answered only after the SPF check (``[verify] spf = "enforce"``)."""
        verify = self.services.config.verify
        return verify.spf_enforced and not self.services.relay.may_relay(
            self.peer.host, self.authenticated_user
        )

    async def mail_after_spf(self, event: Mail) -> Reply:
        """MAIL with SPF enforced: 550 5.7.23 on fail, 451 4.7.24 on temperror (RFC 7372
        3.2); any other result is recorded at the end of the body and the mail goes on."""
        reply = self._mail(event)
        txn = self.transaction
        if reply is not replies.SENDER_OK or txn is None or txn.spf_check is None:
            return reply
        verdict = await txn.spf_check
        if verdict.result == "fail":
            reply = replies.spf_failed(verdict.domain, self.peer.host)
        elif verdict.result == "temperror":
            reply = replies.spf_temporary(verdict.domain)
        else:
            return reply
        if self.transaction is txn:
            self.drop_transaction()
        self.refused(f"MAIL FROM:<{event.sender or ''}>", reply)
        return reply

    def _start_verdicts(self, txn: MailTransaction) -> None:
        """``[verify]`` for mail from strangers (neither authenticated nor in ``[relay]
        networks``): the SPF lookups start now, while the client sends RCPT and the
        body; DKIM waits for the whole message (``MailTransaction.finish_held``)."""
        services = self.services
        verify = services.config.verify
        if (
            not verify.any
            or services.resolver is None
            or services.relay.may_relay(self.peer.host, self.authenticated_user)
        ):
            return
        txn.lookups = SharedLookups(services.resolver)
        if verify.spf_on:
            sender = str(txn.sender) if txn.sender is not None else None
            txn.spf_check = asyncio.create_task(
                check_spf(txn.lookups, self.peer.host, sender, self.conn.helo_name)
            )
        txn.verify_dkim = verify.dkim_on
        txn.verify_dmarc = verify.dmarc_on
        txn.enforce_dmarc = verify.dmarc_enforced
        if verify.arc == "record":
            txn.arc = ArcPlan(client_ip=self.peer.host)

    def _log_verdicts(self, header: bytes) -> None:
        """Our Authentication-Results header, as one log line."""
        verdicts = header.decode().split(";", 1)[-1].replace("\r\n\t", " ").strip()
        log.info(kv(event="verdicts", client=str(self.peer), results=verdicts))

    def _space_refusal(self, size: int | None) -> Reply | None:
        """452 4.3.1 below the free-space reserve, or when SIZE= would not fit above it.

        RFC 1870 6.1 (1): a server that lacks the storage for a message of the
        declared size now, but may have it later, answers MAIL with 452.
        """
        try:
            room = self.services.space.room()
        except OSError as exc:  # cannot tell: the store refuses at DATA if it must
            log.warning(kv(event="space-check-failed", client=str(self.peer), error=exc))
            return None
        if room <= 0:
            return replies.STORAGE_FULL
        if size is not None and size > room:
            return replies.NO_ROOM_FOR_SIZE
        return None

    def _rcpt(self, event: Rcpt) -> Reply:
        txn = self.transaction
        assert txn is not None
        services, recipient = self.services, event.recipient
        may_relay = services.relay.may_relay(self.peer.host, self.authenticated_user)
        decision = services.router.route_recipient(recipient, may_relay=may_relay)
        if decision.reply.code < 400:
            txn.add_recipient(recipient, decision, event.notify, event.orcpt)
        else:
            self.refused(f"RCPT TO:<{recipient}>", decision.reply)
        return decision.reply

    def _start_data(self) -> Reply:
        txn = self.transaction
        assert txn is not None
        conn, services = self.conn, self.services
        trace = TraceInfo(
            hostname=services.config.hostname,
            helo=conn.helo_name,
            peer_host=self.peer.host,
            esmtp=conn.esmtp,
            tls=conn.tls,
            authenticated=conn.authenticated is not None,
            date=services.received_stamp.now(),
        )
        try:
            txn.open_spool(services.store, trace)
            plan = self._signing_plan(txn)
            self._plan_seal(txn)
            # A verdict header or a signature goes on top: the body waits for its end.
            if txn.verifying or plan is not None:
                txn.hold_for_signing(plan, DKIM_HELD_IN_MEMORY, services.config.data_dir)
        except (OSError, StorageError) as exc:
            log.error(kv(event="spool-error", client=str(self.peer), error=exc))
            txn.discard()
            return replies.STORAGE_FULL
        return replies.START_DATA

    def _start_chunks(self) -> None:
        """The first BDAT chunk of a transaction starts the body as DATA does (trace
        header, spool, signing); a failure is answered once the chunk is read."""
        txn = self.transaction
        assert txn is not None  # the core takes BDAT only after an accepted MAIL and RCPT
        if txn.spool is not None or txn.refusal is not None:
            return  # a later chunk
        reply = self._start_data()
        if reply is not replies.START_DATA:
            txn.refusal = reply

    def _chunks_refused(self) -> Reply | None:
        """The refusal of a BDAT transaction whose body could not be started; it ends there."""
        txn = self.transaction
        if txn is None or txn.refusal is None:
            return None
        reply = txn.refusal
        self.drop_transaction()
        self.refused("BDAT", reply)
        return reply

    def _plan_seal(self, txn: MailTransaction) -> None:
        """``[arc] seal``: mail forwarded to another host is sealed, whoever sent it (as
        the forwarder's DKIM signature), after its chain is checked (RFC 8617 5.1)."""
        key = self.services.arc_seal_key
        if (
            key is not None
            and self.services.resolver is not None
            and any(target.forwarded for target in txn.targets)
        ):
            txn.arc = ArcPlan(client_ip=self.peer.host, seal=key)
            if txn.lookups is None:  # [verify] is off: the chain is checked for the seal
                txn.lookups = SharedLookups(self.services.resolver)

    def _signing_plan(self, txn: MailTransaction) -> SigningPlan | None:
        """Which DKIM signatures the message may get; None when it gets none.

        The author's: mail our own clients send out, relayed to another host,
        from a client that authenticated or is in ``[relay] networks`` (whether a
        key fits the From: domain is known only at the end of the body).  The
        forwarder's: mail forwarded to another host while SRS is on, whoever
        sent it, with the SRS domain's key.  Mail that stays here is not signed:
        nobody downstream checks it.
        """
        services = self.services
        author = (
            bool(services.dkim)
            and any(not target.local for target in txn.targets)
            and services.relay.may_relay(self.peer.host, self.authenticated_user)
        )
        forwarder = services.forwarder_key
        if forwarder is not None and not any(target.forwarded for target in txn.targets):
            forwarder = None
        if not author and forwarder is None:
            return None
        return SigningPlan(author=author, forwarder=forwarder)
