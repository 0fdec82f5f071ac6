"""``mailwright dkim keygen``: a DKIM private key for ``[[dkim.keys]]`` and the record to publish.

The key is written with mode 0600 and never over an existing file (that key
may already be published); the DNS record is printed as one zone-file line on
standard output, so ``>> zone`` or a copy and paste both work.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mailwright.cli.common import EXIT_OK, EXIT_USAGE, Subcommands, add_command

#: Could not write the key (it exists, or the folder is not writable).
EXIT_CANNOT_WRITE = 1


def add_dkim_parser(subcommands: Subcommands) -> None:
    """Register ``dkim`` and its ``keygen``."""
    parser = add_command(subcommands, "dkim", None, help="DKIM signing keys")
    actions = parser.add_subparsers(dest="dkim_command", required=True, metavar="ACTION")
    keygen = actions.add_parser(
        "keygen",
        help="write a private key (mode 0600) and print its DNS TXT record",
        description="Write a DKIM private key for [[dkim.keys]] and print the TXT record "
        "to publish at SELECTOR._domainkey.DOMAIN.",
    )
    keygen.add_argument("domain", metavar="DOMAIN", help="the d= domain (the From: domain)")
    keygen.add_argument("selector", metavar="SELECTOR", help="the s= selector, e.g. 2026a")
    keygen.add_argument("--algorithm", choices=("rsa", "ed25519"), default="rsa")
    keygen.add_argument("--bits", type=int, default=None, help="RSA key size (default 2048)")
    keygen.add_argument("--out", metavar="FILE", help="key file (default DOMAIN.SELECTOR.key)")
    keygen.set_defaults(func=run_keygen)


def run_keygen(args: argparse.Namespace) -> int:
    from mailwright.mailauth import dkim

    domain, selector = args.domain.rstrip(".").lower(), args.selector
    problem = _refusal(args, domain, selector)
    if problem:
        print(f"mailwright: {problem}", file=sys.stderr)
        return EXIT_USAGE
    out = Path(args.out or f"{domain}.{selector}.key")
    pem = dkim.generate_private_key(args.algorithm, args.bits or dkim.DEFAULT_RSA_BITS)
    try:
        dkim.write_private_key(out, pem)
    except FileExistsError:
        print(f"mailwright: {out} exists; not overwritten (choose another --out)", file=sys.stderr)
        return EXIT_CANNOT_WRITE
    except OSError as exc:
        print(f"mailwright: cannot write {out} ({exc.strerror})", file=sys.stderr)
        return EXIT_CANNOT_WRITE
    algorithm, public = dkim.public_key_value(pem)
    print(dkim.record_line(domain, selector, dkim.record_text(algorithm, public)))
    print(f"mailwright: private key written to {out}", file=sys.stderr)
    return EXIT_OK


def _refusal(args: argparse.Namespace, domain: str, selector: str) -> str:
    """Why the arguments cannot make a usable key and record; empty when they can."""
    from mailwright.mailauth.dkim import MAX_RSA_BITS, MIN_RSA_BITS
    from mailwright.syntax import is_domain_name as domain_ok

    if not domain_ok(domain):
        return f"{args.domain!r} is not a domain"
    if not domain_ok(selector) or selector.endswith("."):
        return f"{selector!r} is not a selector (letters, digits, hyphens, dots)"
    if args.bits is not None:
        if args.algorithm != "rsa":
            return "--bits is for RSA keys only"
        if not MIN_RSA_BITS <= args.bits <= MAX_RSA_BITS:
            return f"--bits must be from {MIN_RSA_BITS} to {MAX_RSA_BITS} (RFC 8301)"
    return ""
