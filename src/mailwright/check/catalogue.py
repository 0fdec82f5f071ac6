"""Every check, in the order of the report, each with its stable id and its RFC section.

The ids are a contract: the JSON report and ``--only`` use them, and scripts
(benchmarks/conformance.py among them) compare servers by them.
"""

from __future__ import annotations

from typing import Final

from mailwright.check import addresses, basics, extensions, grammar, messages, sequence
from mailwright.check.model import Check

CHECKS: Final[tuple[Check, ...]] = (
    Check("greeting", "RFC 5321 4.2, 4.3.1", basics.greeting),
    Check("ehlo", "RFC 5321 4.1.1.1", basics.ehlo),
    Check("helo", "RFC 5321 4.1.1.1", basics.helo),
    Check("mail-before-helo", "RFC 5321 4.1.4", sequence.mail_before_helo),
    Check("rcpt-before-mail", "RFC 5321 4.1.4", sequence.rcpt_before_mail),
    Check("data-before-rcpt", "RFC 5321 3.3", sequence.data_before_rcpt),
    Check("mail-twice", "RFC 5321 4.1.4", sequence.mail_twice),
    Check("rset-clears", "RFC 5321 4.1.1.5", sequence.rset_clears),
    Check("unknown-command", "RFC 5321 4.2.4", grammar.unknown_command),
    Check("syntax-mail", "RFC 5321 4.1.2", grammar.syntax_mail),
    Check("unknown-parameter", "RFC 5321 4.1.1.11", grammar.unknown_parameter),
    Check("null-sender", "RFC 5321 4.5.5", addresses.null_sender),
    Check("postmaster", "RFC 5321 4.5.1", addresses.postmaster),
    Check("open-relay", "RFC 5321 7.1, RFC 2505 2", addresses.open_relay),
    Check("vrfy", "RFC 5321 3.5.3, 7.3", addresses.vrfy),
    Check("expn", "RFC 5321 3.5.3, 7.3", addresses.expn),
    Check("line-too-long", "RFC 5321 4.5.3.1", grammar.line_too_long),
    Check("pipelining", "RFC 2920 3.1", extensions.pipelining),
    Check("size", "RFC 1870 6.1", extensions.size),
    Check("starttls", "RFC 3207 4", extensions.starttls),
    Check("starttls-injection", "RFC 3207 4.2", extensions.starttls_injection),
    Check("auth-plaintext", "RFC 4954 4, RFC 8314 3", extensions.auth_plaintext),
    Check("banner-version", "RFC 5321 7.5", basics.banner_version),
    Check("smuggling", "RFC 5321 4.1.1.4, 2.3.8", messages.smuggling),
    Check("end-of-data", "RFC 5321 4.1.1.4", messages.end_of_data),
)

CHECK_IDS: Final[tuple[str, ...]] = tuple(check.id for check in CHECKS)
