"""What the client tools (``send``, ``probe``) share on the command line: exit statuses,
argument types, options.

Exit statuses are the contract scripts rely on (issue 5):

- 0: every recipient was accepted (``probe``: and every check passed).
- 1: the server answered, and refused something: a recipient, the sender or the
  message; or it lacks an extension this message needs (SMTPUTF8 for non-ASCII
  addresses), which refuses the message as surely as a 5xx would.
- 2: the command line is wrong (argparse's own convention).
- 3: the server could not be reached *as an SMTP service*: no connection,
  a timeout, the connection closed early, a greeting other than 220 (421 or
  554: the server is there but offers us no session), a 421 at any point
  (RFC 5321 3.8: the server is closing), EHLO refused, TLS required but not
  offered or failed, or a reply that broke the protocol.  In every one of
  these cases no recipient got an answer, so "1: some were refused" would be
  a claim about recipients that the server never made.
"""

from __future__ import annotations

import argparse
import ssl
from typing import Final

from mailwright.cli.common import EXIT_OK, EXIT_USAGE
from mailwright.client import DEFAULT_PORT
from mailwright.codes import LANGUAGES
from mailwright.model import Address
from mailwright.protocol.commands import CommandSyntaxError, parse_path
from mailwright.syntax import is_valid_address_literal, is_valid_domain, split_host_port

EXIT_REFUSED: Final = 1
EXIT_UNREACHABLE: Final = 3
__all__ = [
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "add_connection_options",
    "add_helo_option",
    "add_lang_option",
    "add_server_argument",
    "recipient",
    "sender",
    "sender_or_null",
    "server_address",
]

#: Seconds each step may take.  RFC 5321 4.5.3.2 allows minutes; a person at a
#: terminal wants an answer sooner, and ``--timeout`` raises it when needed.
DEFAULT_TIMEOUT: Final = 30.0


def server_address(text: str) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT`` or ``[IPv6]:PORT``; port 25 when none is given."""
    try:
        return split_host_port(text, default_port=DEFAULT_PORT)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def recipient(text: str) -> Address:
    """An address as it would go in ``RCPT TO:<...>``, checked by the protocol's own grammar."""
    return _path(text, recipient=True)


def sender(text: str) -> Address:
    """An address as it would go in ``MAIL FROM:<...>``."""
    return _path(text, recipient=False)


def sender_or_null(text: str) -> Address | None:
    """An address, or ``<>`` / ``''`` for the null reverse-path (RFC 5321 4.5.5)."""
    if text in ("", "<>"):
        return None
    return _path(text, recipient=False)


def _path(text: str, *, recipient: bool) -> Address:
    inner = text[1:-1] if text.startswith("<") and text.endswith(">") else text
    try:
        address = parse_path(f"<{inner}>", null_allowed=False, smtputf8=True, recipient=recipient)
    except CommandSyntaxError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc.reply.text}") from None
    if address is None or not address.domain:
        raise argparse.ArgumentTypeError(f"{text!r}: expected local@domain")
    return address


def helo_name(text: str) -> str:
    """A name for EHLO: a domain or an address literal like ``[192.0.2.1]`` (RFC 5321 4.1.1.1)."""
    if is_valid_address_literal(text) or is_valid_domain(text, helo=True):
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: not a host name or address literal")


def ca_file(text: str) -> str:
    """A PEM file of CA certificates, checked now so a bad one is a usage error, not a trace."""
    try:
        ssl.create_default_context(cafile=text)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
        raise argparse.ArgumentTypeError(f"{text!r}: not a readable PEM file ({reason})") from None
    return text


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive number of seconds")
    return value


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """Options every tool that talks to a server has."""
    add_helo_option(parser)
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"limit for each step: connect, each reply (default: {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--cafile",
        type=ca_file,
        metavar="FILE",
        help="trust the CA certificates in this PEM file instead of the system's",
    )
    parser.add_argument(
        "--tls-name",
        metavar="NAME",
        help="the name the certificate must be valid for (default: the host given)",
    )
    add_lang_option(parser)


def add_helo_option(parser: argparse.ArgumentParser) -> None:
    """``--helo NAME``, checked as EHLO needs it."""
    parser.add_argument(
        "--helo",
        type=helo_name,
        metavar="NAME",
        help="name to give in EHLO (default: this host's name, or an address literal)",
    )


def add_lang_option(parser: argparse.ArgumentParser) -> None:
    """``--lang en|zh`` for the explanations; None (not given) means from the locale."""
    parser.add_argument(
        "--lang",
        choices=LANGUAGES,
        default=None,
        help="language of the explanations (default: from LC_ALL, LC_MESSAGES or LANG)",
    )


def add_server_argument(parser: argparse.ArgumentParser) -> None:
    """The positional ``HOST[:PORT]`` of the tools that audit one server (``probe``, ``check``)."""
    parser.add_argument(
        "server", type=server_address, metavar="HOST[:PORT]", help="port 25 when not given"
    )
