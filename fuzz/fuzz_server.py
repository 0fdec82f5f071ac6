"""Fuzz target for the server core: command parser, DATA and BDAT readers, STARTTLS, AUTH (atheris).

Run by hand (not in CI), e.g. for ten minutes:

    pip install atheris
    python fuzz/fuzz_server.py fuzz/corpus -max_total_time=600

New inputs that reach new code are written into fuzz/corpus/; commit the
interesting ones: tests/protocol/test_fuzz_corpus.py replays every file of the
corpus as a regression test.  The target answers every event the way a real
session would, so the core is driven through all its states.
"""

from __future__ import annotations

import dataclasses
import sys

from mailwright.protocol import replies
from mailwright.protocol.events import (
    NEED_DATA,
    Auth,
    AuthChallenge,
    Bdat,
    BodyChunk,
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfChunk,
    EndOfData,
    Mail,
    ProtocolViolation,
    Quit,
    Rcpt,
    StartTls,
)
from mailwright.protocol.reply import Reply
from mailwright.protocol.server import ProtocolConfig, ServerConnection
from mailwright.protocol.state import State

#: STARTTLS and AUTH offered, so the fuzzer reaches the TLS restart, the SASL
#: exchanges (PLAIN and LOGIN, initial responses, continuations, cancels) and
#: the commands refused before and after them.
CONFIG = ProtocolConfig(
    max_message_size=4096,
    max_recipients=5,
    max_errors=20,
    starttls=True,
    auth_mechanisms=("PLAIN", "LOGIN"),
)
#: The same as a submission port (RFC 6409): MAIL needs AUTH first.  An input
#: whose first byte is 0x01 runs against this one.
SUBMISSION = dataclasses.replace(CONFIG, auth_required=True)


def run_one(data: bytes) -> int:
    """Feed ``data`` in pieces split at every 0xFF byte; return the number of replies."""
    conn = ServerConnection(SUBMISSION if data[:1] == b"\x01" else CONFIG)
    conn.greeting(Reply(220, None, "fuzz ESMTP"))
    replies_sent = 0
    for piece in [*data.split(b"\xff"), b""]:
        conn.receive_data(piece)
        while True:
            event = conn.next_event()
            if event is NEED_DATA or isinstance(event, ConnectionClosed):
                break
            if isinstance(event, BodyChunk | Bdat):
                continue  # a BDAT chunk is answered after its octets (EndOfChunk, EndOfData)
            reply = _answer(event)
            out = conn.send(reply)
            assert out.endswith(b"\r\n")
            replies_sent += 1
            if conn.state is State.CLOSED:
                return replies_sent
    return replies_sent


def _answer(event: object) -> Reply:
    match event:
        case ProtocolViolation(reply=reply):
            return reply
        case Ehlo():
            return Reply(250, None, "fuzz")
        case StartTls():
            return replies.READY_FOR_TLS  # the core now expects a new EHLO, as after a handshake
        case AuthChallenge(reply=reply):
            return reply
        case Auth(password=password):
            return replies.AUTH_OK if password == "pw" else replies.AUTH_FAILED
        case Mail():
            return replies.SENDER_OK
        case Rcpt(recipient=rcpt):
            return replies.RECIPIENT_OK if rcpt.local_part != "no" else Reply(550, "5.1.1", "No")
        case Data():
            return replies.START_DATA
        case EndOfChunk(size=size):
            return replies.chunk_received(size)
        case EndOfData():
            return Reply(250, "2.0.0", "Ok")
        case Quit():
            return replies.BYE
    return replies.OK


def main() -> None:
    import atheris

    def test_one(data: bytes) -> None:
        run_one(data)

    atheris.instrument_all()  # coverage feedback for every loaded module, mailwright's included
    atheris.Setup(sys.argv, test_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
