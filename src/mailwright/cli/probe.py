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

The session is opened by the client's ``open_session`` under an
opportunistic policy with two contexts, verifying then not; the probe is its
``SessionObserver`` and prints each step as it happens.

Exit statuses as for ``send`` (cli/options.py): 1 when MAIL or a RCPT was
refused, 3 when there was no usable session.  TLS findings are reported but
do not change the status: whether an unverified certificate matters is the
sending side's policy, not a fact about the server.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import TextIO

from mailwright.cli.capabilities import describe_capabilities
from mailwright.cli.common import Subcommands, add_command
from mailwright.cli.options import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    add_connection_options,
    add_server_argument,
    recipient,
    sender_or_null,
)
from mailwright.cli.report import (
    INDENT,
    console,
    exchange,
    explanation,
    failure_lines,
    referral_hints,
)
from mailwright.cli.tls import describe_session, failure_reason
from mailwright.client import (
    CommandRefused,
    ExtensionNotOffered,
    SessionObserver,
    SmtpClient,
    SmtpClientError,
    Timeouts,
    TlsError,
    TlsMode,
    TlsPolicy,
    needs_smtputf8,
    open_session,
    opportunistic_tls_context,
    verifying_context,
)
from mailwright.codes import default_lang
from mailwright.errors import RemoteProtocolError
from mailwright.model import Address
from mailwright.protocol.reply import Reply

DESCRIPTION = (
    "Connect to an SMTP server and show its greeting, its extensions, its TLS certificate "
    "and, with --from/--to, how it answers MAIL and RCPT (nothing is sent). "
    "Exit status: 0 all fine, 1 MAIL or a RCPT refused, 2 usage error, "
    "3 the server could not be reached (or closed the session early)."
)


