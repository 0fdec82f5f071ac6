"""The one transition table of an SMTP server session (RFC 5321 4.1.4, 3.3).

Rules of this file:
- Everything that decides which command may come next lives here, as data.
- A command's transition depends on the reply the caller gave it: the table
  holds (next state on a 2xx/3xx reply, next state otherwise).
- A command not in the table for the current state is out of sequence; the
  reply for it is looked up in OUT_OF_SEQUENCE, so every such case gets a text
  that says what to send instead.
- This file knows nothing about bytes, sockets or policy.
"""

from __future__ import annotations

import enum

from mailwright.protocol import replies
from mailwright.protocol.events import Command, Data, Ehlo, Help, Mail, Noop, Quit, Rcpt, Rset, Vrfy
from mailwright.protocol.reply import Reply


class State(enum.Enum):
    GREETING = "greeting"  # connected, our 220 not sent yet
    CONNECTED = "connected"  # greeted, no EHLO/HELO yet
    READY = "ready"  # EHLO/HELO done, no transaction
    MAIL = "mail"  # MAIL accepted, no RCPT tried yet
    MAIL_REFUSED = "mail-refused"  # MAIL accepted, every RCPT so far refused
    RCPT = "rcpt"  # at least one RCPT accepted
    DATA = "data"  # receiving the body
    CLOSED = "closed"


S = State

#: Commands valid in every greeted state, and where they lead.
_ANYTIME: dict[type[Command], tuple[State | None, State | None]] = {
    # None means "stay where you are".
    Ehlo: (S.READY, None),
    Rset: (S.READY, None),
    Noop: (None, None),
    Vrfy: (None, None),
    Help: (None, None),
    Quit: (S.CLOSED, None),
}

TRANSITIONS: dict[State, dict[type[Command], tuple[State | None, State | None]]] = {
    S.CONNECTED: {**_ANYTIME, Rset: (None, None)},
    S.READY: {**_ANYTIME, Mail: (S.MAIL, None)},
    S.MAIL: {**_ANYTIME, Rcpt: (S.RCPT, S.MAIL_REFUSED)},
    S.MAIL_REFUSED: {**_ANYTIME, Rcpt: (S.RCPT, None)},
    S.RCPT: {**_ANYTIME, Rcpt: (None, None), Data: (S.DATA, None)},
}

OUT_OF_SEQUENCE: dict[State, dict[type[Command], Reply]] = {
    S.CONNECTED: {Mail: replies.NEED_HELO, Rcpt: replies.NEED_HELO, Data: replies.NEED_HELO},
    S.READY: {Rcpt: replies.NEED_MAIL, Data: replies.NEED_MAIL},
    S.MAIL: {Mail: replies.NESTED_MAIL, Data: replies.NEED_RCPT},
    # RFC 5321 3.3: DATA after every RCPT was refused gets 554 (or 503).
    S.MAIL_REFUSED: {Mail: replies.NESTED_MAIL, Data: replies.NO_VALID_RECIPIENTS},
    S.RCPT: {Mail: replies.NESTED_MAIL},
}

#: States with an open transaction (MAIL accepted, not yet ended).
IN_TRANSACTION = frozenset({S.MAIL, S.MAIL_REFUSED, S.RCPT, S.DATA})


def check(state: State, command: type[Command]) -> Reply | None:
    """None when ``command`` may come in ``state``, else the 503/554 reply to send."""
    if command in TRANSITIONS.get(state, {}):
        return None
    reply = OUT_OF_SEQUENCE.get(state, {}).get(command)
    if reply is None:  # pragma: no cover - the table covers every command in every state
        raise KeyError(f"no rule for {command.__name__} in {state}")
    return reply


def next_state(state: State, command: type[Command], positive: bool) -> State:
    on_success, on_failure = TRANSITIONS[state][command]
    target = on_success if positive else on_failure
    return state if target is None else target
