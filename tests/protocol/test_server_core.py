"""The server core, tested by feeding it bytes (no sockets)."""

from __future__ import annotations

import pytest

from mailwright.errors import LocalProtocolError
from mailwright.protocol.events import NEED_DATA, Mail
from mailwright.protocol.reply import Reply
from mailwright.protocol.server import ServerConnection
from tests.protocol.conftest import Driver, codes, make_driver

EHLO = b"EHLO client.example\r\n"
TXN = b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n"


def test_ehlo_advertises_extensions(driver: Driver) -> None:
    out = driver.feed(EHLO).decode()
    assert out.startswith("250-test.example greets client.example\r\n")
    for cap in ("PIPELINING", "SIZE 26214400", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"):
        assert f"250-{cap}\r\n" in out or f"250 {cap}\r\n" in out
    assert out.endswith("250 ENHANCEDSTATUSCODES\r\n")


def test_verbs_are_case_insensitive(driver: Driver) -> None:
    out = driver.feed(b"ehlo c.example\r\nmail from:<a@x.test>\r\nrCpT tO:<b@y.test>\r\n")
    assert codes(out)[-2:] == ["250 2.1.0 Ok", "250 2.1.5 Ok"]


def test_mail_before_ehlo_gets_503_with_hint(driver: Driver) -> None:
    out = driver.feed(b"MAIL FROM:<a@x.test>\r\n")
    assert out == b"503 5.5.1 Bad sequence of commands: send EHLO or HELO first\r\n"


def test_rcpt_before_mail_gets_503_with_hint(driver: Driver) -> None:
    driver.feed(EHLO)
    out = driver.feed(b"RCPT TO:<b@y.test>\r\n")
    assert out == b"503 5.5.1 Bad sequence of commands: send MAIL FROM first\r\n"


def test_data_before_rcpt_gets_503_send_rcpt(driver: Driver) -> None:
    driver.feed(EHLO + b"MAIL FROM:<a@x.test>\r\n")
    out = driver.feed(b"DATA\r\n")
    assert out == b"503 5.5.1 Bad sequence of commands: send RCPT TO first\r\n"


def test_data_after_all_rcpts_refused_gets_554(driver: Driver) -> None:
    driver.refuse.add("nobody")
    driver.feed(EHLO + b"MAIL FROM:<a@x.test>\r\n")
    out = driver.feed(b"RCPT TO:<nobody@y.test>\r\nDATA\r\n")
    assert codes(out) == ["550 5.1.1 Mailbox unavailable", "554 5.5.1 No valid recipients"]


def test_nested_mail_gets_503_send_rset(driver: Driver) -> None:
    driver.feed(EHLO + b"MAIL FROM:<a@x.test>\r\n")
    out = driver.feed(b"MAIL FROM:<a@x.test>\r\n")
    assert out == (
        b"503 5.5.1 Bad sequence of commands: nested MAIL command; send RSET to start over\r\n"
    )
    assert codes(driver.feed(b"RSET\r\nMAIL FROM:<a@x.test>\r\n"))[-1] == "250 2.1.0 Ok"


def test_rset_keeps_greeting_and_clears_transaction(driver: Driver) -> None:
    driver.feed(EHLO + b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n")
    out = driver.feed(b"RSET\r\nDATA\r\nRCPT TO:<b@y.test>\r\nMAIL FROM:<c@x.test>\r\n")
    assert codes(out) == [
        "250 2.0.0 Ok: transaction cleared",
        "503 5.5.1 Bad sequence of commands: send MAIL FROM first",
        "503 5.5.1 Bad sequence of commands: send MAIL FROM first",
        "250 2.1.0 Ok",
    ]


def test_ehlo_mid_transaction_clears_it(driver: Driver) -> None:
    driver.feed(EHLO + b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n")
    out = driver.feed(EHLO + b"DATA\r\n")
    assert codes(out)[-1] == "503 5.5.1 Bad sequence of commands: send MAIL FROM first"


def test_full_transaction_with_dot_stuffing(driver: Driver) -> None:
    driver.feed(EHLO)
    body = b"Subject: hi\r\n\r\n..leading dot\r\n.\r\n"
    out = driver.feed(TXN)
    out += driver.feed(body)  # a client waits for the 354 before the content
    assert codes(out) == [
        "250 2.1.0 Ok",
        "250 2.1.5 Ok",
        "354 End data with <CR><LF>.<CR><LF>",
        "250 2.0.0 Ok: queued as TEST",
    ]
    assert driver.bodies == [b"Subject: hi\r\n\r\n.leading dot\r\n"]


@pytest.mark.parametrize("split", [1, 2, 3, 5, 7, 64])
def test_body_split_anywhere_unstuffs_the_same(split: int) -> None:
    driver = make_driver()
    driver.feed(EHLO + TXN)
    payload = b".first\r\n..second\r\nthird.\r\n..\r\n...\r\nend\r\n.\r\nNOOP\r\n"
    out = b"".join(driver.feed(payload[i : i + split]) for i in range(0, len(payload), split))
    assert driver.bodies == [b"first\r\n.second\r\nthird.\r\n.\r\n..\r\nend\r\n"]
    assert codes(out) == ["250 2.0.0 Ok: queued as TEST", "250 2.0.0 Ok"]


def test_empty_body(driver: Driver) -> None:
    driver.feed(EHLO + TXN)
    out = driver.feed(b".\r\n")
    assert codes(out) == ["250 2.0.0 Ok: queued as TEST"]
    assert driver.bodies == [b""]


@pytest.mark.parametrize(
    "smuggle",
    [
        b"\n.\n",
        b"\r.\r",
        b"\r\n.\n",
        b"\n.\r\n",
        b"\r.\r\n",
    ],
)
def test_smuggling_never_ends_data(smuggle: bytes) -> None:
    driver = make_driver()
    driver.feed(EHLO + TXN)
    attack = (
        b"Subject: x\r\n\r\nbody" + smuggle + b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<v@y.test>\r\n"
    )
    out = driver.feed(attack)
    assert out == b""  # still inside DATA: nothing answered, no second transaction
    out = driver.feed(b"DATA\r\nmore\r\n.\r\n")
    assert codes(out) == [
        "554 5.6.0 Message refused: bare CR or LF in message content; end every line with CRLF"
    ]
    assert driver.bodies == []
    assert not [e for e in driver.events if isinstance(e, Mail) and e.sender.local_part == "evil"]
    # the session goes on, in sync
    assert codes(driver.feed(b"MAIL FROM:<a@x.test>\r\n")) == ["250 2.1.0 Ok"]


def test_bare_lf_in_command_is_refused_not_executed(driver: Driver) -> None:
    out = driver.feed(EHLO + b"MAIL FROM:<a@x.test>\n")
    assert codes(out)[-1].startswith("500 5.5.2 Syntax error: bare CR or LF")
    assert codes(driver.feed(b"RCPT TO:<b@y.test>\r\n")) == [
        "503 5.5.1 Bad sequence of commands: send MAIL FROM first"
    ]


def test_bare_cr_inside_command_is_refused(driver: Driver) -> None:
    out = driver.feed(b"NOOP\rRSET\r\n")
    assert codes(out) == [
        "500 5.5.2 Syntax error: bare CR or LF in command; end every line with CRLF"
    ]


def test_unknown_verb_gets_500_and_session_goes_on(driver: Driver) -> None:
    out = driver.feed(b"FOO bar\r\nNOOP\r\n")
    assert codes(out) == ["500 5.5.2 Syntax error: command unrecognized", "250 2.0.0 Ok"]


def test_bad_arguments_get_501(driver: Driver) -> None:
    driver.feed(EHLO)
    out = driver.feed(b"MAIL FROM:a@x.test\r\nMAIL TO:<a@x.test>\r\nRSET now\r\nEHLO\r\n")
    c = codes(out)
    assert c[0].startswith("501 5.1.7 Bad sender address syntax: enclose the address")
    assert c[1] == "501 5.5.4 Syntax error: send MAIL FROM:<address>"
    assert c[2] == "501 5.5.4 Syntax error: RSET takes no arguments"
    assert c[3] == "501 5.5.4 Syntax error: send EHLO followed by your host name"


def test_unknown_parameter_gets_555(driver: Driver) -> None:
    driver.feed(EHLO)
    out = driver.feed(
        b"MAIL FROM:<a@x.test> FOO=bar\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test> BAR\r\n"
    )
    c = codes(out)
    assert c[0].startswith("555 5.5.4 Unsupported parameter FOO")
    assert c[2].startswith("555 5.5.4 Unsupported parameter BAR")


def test_parameters_after_helo_are_refused(driver: Driver) -> None:
    driver.feed(b"HELO c.example\r\n")
    out = driver.feed(b"MAIL FROM:<a@x.test> SIZE=10\r\n")
    assert codes(out)[0].startswith("555 5.5.4")


def test_mail_parameters_are_parsed(driver: Driver) -> None:
    driver.feed(EHLO)
    driver.feed(b"MAIL FROM:<a@x.test> SIZE=1000 BODY=8BITMIME SMTPUTF8\r\n")
    mail = next(e for e in driver.events if isinstance(e, Mail))
    assert (mail.size, mail.body_type, mail.smtputf8) == (1000, "8BITMIME", True)


def test_null_sender_is_accepted(driver: Driver) -> None:
    driver.feed(EHLO)
    assert codes(driver.feed(b"MAIL FROM:<>\r\n")) == ["250 2.1.0 Ok"]
    assert next(e for e in driver.events if isinstance(e, Mail)).sender is None


def test_null_recipient_is_refused(driver: Driver) -> None:
    driver.feed(EHLO + b"MAIL FROM:<>\r\n")
    assert codes(driver.feed(b"RCPT TO:<>\r\n"))[0].startswith("501 5.1.3")


def test_line_over_512_gets_500_and_session_goes_on(driver: Driver) -> None:
    out = driver.feed(b"NOOP " + b"x" * 600 + b"\r\nNOOP\r\n")
    assert codes(out) == ["500 5.5.6 Line too long", "250 2.0.0 Ok"]


def test_endless_line_is_discarded_in_pieces(driver: Driver) -> None:
    for _ in range(100):
        assert driver.feed(b"y" * 10_000) == b""
    assert len(driver.conn._lines) <= 512  # bounded memory
    assert codes(driver.feed(b"\r\nNOOP\r\n")) == ["500 5.5.6 Line too long", "250 2.0.0 Ok"]


def test_line_of_exactly_512_is_accepted(driver: Driver) -> None:
    line = b"NOOP " + b"x" * (512 - 7) + b"\r\n"
    assert len(line) == 512
    assert codes(driver.feed(line)) == ["250 2.0.0 Ok"]


def test_local_part_and_domain_and_path_limits(driver: Driver) -> None:
    driver.feed(EHLO)
    long_local = b"l" * 65
    out = driver.feed(b"MAIL FROM:<" + long_local + b"@x.test>\r\n")
    assert codes(out)[0].startswith("553 5.1.7 Local part too long")
    label = b"d" * 60
    long_domain = b".".join([label] * 5)  # 304 octets
    out = driver.feed(b"MAIL FROM:<a@" + long_domain + b">\r\n")
    assert codes(out)[0].startswith("501 5.1.7 Path too long")
    driver.feed(b"MAIL FROM:<a@x.test>\r\n")
    out = driver.feed(b"RCPT TO:<" + b"r" * 64 + b"@" + b".".join([label] * 3) + b">\r\n")
    assert codes(out)[0] == "250 2.1.5 Ok"  # 64 + 1 + 182 + 2 fits


def test_declared_size_over_limit_gets_552() -> None:
    driver = make_driver(max_message_size=1000)
    driver.feed(EHLO)
    out = driver.feed(b"MAIL FROM:<a@x.test> SIZE=1001\r\n")
    assert codes(out) == [
        "552 5.3.4 Message size exceeds fixed maximum message size of 1000 octets"
    ]


def test_body_over_limit_is_drained_and_session_goes_on() -> None:
    driver = make_driver(max_message_size=1000)
    driver.feed(EHLO + TXN)
    out = b""
    for _ in range(50):
        out += driver.feed(b"x" * 78 + b"\r\n")
    out += driver.feed(b".\r\nNOOP\r\n")
    assert codes(out) == [
        "552 5.3.4 Message size exceeds fixed maximum message size of 1000 octets",
        "250 2.0.0 Ok",
    ]
    assert driver.bodies == []
    assert codes(driver.feed(b"RCPT TO:<b@y.test>\r\n"))[0].startswith("503")


def test_too_many_recipients_gets_452() -> None:
    driver = make_driver(max_recipients=3)
    driver.feed(EHLO + b"MAIL FROM:<a@x.test>\r\n")
    out = driver.feed(b"".join(b"RCPT TO:<r%d@y.test>\r\n" % i for i in range(5)))
    assert (
        codes(out)[3:] == ["452 4.5.3 Too many recipients; send the rest in a new transaction"] * 2
    )
    assert codes(driver.feed(b"DATA\r\n")) == ["354 End data with <CR><LF>.<CR><LF>"]


def test_too_many_errors_closes_with_421() -> None:
    driver = make_driver(max_errors=3)
    out = driver.feed(b"BAD\r\nBAD\r\nBAD\r\nNOOP\r\n")
    assert codes(out) == [
        "500 5.5.2 Syntax error: command unrecognized",
        "500 5.5.2 Syntax error: command unrecognized",
        "500 5.5.2 Syntax error: command unrecognized",
        "421 4.7.0 Too many errors; closing connection",
    ]
    assert driver.closed


def test_quit_closes(driver: Driver) -> None:
    assert codes(driver.feed(b"QUIT\r\n")) == ["221 2.0.0 Bye"]
    assert driver.closed


def test_commands_after_quit_in_the_same_write_are_a_sync_error(driver: Driver) -> None:
    assert codes(driver.feed(b"QUIT\r\nNOOP\r\n")) == ["554 5.5.0 Error: SMTP protocol synchronization"]
    assert driver.closed


def test_content_before_354_is_a_sync_error_and_nothing_is_queued(driver: Driver) -> None:
    out = driver.feed(EHLO + TXN + b"Subject: eager\r\n\r\nbody\r\n.\r\n")
    assert codes(out)[-1] == "554 5.5.0 Error: SMTP protocol synchronization"
    assert "354 End data with <CR><LF>.<CR><LF>" not in codes(out)
    assert driver.closed and driver.bodies == []


def test_data_out_of_sequence_with_more_commands_is_not_a_sync_error(driver: Driver) -> None:
    out = driver.feed(EHLO + b"DATA\r\nNOOP\r\n")
    assert codes(out)[-2:] == ["503 5.5.1 Bad sequence of commands: send MAIL FROM first", "250 2.0.0 Ok"]


def test_early_talker_gets_554_and_is_closed() -> None:
    conn = ServerConnection()
    conn.receive_data(b"EHLO eager.example\r\n")
    out = conn.greeting(Reply(220, None, "test.example ESMTP mailwright"))
    assert out == b"554 5.5.0 Error: SMTP protocol synchronization\r\n"
    assert conn.state.value == "closed" and conn.early_talker


def test_vrfy_and_help(driver: Driver) -> None:
    out = driver.feed(b"VRFY alice\r\nHELP\r\nVRFY\r\n")
    c = codes(out)
    assert c[0].startswith("252 2.5.0")
    assert c[1].startswith("214")
    assert c[2].startswith("501")


def test_pipelined_commands_answered_in_order(driver: Driver) -> None:
    rcpts = b"".join(b"RCPT TO:<r%d@y.test>\r\n" % i for i in range(100))
    out = driver.feed(EHLO + b"MAIL FROM:<a@x.test>\r\n" + rcpts + b"DATA\r\n")
    out += driver.feed(b"hi\r\n.\r\nQUIT\r\n")
    c = codes(out)
    assert len(c) == 1 + 1 + 100 + 1 + 1 + 1
    assert c[-3:] == [
        "354 End data with <CR><LF>.<CR><LF>",
        "250 2.0.0 Ok: queued as TEST",
        "221 2.0.0 Bye",
    ]


def test_eof_mid_data_abandons_transaction(driver: Driver) -> None:
    driver.feed(EHLO + TXN + b"partial body")
    driver.feed(b"")
    assert driver.closed
    assert driver.bodies == []


def test_non_ascii_address_needs_smtputf8(driver: Driver) -> None:
    driver.feed(EHLO)
    out = driver.feed("MAIL FROM:<jösé@x.test>\r\n".encode())
    assert codes(out)[0].startswith("553 5.6.7")
    out = driver.feed("MAIL FROM:<jösé@x.test> SMTPUTF8\r\nRCPT TO:<用户@例子.test>\r\n".encode())
    assert codes(out) == ["250 2.1.0 Ok", "250 2.1.5 Ok"]


def test_invalid_utf8_is_refused(driver: Driver) -> None:
    assert codes(driver.feed(b"NOOP \xff\xfe\r\n"))[0].startswith("500 5.5.2")


def test_source_route_and_quoted_local_part(driver: Driver) -> None:
    driver.feed(EHLO + b"MAIL FROM:<a@x.test>\r\n")
    driver.feed(b'RCPT TO:<@relay.test,@other.test:b@y.test>\r\nRCPT TO:<"odd> @name"@y.test>\r\n')
    from mailwright.protocol.events import Rcpt

    got = [
        (e.recipient.local_part, e.recipient.domain) for e in driver.events if isinstance(e, Rcpt)
    ]
    assert got == [("b", "y.test"), ("odd> @name", "y.test")]


def test_next_event_before_answer_is_a_local_error() -> None:
    conn = ServerConnection()
    conn.greeting(Reply(220, None, "x"))
    conn.receive_data(b"NOOP\r\nNOOP\r\n")
    conn.next_event()
    with pytest.raises(LocalProtocolError):
        conn.next_event()


def test_need_data_on_partial_line() -> None:
    conn = ServerConnection()
    conn.greeting(Reply(220, None, "x"))
    conn.receive_data(b"NO")
    assert conn.next_event() is NEED_DATA


def test_bare_postmaster_recipient_is_accepted(driver: Driver) -> None:
    driver.feed(EHLO + b"MAIL FROM:<a@x.test>\r\n")
    assert codes(driver.feed(b"RCPT TO:<Postmaster>\r\n")) == ["250 2.1.5 Ok"]
    assert codes(driver.feed(b"RCPT TO:<someone>\r\n"))[0].startswith("501 5.1.3")


@pytest.mark.parametrize("split", [7, 100, 5000])
def test_body_line_limit_when_configured(split: int) -> None:
    driver = make_driver(max_body_line=1000)
    driver.feed(EHLO + TXN)
    ok_line = b"a" * 998 + b"\r\n"  # exactly 1000 with CRLF
    payload = b"Subject: x\r\n\r\n" + ok_line * 3 + b".\r\n"
    out = b"".join(driver.feed(payload[i : i + split]) for i in range(0, len(payload), split))
    assert codes(out) == ["250 2.0.0 Ok: queued as TEST"]
    driver.feed(TXN)
    payload = b"Subject: x\r\n\r\n" + ok_line + b"b" * 999 + b"\r\n" + ok_line + b".\r\nNOOP\r\n"
    out = b"".join(driver.feed(payload[i : i + split]) for i in range(0, len(payload), split))
    assert codes(out) == [
        "554 5.6.0 Message refused: a line is longer than 1000 octets (RFC 5321 4.5.3.1.6)",
        "250 2.0.0 Ok",
    ]


def test_long_body_lines_are_accepted_by_default(driver: Driver) -> None:
    driver.feed(EHLO + TXN)
    assert codes(driver.feed(b"x" * 100_000 + b"\r\n.\r\n")) == ["250 2.0.0 Ok: queued as TEST"]
    assert driver.bodies == [b"x" * 100_000 + b"\r\n"]


def test_refused_recipients_past_the_limit_close_with_421() -> None:
    driver = make_driver(max_refused_recipients=3)
    driver.refuse = {f"guess{i}" for i in range(10)}
    driver.feed(EHLO + b"MAIL FROM:<a@x.test>\r\n")
    out = driver.feed(b"".join(b"RCPT TO:<guess%d@y.test>\r\n" % i for i in range(10)))
    assert codes(out) == ["550 5.1.1 Mailbox unavailable"] * 4 + [
        "421 4.7.0 Too many refused recipients; closing connection"
    ]
    assert driver.closed


def test_refused_recipients_do_not_count_as_errors_and_accepted_ones_not_at_all() -> None:
    driver = make_driver(max_refused_recipients=3, max_errors=2)
    driver.refuse = {"gone"}
    driver.feed(EHLO + b"MAIL FROM:<a@x.test>\r\n")
    out = driver.feed(
        b"RCPT TO:<gone@y.test>\r\n" * 3 + b"RCPT TO:<here@y.test>\r\n" * 20 + b"DATA\r\n"
    )
    assert codes(out)[-1] == "354 End data with <CR><LF>.<CR><LF>"
    assert not driver.closed and driver.conn.errors == 0