def add_probe_parser(subcommands: Subcommands) -> None:
    """Register ``probe``; it runs ``run_probe``."""
    summary = "check what an SMTP server offers and how it answers"
    add_arguments(
        add_command(subcommands, "probe", run_probe, help=summary, description=DESCRIPTION)
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_argument(parser)
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
    """The server ended the session (a 421) after saying why; exit 3."""


class _Probe(SessionObserver):
    """The steps of one probe, printing as it goes (and as ``open_session`` goes)."""

    def __init__(self, out: TextIO, plan: _Plan) -> None:
        self.out = out
        self.plan = plan
        self.client: SmtpClient | None = None  # the connection being opened or used

    def say(self, line: str = "") -> None:
        print(line, file=self.out)

    async def run(self) -> int:
        plan = self.plan
        self.say(f"server: {plan.host}:{plan.port}")
        try:
            opened = await open_session(
                plan.host,
                plan.port,
                self._policy(),
                timeouts=Timeouts.uniform(plan.timeout),
                local_hostname=plan.helo,
                observer=self,
            )
            try:
                return await self._after_hello(opened.client)
            finally:
                await opened.client.close()
        except _SessionOver:
            return EXIT_UNREACHABLE
        except CommandRefused as exc:
            self._refused(exc)
            return EXIT_UNREACHABLE
        except (SmtpClientError, RemoteProtocolError) as exc:
            last = (self.client.last_command or "connecting") if self.client else ""
            for line in failure_lines(exc, plan.lang, last_command=last):
                self.say(line)
            return EXIT_UNREACHABLE

    def _policy(self) -> TlsPolicy:
        """STARTTLS with verification; after a failed handshake a second look without it."""
        plan = self.plan
        if not plan.starttls:
            return TlsPolicy(TlsMode.NEVER)
        cafile = plan.cafile
        contexts = (lambda: verifying_context(cafile), opportunistic_tls_context)
        return TlsPolicy(TlsMode.OPPORTUNISTIC, contexts, plan.tls_name)

    async def _after_hello(self, client: SmtpClient) -> int:
        status = await self._transaction(client) if self.plan.transaction else EXIT_OK
        quit_reply = await client.quit()
        if quit_reply is not None:
            self._show("QUIT", quit_reply, explain=quit_reply.code != 221)
        return status

    def _refused(self, exc: CommandRefused) -> None:
        """A refusal that ends the session: say which, and what it means."""
        reply = exc.reply
        if reply is None or exc.command not in ("connection", "EHLO", "HELO", "STARTTLS"):
            for line in failure_lines(exc, self.plan.lang):
                self.say(line)
            return
        if exc.command == "connection":
            # RFC 5321 3.1: 554 (no service here) or 421 (not now); either way no session.
            self.say(f"greeting: {reply}")
        elif exc.command == "STARTTLS":
            self.say(exchange("STARTTLS", reply))
        else:
            command = self.client.last_command if self.client else exc.command
            self.say(f"{command} -> {reply.code} {reply.lines[0]}".rstrip())
        self.say(explanation(reply, self.plan.lang))

    # ----------------------------------------------- open_session's steps

    def connecting(self, client: SmtpClient, attempt: int) -> None:
        self.client = client

    def greeted(self, client: SmtpClient, attempt: int) -> None:
        if attempt == 0:  # the connections of a second look are quiet until TLS
            self.say(f"greeting: {client.greeting}")

    def hello(self, client: SmtpClient, attempt: int, *, tls: bool) -> None:
        reply = client.ehlo_reply
        if reply is None or (attempt > 0 and not tls):
            return
        self.say(f"{client.last_command} -> {reply.code} {reply.lines[0]}".rstrip())
        if client.last_command.startswith("HELO"):
            self.say(INDENT + "the server does not know EHLO: it offers no extensions")
            return
        described = describe_capabilities(client.capabilities, self.plan.lang)
        heading = "capabilities after STARTTLS" if tls else "capabilities"
        self.say(f"{heading}:" if described else f"{heading}: none")
        width = max((len(keyword) for keyword, _ in described), default=0)
        for keyword, meaning in described:
            self.say(f"{INDENT}{keyword.ljust(width)}  {meaning}")

    def starttls_not_offered(self, client: SmtpClient, attempt: int) -> None:
        if attempt == 0:
            self.say("STARTTLS: not offered, so mail to this server travels unencrypted")
        else:
            self.say("STARTTLS: no longer offered on a new connection; going on without TLS")

    def starttls_refused(self, client: SmtpClient, reply: Reply, attempt: int) -> None:
        self._show("STARTTLS", reply)  # RFC 3207 4: after a 454 the plain session goes on

    def tls_started(self, client: SmtpClient, reply: Reply, attempt: int) -> None:
        if attempt == 0:
            self._show("STARTTLS", reply, explain=False)
        if client.tls_info is not None:
            for line in describe_session(client.tls_info, datetime.now().astimezone()):
                self.say(INDENT + line)

    def tls_failed(self, error: TlsError, attempt: int) -> None:
        if attempt == 0:
            self.say(f"STARTTLS -> handshake failed: {failure_reason(error)}")
            self.say("second look, without verifying the certificate:")
        else:
            self.say(f"STARTTLS -> handshake failed again: {failure_reason(error)}")
            self.say("going on without TLS, on a new connection")

    # ------------------------------------------------------- the transaction

    async def _transaction(self, client: SmtpClient) -> int:
        """MAIL, each RCPT, RSET: every reply shown and explained; DATA is never sent."""
        plan = self.plan
        try:
            mail = await client.mail(
                plan.sender, smtputf8=needs_smtputf8(plan.sender, plan.recipients)
            )
        except ExtensionNotOffered:
            self.say(
                "MAIL: not sent: the addresses are not ASCII, which needs SMTPUTF8 "
                "(RFC 6531), and the server does not offer it"
            )
            return EXIT_REFUSED
        self._show(client.last_command, mail)
        self._check_open(client)
        refused = not mail.is_positive
        if refused:
            for recipient in plan.recipients:
                self.say(f"RCPT TO:<{recipient}>: not sent, since MAIL was refused")
        else:
            for recipient in plan.recipients:
                reply = await client.rcpt(recipient)
                self._show(client.last_command, reply)
                for line in referral_hints(reply, recipient, plan.lang, suggest_follow=False):
                    self.say(line)
                self._check_open(client)
                refused = refused or reply.code not in (250, 251)
        reply = await client.rset()
        self._show(client.last_command, reply)
        self._check_open(client)
        return EXIT_REFUSED if refused else EXIT_OK

    def _check_open(self, client: SmtpClient) -> None:
        """After a 421 the server is gone (RFC 5321 3.8): stop, as an early close."""
        if not client.connected:
            self.say("error: the server closed the session")
            raise _SessionOver

    def _show(self, command: str, reply: Reply, *, explain: bool = True) -> None:
        self.say(exchange(command, reply))
        if explain:
            self.say(explanation(reply, self.plan.lang))
