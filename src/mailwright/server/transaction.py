"""One mail transaction, MAIL to the end of data, apart from the session that carries it.

As OpenSMTPD's ``smtp_tx``: the transaction owns the sender, the recipients and
the targets they route to, the spool the body goes to, our trace header and the
commit to the queue.  RSET, EHLO, a refused body or the end of the session drop
it (``discard``); nothing of it outlives that.  It also counts the message's
``Received:`` headers for mail-loop detection (RFC 5321 6.3).
"""

from __future__ import annotations

import asyncio
import functools
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

from mailwright.errors import StorageError
from mailwright.mailauth import results
from mailwright.mailauth.arc import ArcPlan, check_arc, seal
from mailwright.mailauth.dkim import MessageSigner, SigningKey, SigningPlan
from mailwright.mailauth.dmarc import DmarcVerdict, aligned, check_dmarc, from_domain
from mailwright.mailauth.dns import SharedLookups
from mailwright.mailauth.verify import SpfVerdict, check_dkim
from mailwright.model import JUNK_FOLDER, NOTIFY_NOT_GIVEN, Address, Notify
from mailwright.policy.routing import RecipientDecision, unique_targets
from mailwright.protocol.events import Mail
from mailwright.protocol.reply import Reply
from mailwright.queue.base import BodySpool, QueueStore, Target, local_copy_prefix

HEADER_SCAN_LIMIT = 256 * 1024  # octets of the header section scanned for Received: lines


class HeaderScanner:
    """Counts Received: headers in the header section, for mail-loop detection (RFC 5321 6.3).

    Linear in the header section however it arrives: each piece is searched for
    the blank line once, with the three bytes before it (a CRLF CRLF split
    across pieces), never the whole section again.  ``examined`` counts the
    bytes searched, so a test can prove it.
    """

    def __init__(self, limit: int = HEADER_SCAN_LIMIT) -> None:
        self.received = 0
        self.done = False
        self.examined = 0
        self._limit = limit
        self._head = bytearray()

    def feed(self, data: bytes) -> None:
        if self.done:
            return
        start = max(0, len(self._head) - 3)
        self._head += data
        self.examined += len(self._head) - start
        end = self._head.find(b"\r\n\r\n", start)
        if end == -1 and len(self._head) < self._limit:
            return
        head = bytes(self._head[: end if end != -1 else self._limit])
        self.done = True
        self._head = bytearray()
        self.received = sum(1 for line in head.split(b"\r\n") if line[:9].lower() == b"received:")

    def finish(self) -> None:
        if not self.done:
            self.feed(b"\r\n\r\n")


class ReceivedStamp:
    """RFC 5322 date of this second for the Received header, made once per second.

    email.utils.format_datetime costs as much as parsing a command; a busy
    server stamps many messages in the same second.  One per server, held by
    SessionServices (no module global).
    """

    def __init__(self) -> None:
        self._second = 0
        self._text = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._text = format_datetime(datetime.fromtimestamp(second, UTC))
        return self._text


def _aligned_first(message: bytes) -> Callable[[str], bool] | None:
    """Which DKIM signatures to check first: those aligned with the From: domain (relaxed,
    RFC 7489 3.1.1), the only ones DMARC counts; None when there is no single one."""
    author, _ = from_domain(message)
    if author is None:
        return None
    return functools.partial(_aligned_with, author)


def _aligned_with(author: str, domain: str) -> bool:
    return aligned(domain, author, strict=False)


def _read_held(held: tempfile.SpooledTemporaryFile[bytes], forged_of: str | None) -> bytes:
    """In a worker thread: the held message, without the verdicts forged in the name of
    ``forged_of`` (our authserv-id) when it is given."""
    held.seek(0)
    message = held.read()
    if forged_of is None:
        return message
    cleaned, _removed = results.remove_ours(message, forged_of)
    return cleaned


@dataclass(frozen=True, slots=True)
class Finished:
    """What ``MailTransaction.finish_held`` did with the held message."""

    signed_by: list[SigningKey]
    verdict: bytes | None  # our Authentication-Results header; None when not verifying
    dmarc: DmarcVerdict | None
    #: DMARC enforced and p=reject: the message was dropped, to be refused (550 5.7.26).
    refused: bool = False


@dataclass(frozen=True, slots=True)
class TraceInfo:
    """What our Received header says about the session (RFC 5321 4.4, RFC 3848)."""

    hostname: str  # ours
    helo: str | None
    peer_host: str
    esmtp: bool
    tls: bool
    authenticated: bool
    date: str


