"""The standard replies of the server, by name, so a situation always gets the same words.

Texts that tell the client what went wrong also tell it what to send instead:
that is the point of mailwright's replies.
"""

from __future__ import annotations

from functools import lru_cache

from mailwright.protocol.reply import Reply

#: EHLO replies kept formatted, one per (our name, client's name, extensions) seen lately.
GREETS_CACHED = 256

# 2xx
OK = Reply(250, "2.0.0", "Ok")
SENDER_OK = Reply(250, "2.1.0", "Ok")
RECIPIENT_OK = Reply(250, "2.1.5", "Ok")
RESET_OK = Reply(250, "2.0.0", "Ok: transaction cleared")
NOOP_OK = Reply(250, "2.0.0", "Ok")
BYE = Reply(221, "2.0.0", "Bye")
VRFY_CANNOT = Reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery")
START_DATA = Reply(354, None, "End data with <CR><LF>.<CR><LF>")
HELP = Reply(
    214,
    "2.0.0",
    [
        "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP",
        "Send EHLO, MAIL FROM:<sender>, RCPT TO:<recipient>, DATA, then the message",
        "See RFC 5321; 'mailwright explain CODE' explains any reply",
    ],
)


@lru_cache(maxsize=8)  # one per hostname: every connection is greeted with the same bytes
def greeting(hostname: str) -> Reply:
    """RFC 5321 4.2: the 220 greeting starts with our domain."""
    return Reply(220, None, f"{hostname} ESMTP mailwright")


@lru_cache(maxsize=GREETS_CACHED)
def greets(hostname: str, client: str, capabilities: tuple[str, ...] = ()) -> Reply:
    """The answer to HELO, or to EHLO with the extension lines (RFC 5321 4.1.1.1).

    Kept for the clients seen lately (a Reply formats itself once): building and
    formatting the ten lines of an EHLO reply costs more than parsing the command,
    and the same servers come back under the same name, connection after connection.
    """
    return Reply(250, None, [f"{hostname} greets {client}", *capabilities])


def chunk_received(size: int) -> Reply:
    """RFC 3030 2: each BDAT chunk but the LAST is answered once its octets are in."""
    return Reply(250, "2.0.0", f"{size} octets received")


def queued(queue_id: str) -> Reply:
    """The 250 after the end of data: sent only once the message is on disk."""
    return Reply(250, "2.0.0", f"Ok: queued as {queue_id}")


# 4xx
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down; try again later")
IDLE_TIMEOUT = Reply(421, "4.4.2", "Timeout exceeded; closing connection")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors; closing connection")
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections; try again later")
TOO_MANY_CONNECTIONS_FROM_IP = Reply(
    421, "4.7.0", "Too many connections from your address; try again later"
)
TOO_MANY_REFUSED_RECIPIENTS = Reply(421, "4.7.0", "Too many refused recipients; closing connection")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients; send the rest in a new transaction")
STORAGE_FULL = Reply(452, "4.3.1", "Insufficient system storage; try again later")
#: RFC 1870 6.1 (1): MAIL's SIZE= is more than the server can store now, but may fit later.
NO_ROOM_FOR_SIZE = Reply(
    452,
    "4.3.1",
    "Insufficient system storage for a message of the declared SIZE; try again later",
)
LOCAL_ERROR = Reply(451, "4.3.0", "Local error in processing; try again later")
LOCAL_ERROR_CLOSING = Reply(451, "4.3.0", "Local error; closing connection")

# 5xx: syntax
UNKNOWN_COMMAND = Reply(500, "5.5.2", "Syntax error: command unrecognized")
LINE_TOO_LONG = Reply(500, "5.5.6", "Line too long")
BARE_LINE_ENDING = Reply(
    500, "5.5.2", "Syntax error: bare CR or LF in command; end every line with CRLF"
)
BAD_ENCODING = Reply(500, "5.5.2", "Syntax error: command is not valid UTF-8")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
EMPTY_COMMAND = Reply(500, "5.5.2", "Syntax error: empty command")
VRFY_SYNTAX = Reply(501, "5.5.4", "Syntax error: send VRFY <user>")
#: MAIL's parameters (RFC 1870 SIZE, RFC 6152 BODY, RFC 6531 SMTPUTF8) with a bad value.
SIZE_SYNTAX = Reply(501, "5.5.4", "Syntax error: SIZE takes a number of octets")
BODY_SYNTAX = Reply(501, "5.5.4", "Syntax error: BODY must be 7BIT, 8BITMIME or BINARYMIME")
#: RFC 3030 2: bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ] CR LF.
BDAT_SYNTAX = Reply(501, "5.5.4", "Syntax error: send BDAT <size in octets> [LAST]")
SMTPUTF8_SYNTAX = Reply(501, "5.5.4", "Syntax error: SMTPUTF8 takes no value")


def no_arguments(verb: str) -> Reply:
    """DATA, RSET, QUIT and STARTTLS take no argument (RFC 5321 4.1.1, RFC 3207 4)."""
    return Reply(501, "5.5.4", f"Syntax error: {verb} takes no arguments")


def unsupported_parameter(keyword: str, hint: str) -> Reply:
    """A MAIL or RCPT parameter of an extension we do not offer (RFC 5321 4.1.1.11)."""
    return Reply(555, "5.5.4", f"Unsupported parameter {keyword}; {hint}")


