"""logfmt: one call makes one log line, whatever the values hold (issue 12, item 12)."""

from __future__ import annotations

import base64
import io
import logging
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from mailwright.logfmt import _Formatter, kv, printable
from tests.helpers import RawClient, RunningServer
from tests.server.test_tls_auth import SERVER_NAME, TLS_CONFIG, write_pems

#: Each splits a line for str.splitlines() or drives a terminal.
HOSTILE = {
    "ESC": "\x1b",
    "NUL": "\x00",
    "VT": "\x0b",
    "FF": "\x0c",
    "FS": "\x1c",
    "NEL": "\x85",
    "LINE SEPARATOR": "\u2028",
    "PARAGRAPH SEPARATOR": "\u2029",
    "CR": "\r",
    "LF": "\n",
    "DEL": "\x7f",
    "CSI (C1)": "\x9b",
    "RIGHT-TO-LEFT OVERRIDE": "\u202e",
}


@pytest.mark.parametrize("char", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_non_printable_character_is_escaped_and_the_line_stays_one_line(char: str) -> None:
    line = kv(event="auth-failed", user=f"alice{char}event=auth user=root")
    assert line.splitlines() == [line]
    assert line.isprintable()
    assert char not in line


def test_escapes_name_the_code_point() -> None:
    assert printable("a\x1bb\x00c\x85d\u2028e\U000e0001f\n\r\t") == (
        "a\\x1bb\\x00c\\x85d\\u2028e\\U000e0001f\\n\\r\\t"
    )


def test_printable_text_is_left_alone_including_non_ascii_letters() -> None:
    text = "José 客户端 <alice@example.test> 250 2.0.0 Ok"
    assert printable(text) is text
    assert kv(helo="客户端.test", sender="<josé@example.test>") == (
        "helo=客户端.test sender=<josé@example.test>"
    )


def test_quotes_and_backslashes_are_escaped_inside_quotes() -> None:
    assert kv(reply='550 say "no"', path="a\\b", empty="") == (
        'reply="550 say \\"no\\"" path="a\\\\b" empty=""'
    )


def test_a_value_with_only_a_control_character_is_quoted_and_escaped() -> None:
    assert kv(user="\x1b[2J") == 'user="\\x1b[2J"'


def test_the_formatter_escapes_messages_that_did_not_go_through_kv() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_Formatter())
    logger = logging.getLogger("mailwright.test-logfmt")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("remote said %s", "421 bye\u2028forged line\x1b]0;title\x07")
    finally:
        logger.removeHandler(handler)
    (line,) = stream.getvalue().splitlines()
    assert line.endswith("remote said 421 bye\\u2028forged line\\x1b]0;title\\x07")
    assert " WARNING mailwright.test-logfmt remote said " in line


# ---------------------------------------------------------------- a real server's log

#: A user name and a sender that try to forge a line and drive the operator's terminal.
FORGED = "\x1b[2J\x00\x0b\x0c\x85\u2028\u2029\u202e2024-01-01T00:00:00 INFO mailwright event=auth"


def test_a_hostile_auth_user_name_and_sender_each_make_one_log_line(
    server_factory: Callable[..., RunningServer],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """AUTH LOGIN carries any UTF-8 (NUL included); an SMTPUTF8 local part may hold NEL
    and U+2028.  The server logs both; each must stay one printable line."""
    write_pems(trustme.CA(), tmp_path)
    server = server_factory(base=TLS_CONFIG)
    caplog.set_level(logging.INFO, logger="mailwright")
    client = RawClient(server.host, server.port)
    try:
        assert client.read_reply().startswith("220 ")
        client.send(b"EHLO client.example\r\n")
        client.read_reply()
        client.send(b"STARTTLS\r\n")
        assert client.read_reply().startswith("220 ")
        client.sock = ssl._create_unverified_context().wrap_socket(
            client.sock, server_hostname=SERVER_NAME
        )
        client.send(b"EHLO client.example\r\n")
        client.read_reply()
        client.send(b"AUTH LOGIN " + base64.b64encode(f"alice{FORGED}".encode()) + b"\r\n")
        assert client.read_reply().startswith("334 ")
        client.send(base64.b64encode(b"wrong password") + b"\r\n")
        assert client.read_reply().startswith("535 ")
        sender = "a\x85\u2028\u2029b@remote.test"
        client.send(
            f"MAIL FROM:<{sender}> SMTPUTF8\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n".encode()
        )
        assert [reply[:3] for reply in client.replies(3)] == ["250", "250", "354"]
        client.send(b"Subject: x\r\n\r\nhi\r\n.\r\n")
        assert client.read_reply().startswith("250 ")
    finally:
        client.close()

    formatter = _Formatter()
    lines = {}
    for record in caplog.records:
        line = formatter.format(record)
        assert line.splitlines() == [line]
        assert line.isprintable(), line
        lines[record.getMessage().split(" ", 1)[0]] = line
    assert "\\x1b[2J\\x00\\x0b\\x0c\\x85\\u2028\\u2029\\u202e2024" in lines["event=auth-failed"]
    assert 'sender="<a\\x85\\u2028\\u2029b@remote.test>"' in lines["event=queued"]
