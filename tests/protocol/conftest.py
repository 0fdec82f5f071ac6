"""A tiny driver that runs the server core with an accept-all policy, fed raw bytes."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from mailwright.protocol import replies
from mailwright.protocol.events import (
    NEED_DATA,
    Auth,
    AuthChallenge,
    Bdat,
    BodyChunk,
    BodyRejected,
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfChunk,
    EndOfData,
    Help,
    Mail,
    Noop,
    ProtocolViolation,
    Quit,
    Rcpt,
    Rset,
    StartTls,
    Vrfy,
)
from mailwright.protocol.reply import Reply
from mailwright.protocol.server import ProtocolConfig, ServerConnection


@dataclass
class Driver:
    conn: ServerConnection
    refuse: set[str] = field(default_factory=set)  # recipient local parts to refuse
    users: dict[str, str] = field(default_factory=lambda: {"alice@example.test": "s3cret"})
    bodies: list[bytes] = field(default_factory=list)
    events: list[object] = field(default_factory=list)
    closed: bool = False
    _body: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> bytes:
        """Feed bytes; return everything the server wrote in answer."""
        self.conn.receive_data(data)
        out = bytearray()
        while True:
            event = self.conn.next_event()
            if event is NEED_DATA:
                break
            self.events.append(event)
            if isinstance(event, ConnectionClosed):
                self.closed = True
                break
            out += self._answer(event)
            if self.conn.state.value == "closed":
                self.closed = True
                break
        return bytes(out)

    def _answer(self, event: object) -> bytes:
        conn = self.conn
        match event:
            case BodyChunk(data=data):
                self._body += data
                return b""
            case Bdat():
                return b""  # the reply comes after the chunk
            case EndOfChunk(size=size):
                return conn.send(replies.chunk_received(size))
            case ProtocolViolation(reply=reply):
                if isinstance(event, BodyRejected):
                    self._body.clear()
                return conn.send(reply)
            case AuthChallenge(reply=reply):
                return conn.send(reply)
            case Auth(username=user, password=password):
                if self.users.get(user) == password:
                    return conn.send(replies.AUTH_OK)
                return conn.send(replies.AUTH_FAILED)
            case StartTls():
                return conn.send(replies.READY_FOR_TLS)
            case Ehlo(hostname=name, extended=True):
                self._body.clear()
                return conn.send(
                    Reply(250, None, ["test.example greets " + name, *conn.capabilities()])
                )
            case Ehlo():
                return conn.send(Reply(250, None, "test.example"))
            case Mail():
                return conn.send(replies.SENDER_OK)
            case Rcpt(recipient=rcpt):
                if rcpt.local_part in self.refuse:
                    return conn.send(Reply(550, "5.1.1", "Mailbox unavailable"))
                return conn.send(replies.RECIPIENT_OK)
            case Data():
                return conn.send(replies.START_DATA)
            case EndOfData():
                self.bodies.append(bytes(self._body))
                self._body.clear()
                return conn.send(Reply(250, "2.0.0", "Ok: queued as TEST"))
            case Rset():
                self._body.clear()
                return conn.send(replies.RESET_OK)
            case Noop():
                return conn.send(replies.NOOP_OK)
            case Quit():
                return conn.send(replies.BYE)
            case Vrfy():
                return conn.send(replies.VRFY_CANNOT)
            case Help():
                return conn.send(Reply(214, "2.0.0", "See RFC 5321"))
        raise AssertionError(f"unexpected event {event!r}")


def make_driver(*, tls: bool = False, **config: object) -> Driver:
    conn = ServerConnection(ProtocolConfig(**config), tls=tls)  # type: ignore[arg-type]
    greeting = conn.greeting(Reply(220, None, "test.example ESMTP mailwright"))
    assert greeting == b"220 test.example ESMTP mailwright\r\n"
    return Driver(conn)


@pytest.fixture
def driver() -> Driver:
    return make_driver()


def codes(out: bytes) -> list[str]:
    """The final line of each reply, e.g. ['250 2.1.0 Ok', '503 5.5.1 ...']."""
    return [line for line in out.decode().split("\r\n") if line and line[3:4] == " "]
