"""The limits and extensions of one server session: ``ProtocolConfig`` and its defaults.

The protocol core must work without any configuration, so every limit is named
here once, with the RFC that sets its floor where there is one; config/schema.py
takes its defaults for ``[smtp]`` from these names, and nothing else repeats them.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailwright.protocol import auth, dsn

#: RFC 5321 4.5.3.1.4: a server must accept command lines of 512 octets, CRLF included;
#: a lower limit breaks clients, so it is also the least a configuration may set.
MIN_LINE_LENGTH = 512
DEFAULT_MAX_LINE = MIN_LINE_LENGTH
#: RFC 5321 4.5.3.1.6: text lines of 1000 octets, CRLF included, must be accepted.
MIN_BODY_LINE_LENGTH = 1000
#: Octets per message line, CRLF included; 0 accepts any length (never buffered whole).
DEFAULT_MAX_BODY_LINE = 0
DEFAULT_MAX_MESSAGE_SIZE = 26_214_400
DEFAULT_MAX_RECIPIENTS = 100  # RFC 5321 4.5.3.1.8: at least 100 must be accepted
DEFAULT_MAX_ERRORS = 10
#: RCPTs refused (5xx) in one session before 421: guessing addresses (directory
#: harvesting) is cut off, as Postfix's smtpd_hard_error_limit does.
DEFAULT_MAX_REFUSED_RECIPIENTS = 20

DEFAULT_MAX_AUTH_LINE = auth.DEFAULT_MAX_AUTH_LINE


@dataclass(frozen=True, slots=True)
class ProtocolConfig:
    """The limits and extensions of one server session; immutable, passed in, never global."""

    max_line: int = DEFAULT_MAX_LINE
    max_body_line: int = DEFAULT_MAX_BODY_LINE
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_recipients: int = DEFAULT_MAX_RECIPIENTS
    max_errors: int = DEFAULT_MAX_ERRORS
    #: RCPTs answered 5xx before the session is closed with 421 (directory harvesting).
    max_refused_recipients: int = DEFAULT_MAX_REFUSED_RECIPIENTS
    smtputf8: bool = True
    #: RFC 3030: BDAT chunks, and BODY=BINARYMIME with them.
    chunking: bool = True
    extra_capabilities: tuple[str, ...] = ()
    #: A certificate is configured: STARTTLS is offered while TLS is not active.
    starttls: bool = False
    #: SASL mechanisms offered by AUTH once TLS is active (RFC 4954 4: never in plain text).
    auth_mechanisms: tuple[str, ...] = ()
    #: Submission (RFC 6409 4.3): MAIL is refused with 530 until AUTH succeeded.
    auth_required: bool = False
    max_auth_line: int = DEFAULT_MAX_AUTH_LINE
    #: RFC 3461: NOTIFY, ORCPT, RET and ENVID are taken and DSN advertised.
    dsn: bool = True

    def __post_init__(self) -> None:
        unknown = [m for m in self.auth_mechanisms if m not in auth.MECHANISMS]
        if unknown:
            raise ValueError(f"unknown SASL mechanisms: {unknown}")

    @property
    def body_types(self) -> tuple[str, ...]:
        """MAIL's BODY= values (RFC 6152); BINARYMIME only with CHUNKING (RFC 3030 3)."""
        return ("7BIT", "8BITMIME", "BINARYMIME") if self.chunking else ("7BIT", "8BITMIME")

    @property
    def command_buffer_limit(self) -> int:
        """The bound of the command line buffer: an AUTH line with its initial response
        may be longer than max_line (RFC 4954 4), and so may MAIL and RCPT with DSN
        parameters (RFC 3461 3): the longest of them."""
        longest = self.max_line
        if self.auth_mechanisms:
            longest = max(longest, self.max_auth_line)
        if self.dsn:  # RFC 3461 3: RCPT with NOTIFY and ORCPT, 500 characters more
            longest = max(longest, self.max_line + dsn.RCPT_LINE_EXTRA)
        return longest

    def capabilities(self, *, tls: bool) -> tuple[str, ...]:
        """EHLO keywords, in the order they are advertised (RFC 5321 4.1.1.1).

        What is offered depends on TLS: STARTTLS only before it (RFC 3207 4.2),
        AUTH only with it, so that no password crosses in plain text (RFC 4954 4).
        """
        caps = ["PIPELINING", f"SIZE {self.max_message_size}", "8BITMIME"]
        if self.chunking:
            caps += ["CHUNKING", "BINARYMIME"]
        if self.smtputf8:
            caps.append("SMTPUTF8")
        if self.dsn:
            caps.append("DSN")
        caps.append("ENHANCEDSTATUSCODES")
        if self.starttls and not tls:
            caps.append("STARTTLS")
        if self.auth_mechanisms and tls:
            caps.append("AUTH " + " ".join(self.auth_mechanisms))
        caps.extend(self.extra_capabilities)
        return tuple(caps)
