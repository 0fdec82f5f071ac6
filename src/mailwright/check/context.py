"""What a run knows and what each check is given: the plan, the server's facts, new sessions.

``CheckPlan`` is what the operator asked for (the command line, parsed).
``ServerFacts`` is what the first connection learnt (greeting, EHLO reply,
extensions with and without TLS, the addresses to use), so that checks that
only judge those need no connection of their own.  ``CheckContext`` is handed
to one check: it opens fresh sessions (each a new connection, one at a time)
and keeps the exchange the check made, which is what the report shows.

Time: every wait is bounded by ``--timeout``, and each connection as a whole
by ``SESSION_BUDGET`` timeouts (a server that drips a reply one byte at a time
just inside the timeout cannot hold a check for long), and the run by
``RUN_BUDGET`` timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Final, Literal

from mailwright.check.model import CheckError, TranscriptLine
from mailwright.check.session import CheckClient
from mailwright.client import (
    Capabilities,
    CommandRefused,
    Timeouts,
    opportunistic_tls_context,
)
from mailwright.model import Address
from mailwright.protocol.reply import Reply

#: One connection may take at most this many ``--timeout``s from connect to close.
SESSION_BUDGET: Final = 10
#: The whole run may take at most this many ``--timeout``s (about 17 minutes at 10 s);
#: against a server that answers promptly it takes a few seconds.
RUN_BUDGET: Final = 100


class TlsStart(enum.Enum):
    """How each session starts: plain text, STARTTLS after EHLO, or TLS from the first byte."""

    PLAIN = "plain"
    STARTTLS = "starttls"
    IMPLICIT = "tls"


@dataclass(frozen=True, slots=True)
class CheckPlan:
    """The run the operator asked for.

    ``sender`` and ``recipient`` None mean the defaults, settled once the first
    connection says who we are and who the server is (``ServerFacts``).
    ``only`` None means every check.
    """

    host: str
    port: int
    sender: Address | None = None
    recipient: Address | None = None
    tls: TlsStart = TlsStart.PLAIN
    deliver: bool = False
    timeout: float = 10.0
    helo: str | None = None
    only: frozenset[str] | None = None

    @property
    def target(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ServerFacts:
    """What the first connection learnt, for every check to use.

    ``plain_capabilities`` are the extensions offered before any TLS (what
    ``starttls`` and ``auth-plaintext`` judge); ``capabilities`` those of the
    sessions the checks run in (after STARTTLS with ``--starttls``).
    ``hello`` is the EHLO (or HELO) exchange as it went.
    """

    greeting: Reply
    hello: tuple[TranscriptLine, ...]
    ehlo: Reply | None
    plain_capabilities: Capabilities
    capabilities: Capabilities
    sender: Address
    recipient: Address

    @property
    def domain(self) -> str:
        """The server's own mail domain: where ``postmaster@`` and the relay tricks point."""
        return self.recipient.domain


@dataclass(slots=True)
class CheckContext:
    """One check's view of the run: the plan, the facts, fresh sessions, its transcript."""

    plan: CheckPlan
    facts: ServerFacts
    run_deadline: float
    transcript: list[TranscriptLine] = field(default_factory=list)

    @property
    def sender(self) -> Address:
        return self.facts.sender

    @property
    def recipient(self) -> Address:
        return self.facts.recipient

    @property
    def capabilities(self) -> Capabilities:
        return self.facts.capabilities

    def note(self, side: Literal["C", "S"], line: str) -> None:
        """Add a line the check did not send or read itself (a fact it judges)."""
        self.transcript.append((side, line))

    @property
    def position(self) -> int:
        """Where the next line of the transcript goes: a finding's ``evidence``."""
        return len(self.transcript)

    @contextlib.asynccontextmanager
    async def session(
        self, *, hello: bool = True, secure: bool = True
    ) -> AsyncIterator[CheckClient]:
        """A new connection, greeted, after EHLO (not with ``hello=False``) and, with
        ``--starttls``, STARTTLS (not with ``secure=False``).

        Only what the check itself sends and receives goes to its transcript
        (bounded, as the commands a check sends are, and each reply's lines);
        the client is closed on leaving, after QUIT unless it was ``abandoned``.
        """
        client = new_client(self.plan, self.run_deadline)
        try:
            greeting = await client.open(
                self.plan.host,
                self.plan.port,
                implicit_tls=implicit_tls_context(self.plan),
                local_hostname=self.plan.helo,
            )
            if greeting.code != 220:
                raise CheckError(f"a new connection was greeted with {greeting}", greeting)
            if hello:
                await _hello(client)
                if secure and self.plan.tls is TlsStart.STARTTLS:
                    await _starttls(client, self.plan.host)
            client.transcript = self.transcript
            yield client
            client.transcript = None
            if not client.abandoned:
                await client.quit()
        finally:
            await client.close()


def new_client(plan: CheckPlan, run_deadline: float) -> CheckClient:
    """A client whose every step is bounded by ``--timeout``, its session and the run."""
    loop = asyncio.get_running_loop()
    deadline = min(loop.time() + SESSION_BUDGET * plan.timeout, run_deadline)
    return CheckClient(timeouts=Timeouts.uniform(plan.timeout), transcript=[], deadline=deadline)


def implicit_tls_context(plan: CheckPlan) -> ssl.SSLContext | None:
    """With ``--tls``, a context that encrypts without checking the certificate: the checks
    are about SMTP, and a certificate is ``mailwright probe``'s business."""
    return opportunistic_tls_context() if plan.tls is TlsStart.IMPLICIT else None


async def _hello(client: CheckClient) -> Reply:
    try:
        return await client.ehlo()
    except CommandRefused as exc:
        raise CheckError(f"{exc.command} was refused: {exc.reply}", exc.reply) from None


async def _starttls(client: CheckClient, host: str) -> None:
    if not client.capabilities.starttls:
        raise CheckError("--starttls was given but the server does not offer STARTTLS")
    try:
        await client.starttls(opportunistic_tls_context(), host)
    except CommandRefused as exc:
        raise CheckError(f"{exc.command} was refused: {exc.reply}", exc.reply) from None
