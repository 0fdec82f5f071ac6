"""``mailwright probe``: what a server says before any mail is sent; the first thing to run.

::

    mailwright probe HOST[:PORT] [--from ADDR] [--to ADDR ...] [--no-starttls] [--lang en|zh]

Connects and shows the greeting; sends EHLO and lists the extensions offered,
each with what it means; when STARTTLS is offered, tries it with a verifying
context and shows the TLS version, cipher and certificate.  If the
certificate does not verify, the reason is shown and a second connection
takes an unverified look, so the certificate actually presented (names,
issuer, expiry, fingerprint) can be compared with what was expected.  With
``--from``/``--to`` it then runs MAIL and RCPT (never DATA: nothing is sent)
inside TLS when TLS worked, explains every reply, and ends the transaction
with RSET.  ``--to`` without ``--from`` uses the null sender ``<>``, which is
what a bounce would use.

Exit statuses as for ``send`` (tools/options.py): 1 when MAIL or a RCPT was
refused, 3 when there was no usable session.  TLS findings are reported but
do not change the status: whether an unverified certificate matters is the
sending side's policy, not a fact about the server.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

from mailwright.client import SmtpClientError, TlsError
from mailwright.codes import default_lang
from mailwright.errors import RemoteProtocolError
from mailwright.model import Address
from mailwright.protocol.reply import Reply
from mailwright.tools.capabilities import describe_capabilities
from mailwright.tools.explain import (
    INDENT,
    console,
    exchange,
    explanation,
    failure_lines,
    referral_hints,
)
from mailwright.tools.options import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    add_connection_options,
    recipient,
    sender_or_null,
    server_address,
)
from mailwright.tools.session import ProbeSession
from mailwright.tools.tls import (
    RecordingContext,
    describe_session,
    session_of,
    unverified_context,
    verifying_context,
)
from mailwright.tools.tls import failure_reason as tls_failure_reason

PROG = "mailwright probe"
DESCRIPTION = (
    "Connect to an SMTP server and show its greeting, its extensions, its TLS certificate "
    "and, with --from/--to, how it answers MAIL and RCPT (nothing is sent). "
    "Exit status: 0 all fine, 1 MAIL or a RCPT refused, 2 usage error, "
    "3 the server could not be reached (or closed the session early)."
)


def add_probe_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``probe`` on the main parser's subcommands; it runs ``run_probe``."""
    parser = subparsers.add_parser(
        "probe", help="check what an SMTP server offers and how it answers", description=DESCRIPTION
    )
    add_arguments(parser)
    parser.set_defaults(func=run_probe)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "server", type=server_address, metavar="HOST[:PORT]", help="port 25 when not given"
    )
    parser.add_argument(
        "--from",
        dest="sender",
        type=sender_or_null,
        default=None,
        metavar="ADDR",
        help="run MAIL FROM with this sender ('<>' for the null sender)",
    )
    parser.add_argument(
        "--to",
        dest="recipients",
        action="append",
        default=[],
        type=recipient,
        metavar="ADDR",
        help="run RCPT TO for this recipient (repeat for several); never DATA",
    )
    parser.add_argument(
        "--no-starttls", action="store_true", help="do not try STARTTLS even when offered"
    )
    add_connection_options(parser)


