"""open_session: connect, greet, EHLO and STARTTLS as a TLS policy says, in one place.

Every caller that opens a session to send through uses this: the delivery
worker (delivery/remote.py), ``send()`` and so ``mailwright send``, and
``mailwright probe``.  What the policy says (client/tls.py):

- NEVER: no STARTTLS.
- OPPORTUNISTIC: STARTTLS when offered.  A handshake that fails spoils the
  connection, so the next context is tried on a new one, and after the last,
  the session goes on in plain text on a new connection, which is what it
  would have had anyway (RFC 7435).  A refusal of STARTTLS (454) leaves the
  plain-text session usable, so it goes on there (RFC 3207 4).
- REQUIRED and VERIFY: STARTTLS or nothing.  ExtensionNotOffered when it is
  not offered, CommandRefused when it is refused, TlsError when the last
  handshake failed; the connection is closed first, and nothing but EHLO and
  STARTTLS was sent on it.

Whatever else goes wrong (no connection, a greeting other than 220, EHLO
refused, a 421) is raised as the client's own error, the connection closed.
``SessionObserver`` is told of each step as it happens, which is how
``probe`` reports a session while it is being opened.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from mailwright.client.channel import Timeouts, Transcript
from mailwright.client.errors import CommandRefused, ExtensionNotOffered, TlsError
from mailwright.client.session import DEFAULT_PORT, SmtpClient
from mailwright.client.tls import ContextFactory, TlsMode, TlsPolicy
from mailwright.protocol.reply import Reply


class SessionObserver:
    """The steps of ``open_session`` as they happen; every hook here does nothing.

    ``attempt`` counts connections: 0 is the first, and each failed handshake
    opens another.  ``client.last_command`` is the command a reply answered.
    """

    def connecting(self, client: SmtpClient, attempt: int) -> None:
        """A connection is about to be opened with ``client``."""

    def greeted(self, client: SmtpClient, attempt: int) -> None:
        """The 220 greeting arrived (``client.greeting``); EHLO is next."""

    def hello(self, client: SmtpClient, attempt: int, *, tls: bool) -> None:
        """EHLO (or HELO) was accepted: ``client.ehlo_reply`` and ``client.capabilities``."""

    def starttls_not_offered(self, client: SmtpClient, attempt: int) -> None:
        """The EHLO reply has no STARTTLS; the policy allows plain text."""

    def starttls_refused(self, client: SmtpClient, reply: Reply, attempt: int) -> None:
        """STARTTLS got ``reply``, not 220; the session goes on in plain text on this connection."""

    def tls_started(self, client: SmtpClient, reply: Reply, attempt: int) -> None:
        """The handshake after ``reply`` (220) succeeded (``client.tls_info``); EHLO is next."""

    def tls_failed(self, error: TlsError, attempt: int) -> None:
        """The handshake failed: the next attempt follows, or ``error`` is raised."""


@dataclass(frozen=True, slots=True)
class OpenedSession:
    """A session ready for MAIL, and how it came to be.

    ``ehlo`` answered the first EHLO (or HELO) on this connection; with
    STARTTLS, ``starttls`` is its reply (a 220, or the refusal the session went
    on after) and ``tls_ehlo`` the reply to the EHLO sent inside TLS.
    ``tls_failure`` is the failed handshake that made an opportunistic session
    go on in plain text on a new connection.
    """

    client: SmtpClient
    greeting: Reply
    ehlo: Reply
    starttls: Reply | None = None
    tls_ehlo: Reply | None = None
    tls_failure: TlsError | None = None


async def open_session(
    host: str,
    port: int = DEFAULT_PORT,
    tls: TlsPolicy | None = None,
    *,
    timeouts: Timeouts | None = None,
    local_hostname: str | None = None,
    transcript: Transcript | None = None,
    observer: SessionObserver | None = None,
    deadline: float | None = None,
) -> OpenedSession:
    """Connect to ``host``:``port`` and make the session ``tls`` asks for (see above).

    ``deadline`` (the loop's time) bounds every step of the client, as
    ``Channel.deadline`` says.  The caller owns the returned ``client``: QUIT
    and close it when done.
    """
    policy = tls or TlsPolicy()
    notify = observer or SessionObserver()
    opener = _Opener(host, port, policy, timeouts, local_hostname, transcript, notify, deadline)
    contexts = policy.context_factories() if policy.mode is not TlsMode.NEVER else ()
    failure: TlsError | None = None
    for attempt, context in enumerate(contexts):
        try:
            return await opener.open(attempt, context)
        except TlsError as exc:
            opener.notify.tls_failed(exc, attempt)
            failure = exc
    if failure is not None and policy.required:
        raise failure
    opened = await opener.open(len(contexts), None)
    return replace(opened, tls_failure=failure)


@dataclass(frozen=True, slots=True)
class _Opener:
    """One ``open_session`` call: what every connection it opens shares."""

    host: str
    port: int
    policy: TlsPolicy
    timeouts: Timeouts | None
    local_hostname: str | None
    transcript: Transcript | None
    notify: SessionObserver
    deadline: float | None

    async def open(self, attempt: int, context: ContextFactory | None) -> OpenedSession:
        """One connection, with STARTTLS when ``context`` is given; closed on any error."""
        client = SmtpClient(
            timeouts=self.timeouts, transcript=self.transcript, deadline=self.deadline
        )
        self.notify.connecting(client, attempt)
        try:
            greeting = await client.connect(
                self.host, self.port, local_hostname=self.local_hostname
            )
            self.notify.greeted(client, attempt)
            ehlo = await client.ehlo()
            self.notify.hello(client, attempt, tls=False)
            opened = OpenedSession(client, greeting, ehlo)
            if context is None:
                return opened
            return await self._starttls(opened, attempt, context)
        except BaseException:
            await client.close()
            raise

    async def _starttls(
        self, opened: OpenedSession, attempt: int, context: ContextFactory
    ) -> OpenedSession:
        client, policy = opened.client, self.policy
        if not client.capabilities.starttls:
            if policy.required:
                raise ExtensionNotOffered("STARTTLS", "the TLS policy requires it")
            self.notify.starttls_not_offered(client, attempt)
            return opened
        server_hostname = policy.server_hostname or self.host
        try:
            reply = await client.starttls(context(), server_hostname, ehlo=False)
        except CommandRefused as exc:
            # A 454 leaves the plain-text session usable (RFC 3207 4); a 421 does not.
            if policy.required or not client.connected or exc.reply is None:
                raise
            self.notify.starttls_refused(client, exc.reply, attempt)
            return replace(opened, starttls=exc.reply)
        self.notify.tls_started(client, reply, attempt)
        tls_ehlo = await client.ehlo()
        self.notify.hello(client, attempt, tls=True)
        return replace(opened, starttls=reply, tls_ehlo=tls_ehlo)