# 5xx: sequence (RFC 5321 4.1.4); each text says what to send instead.
NEED_HELO = Reply(503, "5.5.1", "Bad sequence of commands: send EHLO or HELO first")
NEED_MAIL = Reply(503, "5.5.1", "Bad sequence of commands: send MAIL FROM first")
NEED_RCPT = Reply(503, "5.5.1", "Bad sequence of commands: send RCPT TO first")
NESTED_MAIL = Reply(
    503, "5.5.1", "Bad sequence of commands: nested MAIL command; send RSET to start over"
)
NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "No valid recipients")
DATA_AFTER_BDAT = Reply(
    503, "5.5.1", "Bad sequence of commands: DATA after BDAT; end the message with BDAT <size> LAST"
)
RCPT_AFTER_BDAT = Reply(
    503, "5.5.1", "Bad sequence of commands: RCPT after BDAT; send RSET to start over"
)
#: RFC 3030 3: binary content cannot be framed by DATA's end marker.
BINARYMIME_NEEDS_BDAT = Reply(
    503, "5.5.1", "Bad sequence of commands: BODY=BINARYMIME needs BDAT, not DATA"
)


def sender_not_owned(user: str) -> Reply:
    """RFC 6409 6.1: a submission server may refuse a sender the user does not own."""
    return Reply(553, "5.7.1", f"Sender address rejected: not owned by user {user}")


def spf_failed(domain: str, client: str) -> Reply:
    """RFC 7372 3.2: the sender's domain does not let this client send its mail (SPF fail)."""
    return Reply(
        550, "5.7.23", f"SPF check failed: {domain} does not designate {client} as a sender"
    )


def spf_temporary(domain: str) -> Reply:
    """RFC 7372 3.2, RFC 7208 2.6.6: the SPF check could not be made now (temperror)."""
    return Reply(451, "4.7.24", f"SPF check of {domain} failed temporarily; try again later")


def dmarc_rejected(domain: str) -> Reply:
    """RFC 7372 3.2 (X.7.26, "multiple authentication checks failed"), RFC 7489 6.7: the
    From: domain publishes p=reject and neither an aligned SPF nor an aligned DKIM passed."""
    return Reply(
        550,
        "5.7.26",
        f"DMARC policy of {domain} rejects this message: no aligned SPF or DKIM pass",
    )


def account_removed(user: str) -> Reply:
    """The session authenticated as an account that a reload has since removed: what it
    may send is decided anew, and AUTH cannot be repeated in a session (RFC 4954 4), so
    the client must connect again (RFC 4954 6: 530 5.7.0, authentication required)."""
    return Reply(
        530, "5.7.0", f"Authentication required: account {user} no longer exists; connect again"
    )


# STARTTLS (RFC 3207)
READY_FOR_TLS = Reply(220, "2.0.0", "Ready to start TLS")
TLS_NOT_AVAILABLE = Reply(454, "4.7.0", "TLS not available due to temporary reason")
TLS_ALREADY_ACTIVE = Reply(503, "5.5.1", "Bad sequence of commands: TLS is already active")
STARTTLS_IN_TRANSACTION = Reply(
    503, "5.5.1", "Bad sequence of commands: STARTTLS during a mail transaction; send RSET first"
)

# AUTH (RFC 4954) and submission (RFC 6409)
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_UNAVAILABLE = Reply(454, "4.7.0", "Temporary authentication failure; try again later")
#: RFC 4954 6's temporary failure, for a client locked out after too many failed attempts:
#: no password is checked, the right one neither, until the lockout ends.
AUTH_LOCKED_OUT = Reply(
    454,
    "4.7.0",
    "Temporary authentication failure: too many failed attempts from your address; try again later",
)
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required; send AUTH first")
ENCRYPTION_REQUIRED = Reply(
    538,
    "5.7.11",
    "Encryption required for requested authentication mechanism; send STARTTLS first",
)
ALREADY_AUTHENTICATED = Reply(503, "5.5.1", "Bad sequence of commands: already authenticated")
AUTH_IN_TRANSACTION = Reply(
    503, "5.5.1", "Bad sequence of commands: AUTH during a mail transaction; send RSET first"
)
AUTH_CANCELLED = Reply(501, "5.0.0", "Authentication cancelled")
AUTH_BAD_BASE64 = Reply(501, "5.5.2", "Syntax error: the response is not valid base64")
AUTH_UNKNOWN_MECHANISM = Reply(504, "5.5.4", "Unrecognized authentication type")


def auth_syntax(offered: str) -> Reply:
    """AUTH without a mechanism, or with more than an initial response (RFC 4954 4)."""
    return Reply(501, "5.5.4", f"Syntax error: send AUTH <mechanism> ({offered})")


def auth_unknown_mechanism(offered: str) -> Reply:
    return AUTH_UNKNOWN_MECHANISM.with_text(
        f"Unrecognized authentication type; use one of: {offered}"
    )


# 5xx: talking out of turn (RFC 2920 3.1); the connection is closed after it.
SYNC_ERROR = Reply(554, "5.5.0", "Error: SMTP protocol synchronization")

# 5xx: message content
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")


def message_too_big(limit: int) -> Reply:
    """RFC 1870 6.1 and 6.3: at MAIL for a declared SIZE, or once the body passed ``limit``."""
    return Reply(552, "5.3.4", f"Message size exceeds fixed maximum message size of {limit} octets")


def body_line_too_long(limit: int) -> Reply:
    """A message line over ``max_body_line`` (RFC 5321 4.5.3.1.6 sets the floor at 1000)."""
    return Reply(
        554, "5.6.0", f"Message refused: a line is longer than {limit} octets (RFC 5321 4.5.3.1.6)"
    )


BARE_LINE_ENDING_IN_DATA = Reply(
    554,
    "5.6.0",
    "Message refused: bare CR or LF in message content; end every line with CRLF",
)
TOO_MANY_HOPS = Reply(554, "5.4.6", "Too many Received: headers; mail loop detected")
