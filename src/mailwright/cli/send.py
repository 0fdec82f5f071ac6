"""``mailwright send``: send one message and say, reply by reply, what the server made of it.

::

    mailwright send --server HOST[:PORT] --from ADDR --to ADDR [--to ADDR ...] [FILE|-]
                    [--starttls | --no-starttls] [--user USER [--no-verify] [--plaintext-auth]]
                    [-v] [--follow-referrals] [--lang en|zh]

The message is FILE, standard input (``-``), or a short test message; Date,
Message-ID, From and To are added when missing (cli/message.py).  Each
command of the transaction is printed with its reply, every reply that is
not a success (2xx, or the 354 that DATA expects) is explained in one line
from the reply-code reference, and 251 and 551 say what the address in them
is for.  ``-v`` prints the whole transcript first.

With ``--follow-referrals`` each recipient refused with 551 is sent, in a
separate transaction, to the address the server suggested, at the next hop
for that address's domain (``--route``, else MX records; cli/referrals.py).

TLS: by default STARTTLS is used when offered, without checking the
certificate (opportunistic, RFC 7435); ``--starttls`` insists on it and on a
certificate valid for the server's name; ``--no-starttls`` never uses it.

``--user`` logs in (AUTH PLAIN or LOGIN, RFC 4954) and so puts a password on
the wire: it requires STARTTLS (``--starttls`` or not) and a certificate valid
for the server's name, and refuses (exit 3, before any AUTH) when the server
offers no STARTTLS, refuses it, or presents a certificate that does not
verify.  ``--no-verify`` accepts any certificate (still encrypted, but
anyone in the middle may read the password); ``--plaintext-auth`` allows the
login without TLS (for a test server on loopback).  Each refusal names the
option that would allow what it refused.

The report goes to standard output, failures included, so the story of a
session reads in order; only command-line errors go to standard error.  Exit
statuses are in cli/options.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, TextIO

from mailwright.cli.common import Subcommands, add_command
from mailwright.cli.message import DEFAULT_MESSAGE, complete_message
from mailwright.cli.options import (
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    add_connection_options,
    recipient,
    sender,
    server_address,
)
from mailwright.cli.referrals import (
    Outcome,
    Sent,
    Target,
    add_referral_options,
    follow,
    referrals_of,
    resolver_config,
    unique,
)
from mailwright.cli.report import (
    INDENT,
    after_refused_mail,
    codes,
    console,
    exchange,
    explanation,
    failure_lines,
    referral_hints,
    suggested_address,
)
from mailwright.cli.tls import certificate_rejected, describe_session, failure_reason
from mailwright.client import (
    CommandRefused,
    ExtensionNotOffered,
    SendResult,
    SmtpClientError,
    TlsError,
    TransactionResult,
    Transcript,
    opportunistic_tls_context,
    send,
    verifying_context,
)
from mailwright.codes import default_lang
from mailwright.config import Config
from mailwright.errors import RemoteProtocolError
from mailwright.model import Address
from mailwright.protocol.reply import Reply

PROG = "mailwright send"
DESCRIPTION = (
    "Send a message to an SMTP server and explain every reply. "
    "Exit status: 0 every recipient accepted, 1 some refused, 2 usage error, "
    "3 the server could not be reached (or closed the session early)."
)


def add_send_parser(subcommands: Subcommands) -> None:
    """Register ``send``; it runs ``run_send``."""
    summary = "send a message and explain the server's replies"
    add_arguments(add_command(subcommands, "send", run_send, help=summary, description=DESCRIPTION))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        required=True,
        type=server_address,
        metavar="HOST[:PORT]",
        help="the server to send to (port 25 when not given)",
    )
    parser.add_argument(
        "--from", dest="sender", required=True, type=sender, metavar="ADDR", help="envelope sender"
    )
    parser.add_argument(
        "--to",
        dest="recipients",
        required=True,
        action="append",
        type=recipient,
        metavar="ADDR",
        help="envelope recipient (repeat for several)",
    )
    parser.add_argument(
        "message",
        nargs="?",
        metavar="FILE|-",
        help="the message: a file, or - for standard input (default: a short test message)",
    )
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument(
        "--starttls",
        action="store_true",
        help="require STARTTLS and a certificate valid for the server's name",
    )
    tls.add_argument(
        "--no-starttls", action="store_true", help="never use STARTTLS (default: when offered)"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="print the whole SMTP transcript"
    )
    add_referral_options(parser)
    parser.add_argument(
        "--user",
        metavar="USER",
        help="authenticate as USER (AUTH PLAIN or LOGIN), only after STARTTLS with a verified "
        "certificate; the password is read from $MAILWRIGHT_PASSWORD, else asked on the terminal",
    )
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="accept any certificate for STARTTLS (--starttls, --user): still encrypted, "
        "but not safe from anyone in the middle",
    )
    parser.add_argument(
        "--plaintext-auth",
        action="store_true",
        help="with --user: allow the login without TLS (the password travels in clear)",
    )
    add_connection_options(parser)


def _password(user: str | None, err: TextIO) -> tuple[str, str] | None:
    """The credentials for --user, never from the command line (it shows in ps)."""
    if user is None:
        return None
    password = os.environ.get("MAILWRIGHT_PASSWORD")
    if password is None:
        import getpass

        password = getpass.getpass(f"Password for {user}: ", stream=err)
    return user, password


def run_send(
    args: argparse.Namespace,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    stdin: BinaryIO | None = None,
) -> int:
    """Send as ``args`` says, print the report, return the exit status.

    The streams are parameters so a caller (or a test) needs no patching.
    """
    out = console(stdout if stdout is not None else sys.stdout)
    err = stderr if stderr is not None else sys.stderr
    try:
        raw, origin = _read_message(args.message, stdin)
    except OSError as exc:
        err.write(f"{PROG}: error: cannot read {args.message}: {exc.strerror or exc}\n")
        return EXIT_USAGE
    recipients = unique(args.recipients)
    body, added = complete_message(
        raw, sender=args.sender, recipients=recipients, now=datetime.now().astimezone()
    )
    if args.user is not None and args.no_starttls and not args.plaintext_auth:
        err.write(
            f"{PROG}: error: --user with --no-starttls would send the password in clear;"
            " add --plaintext-auth to allow that\n"
        )
        return EXIT_USAGE
    try:
        login = _password(getattr(args, "user", None), err)
    except (EOFError, KeyboardInterrupt):
        err.write(f"{PROG}: error: no password for --user\n")
        return EXIT_USAGE
    note = f"; added {', '.join(added)}" if added else ""
    print(f"message: {len(raw)} octets from {origin}{note}", file=out)
    plan = _Plan(
        sender=args.sender,
        body=body,
        starttls=True if args.starttls else False if args.no_starttls else None,
        verify=not args.no_verify,
        plaintext_auth=args.plaintext_auth,
        cafile=args.cafile,
        helo=args.helo,
        timeout=args.timeout,
        verbose=args.verbose,
        login=login,
        lang=args.lang if args.lang is not None else default_lang(),
        referrals=(
            resolver_config(args.routes, args.dns_servers, args.mx_port)
            if args.follow_referrals
            else None
        ),
    )
    host, port = args.server
    return asyncio.run(_run(out, plan, Target(host, port, args.tls_name or host), recipients))


# ---------------------------------------------------------------- internals


@dataclass(frozen=True, slots=True)
class _Plan:
    """What holds for every session of one run: the main one and each referral."""

    sender: Address
    body: bytes
    starttls: bool | None
    verify: bool  # check the certificate where STARTTLS is required (False: --no-verify)
    plaintext_auth: bool  # a login may go without TLS (--plaintext-auth)
    cafile: str | None
    helo: str | None
    timeout: float
    verbose: bool
    login: tuple[str, str] | None
    lang: str
    referrals: Config | None  # where --follow-referrals looks for next hops; None: not following

    @property
    def following(self) -> bool:
        return self.referrals is not None

    def starttls_for(self, login: tuple[str, str] | None) -> bool | None:
        """A session that logs in requires STARTTLS, unless --plaintext-auth allows plain text."""
        if login is not None and not self.plaintext_auth:
            return True
        return self.starttls


async def _run(out: TextIO, plan: _Plan, target: Target, recipients: list[Address]) -> int:
    result, failure = await _session(out, plan, target, recipients, login=plan.login)
    if result is None:
        if isinstance(failure, ExtensionNotOffered) and failure.keyword != "STARTTLS":
            return EXIT_REFUSED  # reached, but it cannot take this message (e.g. SMTPUTF8)
        return EXIT_UNREACHABLE
    if _closed_by_server(result.transaction):
        # RFC 5321 3.8: 421 ends the session wherever it comes, as at the greeting.
        print("error: the server closed the session (421) before the transaction ended", file=out)
        return EXIT_UNREACHABLE
    outcome = _outcome(result.transaction)
    referrals = referrals_of(result.transaction) if plan.referrals is not None else []
    if plan.referrals is not None and referrals:

        async def send_to(hop: Target, addresses: list[Address]) -> Sent:
            return await _session(out, plan, hop, addresses)

        await follow(out, plan.referrals, plan.lang, referrals, outcome, send_to)
    print(file=out)
    print(f"result: {len(outcome.accepted)} of {len(recipients)} recipients accepted", file=out)
    for address in recipients:
        print(INDENT + outcome.lines[address.key], file=out)
    return EXIT_OK if len(outcome.accepted) == len(recipients) else EXIT_REFUSED


async def _session(
    out: TextIO,
    plan: _Plan,
    target: Target,
    recipients: list[Address],
    *,
    login: tuple[str, str] | None = None,
) -> Sent:
    """One connection: send, then print what happened; the result, or the failure."""
    print(f"server: {target.host}:{target.port}", file=out)
    transcript: Transcript = []
    starttls = plan.starttls_for(login)
    try:
        result = await send(
            plan.body,
            sender=plan.sender,
            recipients=recipients,
            host=target.host,
            port=target.port,
            starttls=starttls,
            ssl_context=_tls_context(plan, starttls),
            server_hostname=target.tls_name,
            local_hostname=plan.helo,
            timeout=plan.timeout,
            transcript=transcript,
            login=login,
        )
    except (SmtpClientError, RemoteProtocolError) as exc:
        if plan.verbose:
            _print_transcript(out, transcript)
        refusal = _login_refusal(exc, login[0]) if login and not plan.plaintext_auth else None
        if refusal is not None:
            print(refusal, file=out)
            return None, exc
        last = next((line for side, line in reversed(transcript) if side == "C"), "")
        for line in failure_lines(exc, plan.lang, last_command=last):
            print(line, file=out)
        return None, exc
    if plan.verbose:
        _print_transcript(out, transcript)
    _print_result(out, plan, result, transcript)
    return result, None


def _tls_context(plan: _Plan, starttls: bool | None) -> ssl.SSLContext | None:
    """Required STARTTLS checks the certificate (``--cafile``) unless --no-verify;
    None lets ``send`` choose its opportunistic default."""
    if starttls is True:
        return verifying_context(plan.cafile) if plan.verify else opportunistic_tls_context()
    return None


def _login_refusal(exc: Exception, user: str) -> str | None:
    """Why a login was not attempted, naming the option that would allow it; None when
    ``exc`` is not about the TLS the login required (the usual report then says what)."""
    where = f"error: not logging in as {user}"
    in_clear = "the password would travel in clear (--plaintext-auth allows that)"
    if isinstance(exc, ExtensionNotOffered) and exc.keyword == "STARTTLS":
        return f"{where}: the server does not offer STARTTLS, and {in_clear}"
    if isinstance(exc, CommandRefused) and exc.command == "STARTTLS":
        return f"{where}: the server refused STARTTLS ({exc.reply}), and {in_clear}"
    if isinstance(exc, TlsError) and certificate_rejected(exc):
        return f"{where}: {failure_reason(exc)} (--no-verify accepts any certificate)"
    if isinstance(exc, TlsError):
        return f"{where}: TLS failed ({failure_reason(exc)}), and {in_clear}"
    return None


def _print_transcript(out: TextIO, transcript: Transcript) -> None:
    print("transcript:", file=out)
    for side, line in transcript:
        print(f"{INDENT}{side}: {line}", file=out)


def _print_result(out: TextIO, plan: _Plan, result: SendResult, transcript: Transcript) -> None:
    lang = plan.lang
    mail_command = next(
        (line for side, line in transcript if side == "C" and line.startswith("MAIL FROM:")),
        f"MAIL FROM:<{plan.sender}>",
    )

    def show(command: str, reply: Reply, *, expected: int = 2) -> None:
        print(exchange(command, reply), file=out)
        if reply.code // 100 != 2 and reply.code // 100 != expected:
            print(explanation(reply, lang), file=out)

    print(f"greeting: {result.greeting}", file=out)
    if result.starttls is not None:
        show("STARTTLS", result.starttls)
    if result.tls and result.tls_info is not None:
        for line in describe_session(
            result.tls_info, datetime.now().astimezone(), certificate=False
        ):
            print(INDENT + line, file=out)
    elif result.tls_failure is not None:
        # send() goes on in plain text after a failed opportunistic handshake (RFC 7435).
        print("STARTTLS: the handshake failed; sent without TLS on a new connection", file=out)
    txn = result.transaction
    show(mail_command, txn.mail)
    for rcpt in txn.recipients:
        command = f"RCPT TO:<{rcpt.address}>"
        if rcpt.reply is None:
            print(f"{command}: not sent, since MAIL was refused", file=out)
            continue
        show(command, rcpt.reply)
        if rcpt.reply.code == 503 and not txn.mail.is_positive:
            print(after_refused_mail(lang), file=out)
        hints = referral_hints(rcpt.reply, rcpt.address, lang, suggest_follow=not plan.following)
        for line in hints:
            print(line, file=out)
    if txn.data is None:
        # With CHUNKING offered the message goes in BDAT chunks (RFC 3030), no DATA.
        verb = "BDAT" if txn.chunked else "DATA"
        if txn.end_of_data is None:
            print(f"{verb}: not sent, since no recipient was accepted", file=out)
    else:
        show("DATA", txn.data, expected=3)
        if txn.data.code == 503 and not txn.mail.is_positive:
            print(after_refused_mail(lang), file=out)
    if txn.end_of_data is not None:
        show("end of data", txn.end_of_data)
    if result.quit is not None:
        show("QUIT", result.quit)


def _outcome(txn: TransactionResult) -> Outcome:
    outcome = Outcome()
    end = txn.end_of_data
    for rcpt in txn.recipients:
        key = rcpt.address.key
        reply = rcpt.reply
        if reply is None:
            outcome.lines[key] = f"refused: {rcpt.address} (not tried: MAIL was refused)"
        elif not rcpt.accepted:
            outcome.lines[key] = f"refused: {rcpt.address} ({codes(reply)})"
        elif not txn.delivered:
            why = codes(end) if end is not None else codes(txn.data) if txn.data else "no reply"
            outcome.lines[key] = f"refused: {rcpt.address} (the message was not accepted: {why})"
        else:
            outcome.accepted.add(key)
            forward = suggested_address(reply, rcpt.address) if reply.code == 251 else None
            note = f" (the server will forward it to <{forward}>)" if forward else ""
            outcome.lines[key] = f"accepted: {rcpt.address}{note}"
    return outcome


def _closed_by_server(txn: TransactionResult) -> bool:
    replies = [txn.mail, txn.data, txn.end_of_data, *(r.reply for r in txn.recipients)]
    return any(reply is not None and reply.code == 421 for reply in replies)


def _read_message(name: str | None, stdin: BinaryIO | None) -> tuple[bytes, str]:
    if name is None:
        return DEFAULT_MESSAGE, "the built-in test message"
    if name == "-":
        stream = stdin if stdin is not None else sys.stdin.buffer
        return stream.read(), "standard input"
    return Path(name).read_bytes(), name