@dataclass
class MailTransaction:
    """MAIL ... end of data: who sends to whom, where the body goes, and the commit."""

    mail: Mail
    recipients: list[Address] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    spool: BodySpool | None = None
    headers: HeaderScanner = field(default_factory=HeaderScanner)
    #: The body of a message to be DKIM-signed, kept apart until its end (``hold_for_signing``).
    held: tempfile.SpooledTemporaryFile[bytes] | None = None
    #: Which signatures the held message may get, decided when DATA started.
    signing: SigningPlan | None = None
    #: The SPF check started at MAIL (``[verify] spf``), awaited at the end of the body.
    spf_check: asyncio.Task[SpfVerdict] | None = None
    #: ``[verify] dkim``: the signatures are checked at the end of the body.
    verify_dkim: bool = False
    #: ``[verify] dmarc``: the From domain's policy, with the SPF and DKIM verdicts.
    verify_dmarc: bool = False
    #: ``[verify] dmarc = "enforce"``: p=reject refuses the message, p=quarantine files it.
    enforce_dmarc: bool = False
    #: The message's checks ask the DNS through this, each question once.
    lookups: SharedLookups | None = None
    #: BDAT: the body could not be started (no spool); the answer to the chunk's end.
    refusal: Reply | None = None
    #: ``[verify] arc`` or ``[arc] seal``: the ARC chain is checked, and sealed if planned.
    arc: ArcPlan | None = None

    @property
    def verifying(self) -> bool:
        """True when the message gets our Authentication-Results header (``finish_held``)."""
        return self.spf_check is not None or self.verify_dkim or self.arc is not None

    @property
    def sender(self) -> Address | None:
        return self.mail.sender

    def add_recipient(
        self,
        recipient: Address,
        decision: RecipientDecision,
        notify: Notify = NOTIFY_NOT_GIVEN,
        orcpt: str | None = None,
    ) -> None:
        """An accepted RCPT: the address as given and the targets it routes to, each with
        the RCPT's DSN parameters.

        A target the address was forwarded or expanded to keeps ORCPT, or gets the
        address as given when the client sent none (RFC 3461 4.2: the original
        recipient is what the sender knows), so its reports name it.
        """
        self.recipients.append(recipient)
        for target in decision.targets:
            original = orcpt
            if original is None and target.address.key != recipient.key:
                kind = "rfc822" if str(recipient).isascii() else "utf-8"  # RFC 6533 3
                original = f"{kind};{recipient}"
            if notify.given or original is not None:
                target = replace(target, notify=notify, orcpt=original)
            self.targets.append(target)

    def open_spool(self, store: QueueStore, trace: TraceInfo) -> None:
        """Start the body with our trace header; OSError or StorageError when it cannot.

        A message for one local mailbox tells the store the trace lines of that
        copy, so that a body too large for memory can be written once, as the
        Maildir file itself (queue/base.py ``new_spool``).
        """
        targets = unique_targets(self.targets)
        one_local = len(targets) == 1 and targets[0].local
        prefix = local_copy_prefix(self.sender, targets[0].address) if one_local else b""
        self.spool = store.new_spool(prefix)
        self.spool.write(self.received_header(trace))

    def hold_for_signing(self, plan: SigningPlan | None, in_memory: int, folder: Path) -> None:
        """Keep the body apart until its end, so a DKIM-Signature can go on top of it.

        A signature covers the whole body, and the spool only appends: so the
        body waits here (``in_memory`` octets, then an unnamed file in
        ``folder``) and ``finish_held`` moves it to the spool, our verdict and
        the signatures first.  ``plan`` None: no signature, only the verdict.
        """
        self.signing = plan
        # Closed by sign() or discard(): it outlives this call by design.
        self.held = tempfile.SpooledTemporaryFile(  # noqa: SIM115
            max_size=in_memory, mode="w+b", dir=str(folder)
        )

    def feed(self, data: bytes) -> None:
        """A piece of the body, already dot-unstuffed by the core."""
        if self.spool is not None:
            self.headers.feed(data)
            if self.held is not None:
                self.held.write(data)
            else:
                self.spool.write(data)

    async def finish_held(
        self, signer: MessageSigner, *, authserv_id: str, max_signatures: int
    ) -> Finished:
        """Spool the held message: our verdict header, then the signatures, then the message.

        When verifying (``verifying``), fields ``Authentication-Results`` that
        claim ``authserv_id`` are removed first (RFC 8601 5) and ours goes right
        under our Received: (added at the top by the receiving ADMD).  With
        DMARC enforced, a fail under p=reject is refused here, before anything
        is spooled, and one under p=quarantine sends the local copies to .Junk
        (``quarantine``).  Signing happens once, here, so every delivery attempt
        sends the same signed bytes; so does the ARC seal (mailauth/arc.py), on
        top of our verdict.  StorageError when the held body cannot be read
        back; on any failure or refusal, nothing of the message stays behind.
        """
        assert self.spool is not None and self.held is not None
        held, self.held = self.held, None
        verdict: bytes | None = None
        sealed = b""
        signed: list[tuple[SigningKey, bytes]] = []
        dmarc: DmarcVerdict | None = None
        try:
            try:
                forged_of = authserv_id if self.verifying else None
                message = await asyncio.to_thread(_read_held, held, forged_of)
            except OSError as exc:
                raise StorageError(f"cannot read back the held message: {exc}") from exc
            finally:
                held.close()
            if self.verifying:
                lookups = self.lookups
                assert lookups is not None
                spf = await self.spf_check if self.spf_check is not None else None
                dkim = (
                    await check_dkim(lookups, message, max_signatures, _aligned_first(message))
                    if self.verify_dkim
                    else None
                )
                dmarc = (
                    await check_dmarc(lookups, message, spf, dkim or ())
                    if self.verify_dmarc
                    else None
                )
                arc = (
                    await check_arc(lookups, message, self.arc.client_ip)
                    if self.arc is not None
                    else None
                )
                verdict = results.header(authserv_id, spf, dkim, dmarc, arc)
                if self.enforce_dmarc and dmarc is not None:
                    if dmarc.disposition == "reject":
                        self.discard()
                        return Finished([], verdict, dmarc, refused=True)
                    if dmarc.disposition == "quarantine":
                        self.quarantine()
                sealed = await seal(self.arc, arc, verdict, message, authserv_id)
            if self.signing is not None:
                signed = await asyncio.to_thread(signer.sign, message, self.signing)
        except BaseException:  # cancelled too: nothing of the message may stay behind
            self.discard()
            raise
        self.spool.write(sealed)  # ARC set first: RFC 8617 5.1 prepends it
        if verdict is not None:
            self.spool.write(verdict)
        for _, header in signed:
            self.spool.write(header)
        self.spool.write(message)
        return Finished([key for key, _ in signed], verdict, dmarc)

    def quarantine(self) -> None:
        """The local copies go to the recipients' Junk folder (RFC 7489 6.7: "quarantine"
        is the receiver's choice of place; a Maildir++ .Junk is what mail readers show as
        spam).  Forwarded and relayed copies go out as they are, our verdict on top: the
        next hop decides for itself."""
        self.targets = [
            replace(target, folder=JUNK_FOLDER) if target.local else target
            for target in self.targets
        ]

    def loops(self, max_received: int) -> bool:
        """True when the message has more Received: headers than allowed: a mail loop."""
        self.headers.finish()
        return self.headers.received > max_received

    async def commit(self, store: QueueStore) -> str:
        """Make the message durable; its queue id.  StorageError when it could not be kept."""
        assert self.spool is not None
        spool, self.spool = self.spool, None
        try:
            return await store.enqueue(
                self.sender, unique_targets(self.targets), spool, self.mail.options
            )
        except BaseException:
            spool.discard()
            raise

    def discard(self) -> None:
        if self.spf_check is not None and not self.spf_check.done():
            self.spf_check.cancel()
        if self.held is not None:
            self.held.close()
            self.held = None
        if self.spool is not None:
            self.spool.discard()
            self.spool = None

    def received_header(self, trace: TraceInfo) -> bytes:
        """Our trace header (RFC 5321 4.4), first in the stored message."""
        protocol = "ESMTP" if trace.esmtp else "SMTP"
        if self.mail.smtputf8:
            protocol = "UTF8SMTP"  # RFC 6531 3.7.3
        if protocol != "SMTP":
            # RFC 3848 (and RFC 6531 for UTF8SMTP): S for TLS, A for AUTH.
            protocol += ("S" if trace.tls else "") + ("A" if trace.authenticated else "")
        rcpt = f"\r\n\tfor <{self.recipients[0]}>" if len(self.recipients) == 1 else ""
        header = (
            f"Received: from {trace.helo or 'unknown'} ([{trace.peer_host}])\r\n"
            f"\tby {trace.hostname} (mailwright) with {protocol}{rcpt};\r\n"
            f"\t{trace.date}\r\n"
        )
        return header.encode("utf-8")
