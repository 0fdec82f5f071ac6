"""The one transition table of an SMTP server session (RFC 5321 4.1.4, 3.3).

Rules of this file:
- Everything that decides which command may come next lives here, as data.
- A command's transition depends on the reply the caller gave it: the table
  holds (next state on a 2xx/3xx reply, next state otherwise).
- A command not in the table for the current state is out of sequence; the
  reply for it is looked up in OUT_OF_SEQUENCE, so every such case gets a text
  that says what to send instead.
- What else must be true of the session for a command (TLS active, already
  authenticated, AUTH required by a submission listener) is a Fact, and the
  conditions on facts are GUARDS, checked after the state.
- BDAT (RFC 3030) is checked here like a command, though the core answers
  it only after its chunk: the first one taken moves the transaction to
  CHUNKING, where DATA and RCPT no longer fit.
- This file knows nothing about bytes, sockets or policy.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mailwright.protocol import replies
from mailwright.protocol.events import (
    Auth,
    AuthAborted,
    AuthChallenge,
    Bdat,
    Data,
    Ehlo,
    Event,
    Help,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Rset,
    StartTls,
    Vrfy,
)
from mailwright.protocol.reply import Reply


class State(enum.Enum):
    GREETING = "greeting"  # connected, our 220 not sent yet
    CONNECTED = "connected"  # greeted, no EHLO/HELO yet
    READY = "ready"  # EHLO/HELO done, no transaction
    MAIL = "mail"  # MAIL accepted, no RCPT tried yet
    MAIL_REFUSED = "mail-refused"  # MAIL accepted, every RCPT so far refused
    RCPT = "rcpt"  # at least one RCPT accepted
    DATA = "data"  # receiving the body
    CHUNKING = "chunking"  # at least one BDAT chunk taken (RFC 3030)
    AUTH = "auth"  # inside an AUTH exchange: lines are SASL responses, not commands
    CLOSED = "closed"


class Fact(enum.Flag):
    """What is true of the session besides its state."""

    NONE = 0
    TLS = enum.auto()  # TLS is active: after STARTTLS's 220, or from the first byte
    AUTHENTICATED = enum.auto()  # AUTH was answered 235
    AUTH_REQUIRED = enum.auto()  # a submission listener (RFC 6409 4.3)
    BINARYMIME = enum.auto()  # the transaction's MAIL said BODY=BINARYMIME (RFC 3030 3)


@dataclass(frozen=True, slots=True)
class Guard:
    """A condition on the facts that a command must meet, else ``reply`` is sent.

    It applies when every fact of ``when`` holds; the command then needs every
    fact of ``require`` and none of ``forbid``.
    """

    reply: Reply
    require: Fact = Fact.NONE
    forbid: Fact = Fact.NONE
    when: Fact = Fact.NONE

    def refuses(self, facts: Fact) -> bool:
        if facts & self.when != self.when:
            return False
        return facts & self.require != self.require or bool(facts & self.forbid)


S = State

#: Commands valid in every greeted state, and where they lead.
_ANYTIME: dict[type[Event], tuple[State | None, State | None]] = {
    # None means "stay where you are".
    Ehlo: (S.READY, None),
    Rset: (S.READY, None),
    Noop: (None, None),
    Vrfy: (None, None),
    Help: (None, None),
    Quit: (S.CLOSED, None),
}

TRANSITIONS: dict[State, dict[type[Event], tuple[State | None, State | None]]] = {
    S.CONNECTED: {**_ANYTIME, Rset: (None, None)},
    S.READY: {
        **_ANYTIME,
        Mail: (S.MAIL, None),
        # RFC 3207 4.2: after the 220 and the handshake, back to the state after the greeting.
        StartTls: (S.CONNECTED, None),
        # AUTH with an initial response may complete at once; else the 334 opens the exchange.
        Auth: (None, None),
        AuthChallenge: (S.AUTH, None),
        AuthAborted: (None, None),
    },
    S.AUTH: {
        AuthChallenge: (None, None),
        Auth: (S.READY, S.READY),
        AuthAborted: (S.READY, S.READY),
    },
    S.MAIL: {**_ANYTIME, Rcpt: (S.RCPT, S.MAIL_REFUSED)},
    S.MAIL_REFUSED: {**_ANYTIME, Rcpt: (S.RCPT, None)},
    S.RCPT: {**_ANYTIME, Rcpt: (None, None), Data: (S.DATA, None), Bdat: (S.CHUNKING, None)},
    # RFC 3030 2: the rest of the message comes in more chunks, the last one with LAST.
    S.CHUNKING: {**_ANYTIME, Bdat: (None, None)},
}

#: RFC 4954 4 and RFC 3207 4: neither AUTH nor STARTTLS inside a mail transaction.
_NOT_IN_TRANSACTION: dict[type[Event], Reply] = {
    Auth: replies.AUTH_IN_TRANSACTION,
    StartTls: replies.STARTTLS_IN_TRANSACTION,
}

OUT_OF_SEQUENCE: dict[State, dict[type[Event], Reply]] = {
    S.CONNECTED: {
        Mail: replies.NEED_HELO,
        Rcpt: replies.NEED_HELO,
        Data: replies.NEED_HELO,
        Bdat: replies.NEED_HELO,
        StartTls: replies.NEED_HELO,
        Auth: replies.NEED_HELO,
    },
    S.READY: {Rcpt: replies.NEED_MAIL, Data: replies.NEED_MAIL, Bdat: replies.NEED_MAIL},
    S.MAIL: {
        Mail: replies.NESTED_MAIL,
        Data: replies.NEED_RCPT,
        Bdat: replies.NEED_RCPT,
        **_NOT_IN_TRANSACTION,
    },
    # RFC 5321 3.3: DATA after every RCPT was refused gets 554 (or 503); BDAT the same.
    S.MAIL_REFUSED: {
        Mail: replies.NESTED_MAIL,
        Data: replies.NO_VALID_RECIPIENTS,
        Bdat: replies.NO_VALID_RECIPIENTS,
        **_NOT_IN_TRANSACTION,
    },
    S.RCPT: {Mail: replies.NESTED_MAIL, **_NOT_IN_TRANSACTION},
    # RFC 3030 2: once BDAT started the message, it ends with BDAT LAST (or RSET).
    S.CHUNKING: {
        Mail: replies.NESTED_MAIL,
        Rcpt: replies.RCPT_AFTER_BDAT,
        Data: replies.DATA_AFTER_BDAT,
        **_NOT_IN_TRANSACTION,
    },
}

F = Fact

#: Conditions on facts, checked in order once the state allows the command.
GUARDS: dict[type[Event], tuple[Guard, ...]] = {
    StartTls: (Guard(replies.TLS_ALREADY_ACTIVE, forbid=F.TLS),),
    Auth: (
        Guard(replies.ALREADY_AUTHENTICATED, forbid=F.AUTHENTICATED),  # RFC 4954 4: once
        Guard(replies.ENCRYPTION_REQUIRED, require=F.TLS),  # no password in plain text
    ),
    # RFC 6409 4.3 and RFC 4954 6: a submission server wants to know who sends.
    Mail: (Guard(replies.AUTH_REQUIRED, require=F.AUTHENTICATED, when=F.AUTH_REQUIRED),),
    # RFC 3030 3: a BINARYMIME body cannot be sent with DATA, only in BDAT chunks.
    Data: (Guard(replies.BINARYMIME_NEEDS_BDAT, forbid=F.BINARYMIME),),
}

#: The commands a client may send, whose place is checked by ``check`` (the others are the core's).
CLIENT_COMMANDS: tuple[type[Event], ...] = (
    Ehlo,
    Mail,
    Rcpt,
    Data,
    Rset,
    Noop,
    Vrfy,
    Help,
    Quit,
    StartTls,
    Auth,
    Bdat,
)

#: States with an open transaction (MAIL accepted, not yet ended).
IN_TRANSACTION = frozenset({S.MAIL, S.MAIL_REFUSED, S.RCPT, S.DATA, S.CHUNKING})


def check(state: State, command: type[Event], facts: Fact = Fact.NONE) -> Reply | None:
    """None when ``command`` may come in ``state`` with ``facts``, else the reply to send."""
    if command not in TRANSITIONS.get(state, {}):
        reply = OUT_OF_SEQUENCE.get(state, {}).get(command)
        if reply is None:  # pragma: no cover - the table covers every command in every state
            raise KeyError(f"no rule for {command.__name__} in {state}")
        return reply
    for guard in GUARDS.get(command, ()):
        if guard.refuses(facts):
            return guard.reply
    return None


def next_state(state: State, command: type[Event], positive: bool) -> State:
    on_success, on_failure = TRANSITIONS[state][command]
    target = on_success if positive else on_failure
    return state if target is None else target