def run_probe(args: argparse.Namespace, *, stdout: TextIO | None = None) -> int:
    """Probe as ``args`` says, print the findings, return the exit status."""
    out = console(stdout if stdout is not None else sys.stdout)
    host, port = args.server
    plan = _Plan(
        host=host,
        port=port,
        tls_name=args.tls_name or host,
        cafile=args.cafile,
        helo=args.helo,
        timeout=args.timeout,
        lang=args.lang if args.lang is not None else default_lang(),
        starttls=not args.no_starttls,
        sender=args.sender,
        transaction=args.sender is not None or bool(args.recipients),
        recipients=tuple(dict.fromkeys(args.recipients)),
    )
    return asyncio.run(_Probe(out, plan).run())


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point (``python -m mailwright.tools probe ...``)."""
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    add_arguments(parser)
    return run_probe(parser.parse_args(argv))


# ---------------------------------------------------------------- internals


@dataclass(frozen=True, slots=True)
class _Plan:
    host: str
    port: int
    tls_name: str
    cafile: str | None
    helo: str | None
    timeout: float
    lang: str
    starttls: bool
    sender: Address | None
    transaction: bool  # --from or --to given: run MAIL (and RCPT)
    recipients: tuple[Address, ...]


class _SessionOver(Exception):
    """The server ended the session (421, or EHLO refused) after saying why; exit 3."""


class _Probe:
    """The steps of one probe, printing as it goes."""

    def __init__(self, out: TextIO, plan: _Plan) -> None:
        self.out = out
        self.plan = plan
        self.session: ProbeSession | None = None

    def say(self, line: str = "") -> None:
        print(line, file=self.out)

    async def run(self) -> int:
        plan = self.plan
        self.say(f"server: {plan.host}:{plan.port}")
        try:
            session = await self._open()
            if plan.starttls and session.capabilities.starttls:
                session = await self._starttls(session)
            elif plan.starttls:
                self.say("STARTTLS: not offered, so mail to this server travels unencrypted")
            status = await self._transaction(session) if plan.transaction else EXIT_OK
            quit_reply = await session.quit()
            if quit_reply is not None:
                self._show("QUIT", quit_reply, explain=quit_reply.code != 221)
            return status
        except _SessionOver:
            return EXIT_UNREACHABLE
        except (SmtpClientError, RemoteProtocolError) as exc:
            last = self.session.last_command if self.session is not None else ""
            for line in failure_lines(exc, plan.lang, last_command=last):
                self.say(line)
            return EXIT_UNREACHABLE
        finally:
            await self._close()

    async def _open(self, *, quiet: bool = False) -> ProbeSession:
        """A new connection, greeted and EHLO'd; the previous one is closed."""
        await self._close()
        plan = self.plan
        self.session = session = ProbeSession(
            plan.host, plan.port, timeout=plan.timeout, helo_name=plan.helo
        )
        greeting = await session.connect()
        if not quiet or greeting.code != 220:
            self.say(f"greeting: {greeting}")
        if greeting.code != 220:
            # RFC 5321 3.1: 554 (no service here) or 421 (not now); either way no session.
            self.say(explanation(greeting, plan.lang))
            await session.quit()
            raise _SessionOver
        await self._ehlo(session, quiet=quiet)
        return session

    async def _ehlo(
        self, session: ProbeSession, *, quiet: bool = False, after_tls: bool = False
    ) -> None:
        line, reply = await session.ehlo()
        if not quiet or reply.code != 250:
            self.say(f"{line} -> {reply.code} {reply.lines[0]}".rstrip())
        if reply.code != 250:
            self.say(explanation(reply, self.plan.lang))
            raise _SessionOver
        if quiet:
            return
        if line.startswith("HELO"):
            self.say(INDENT + "the server does not know EHLO: it offers no extensions")
            return
        described = describe_capabilities(session.capabilities, self.plan.lang)
        heading = "capabilities after STARTTLS" if after_tls else "capabilities"
        self.say(f"{heading}:" if described else f"{heading}: none")
        width = max((len(keyword) for keyword, _ in described), default=0)
        for keyword, meaning in described:
            self.say(f"{INDENT}{keyword.ljust(width)}  {meaning}")

    async def _starttls(self, session: ProbeSession) -> ProbeSession:
        """STARTTLS with verification; on failure, a second look without it.

        Returns the session to go on with: inside TLS when a handshake worked,
        else a plain one.
        """
        plan = self.plan
        context = verifying_context(plan.cafile)
        try:
            reply = await session.starttls(context, plan.tls_name)
        except TlsError as exc:
            self.say(f"STARTTLS -> handshake failed: {tls_failure_reason(exc)}")
        else:
            self._show("STARTTLS", reply, explain=reply.code != 220)
            if reply.code != 220:
                if session.closed:
                    raise _SessionOver
                return session  # RFC 3207 4: after a 454 the plain session goes on
            self._describe_tls(context)
            await self._ehlo(session, after_tls=True)
            return session
        # The failed handshake spoilt the connection: look again, without verifying.
        self.say("second look, without verifying the certificate:")
        session = await self._open(quiet=True)
        if not session.capabilities.starttls:
            self.say("STARTTLS: no longer offered on a new connection; going on without TLS")
            return session
        context = unverified_context()
        try:
            reply = await session.starttls(context, plan.tls_name)
        except TlsError as exc:
            self.say(f"STARTTLS -> handshake failed again: {tls_failure_reason(exc)}")
            self.say("going on without TLS, on a new connection")
            return await self._open(quiet=True)
        if reply.code != 220:
            self._show("STARTTLS", reply)
            return session if not session.closed else await self._open(quiet=True)
        self._describe_tls(context)
        await self._ehlo(session, after_tls=True)
        return session

    def _describe_tls(self, context: RecordingContext) -> None:
        tls = session_of(context)
        if tls is None:
            return
        for line in describe_session(tls, datetime.now().astimezone()):
            self.say(INDENT + line)

    async def _transaction(self, session: ProbeSession) -> int:
        """MAIL, each RCPT, RSET: every reply shown and explained; DATA is never sent."""
        plan = self.plan
        addresses = [str(a) for a in (plan.sender, *plan.recipients) if a is not None]
        smtputf8 = not all(a.isascii() for a in addresses)
        if smtputf8 and not session.capabilities.smtputf8:
            self.say(
                "MAIL: not sent: the addresses are not ASCII, which needs SMTPUTF8 "
                "(RFC 6531), and the server does not offer it"
            )
            return EXIT_REFUSED
        command, mail = await session.mail(plan.sender, smtputf8=smtputf8)
        self._show(command, mail)
        self._check_open(session)
        refused = not mail.is_positive
        if refused:
            for recipient in plan.recipients:
                self.say(f"RCPT TO:<{recipient}>: not sent, since MAIL was refused")
        else:
            for recipient in plan.recipients:
                command, reply = await session.rcpt(recipient)
                self._show(command, reply)
                for line in referral_hints(reply, recipient, plan.lang, suggest_follow=False):
                    self.say(line)
                self._check_open(session)
                refused = refused or reply.code not in (250, 251)
        command, reply = await session.rset()
        self._show(command, reply)
        self._check_open(session)
        return EXIT_REFUSED if refused else EXIT_OK

    def _check_open(self, session: ProbeSession) -> None:
        """After a 421 the server is gone (RFC 5321 3.8): stop, as an early close."""
        if session.closed:
            self.say("error: the server closed the session")
            raise _SessionOver

    def _show(self, command: str, reply: Reply, *, explain: bool = True) -> None:
        self.say(exchange(command, reply))
        if explain:
            self.say(explanation(reply, self.plan.lang))

    async def _close(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            await session.close()
