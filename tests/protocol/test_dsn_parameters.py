"""The DSN parameters of MAIL and RCPT (RFC 3461 4), fed to the server core as bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailwright.model import Notify
from mailwright.protocol.dsn import decode_xtext, encode_xtext, orcpt_parameter
from mailwright.protocol.events import Mail, Rcpt
from tests.protocol.conftest import Driver, codes, make_driver

EHLO = b"EHLO client.example\r\n"


def started(driver: Driver, mail: bytes = b"MAIL FROM:<a@x.test>\r\n") -> None:
    driver.feed(EHLO)
    assert codes(driver.feed(mail))[0].startswith("250")


def test_ehlo_advertises_dsn_and_a_server_without_it_refuses_the_parameters() -> None:
    driver = make_driver()
    assert b"250-DSN\r\n" in driver.feed(EHLO)
    plain = make_driver(dsn=False)
    assert b"DSN" not in plain.feed(EHLO)
    [reply] = codes(plain.feed(b"MAIL FROM:<a@x.test> RET=HDRS\r\n"))
    assert reply.startswith("555 5.5.4 Unsupported parameter RET")


def test_mail_takes_ret_and_envid_decoded(driver: Driver) -> None:
    started(driver, b"MAIL FROM:<a@x.test> RET=full ENVID=QQ+2B1+3D2\r\n")
    [mail] = [e for e in driver.events if isinstance(e, Mail)]
    assert (mail.ret, mail.envid) == ("FULL", "QQ+1=2")
    assert (mail.options.ret, mail.options.envid) == ("FULL", "QQ+1=2")


def test_rcpt_takes_notify_and_orcpt(driver: Driver) -> None:
    started(driver)
    out = driver.feed(
        b"RCPT TO:<b@y.test> NOTIFY=success,DELAY ORCPT=rfc822;B+2Bx@Y.test\r\n"
        b"RCPT TO:<c@y.test> NOTIFY=NEVER\r\n"
        b"RCPT TO:<d@y.test>\r\n"
    )
    assert [c[:3] for c in codes(out)] == ["250", "250", "250"]
    b, c, d = [e for e in driver.events if isinstance(e, Rcpt)]
    assert b.notify == Notify(frozenset({"SUCCESS", "DELAY"}), given=True)
    assert b.orcpt == "rfc822;B+x@Y.test"
    assert c.notify == Notify(frozenset(), given=True) and str(c.notify) == "NEVER"
    assert d.notify == Notify() and not d.notify.given and d.orcpt is None


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b"MAIL FROM:<a@x.test> RET=BODY", "Syntax error in RET: must be FULL or HDRS"),
        (b"MAIL FROM:<a@x.test> RET", "Syntax error in RET: must be FULL or HDRS"),
        (b"MAIL FROM:<a@x.test> ENVID=" + b"x" * 101, "ENVID: longer than 100 characters"),
        (b"MAIL FROM:<a@x.test> ENVID=a+2b", "Syntax error in ENVID: not valid xtext"),
        (b"MAIL FROM:<a@x.test> ENVID=a+", "Syntax error in ENVID: not valid xtext"),
        (b"MAIL FROM:<a@x.test> RET=FULL RET=HDRS", "Parameter RET given twice"),
    ],
)
def test_bad_mail_parameters_get_501_naming_the_parameter(
    driver: Driver, line: bytes, problem: str
) -> None:
    driver.feed(EHLO)
    [reply] = codes(driver.feed(line + b"\r\n"))
    assert reply.startswith("501 5.5.4") and problem in reply


@pytest.mark.parametrize(
    ("parameters", "problem"),
    [
        (b"NOTIFY=NEVER,SUCCESS", "NOTIFY: NEVER cannot be combined with other values"),
        (b"NOTIFY=SUCCESS,SOMETIMES", "NOTIFY: unknown keyword 'SOMETIMES'"),
        (b"NOTIFY=SUCCESS,SUCCESS", "NOTIFY: a keyword is given twice"),
        (b"NOTIFY", "NOTIFY: a value is required"),
        (b"ORCPT=b@y.test", "ORCPT: expected addr-type;address"),
        (b"ORCPT=;b@y.test", "ORCPT: expected addr-type;address"),
        (b"ORCPT=rfc822;", "ORCPT: expected addr-type;address"),
        (b"ORCPT=rfc822;b+zz@y.test", "ORCPT: the address is not valid xtext"),
        (b"ORCPT=rfc822;" + b"b" * 495 + b"@y.test", "ORCPT: longer than 500 characters"),
        (b"NOTIFY=DELAY NOTIFY=FAILURE", "Parameter NOTIFY given twice"),
    ],
)
def test_bad_rcpt_parameters_get_501_naming_the_parameter(
    driver: Driver, parameters: bytes, problem: str
) -> None:
    started(driver)
    [reply] = codes(driver.feed(b"RCPT TO:<b@y.test> " + parameters + b"\r\n"))
    assert reply.startswith("501 5.5.4") and problem in reply
    # The transaction goes on: a good RCPT is still accepted.
    assert codes(driver.feed(b"RCPT TO:<b@y.test>\r\n"))[0].startswith("250")


def test_dsn_parameters_lengthen_mail_by_100_and_rcpt_by_500_but_nothing_else(
    driver: Driver,
) -> None:
    """RFC 3461 3: a line past 512 octets is still a command when its DSN parameters
    make it so; NOOP gets no more room."""
    started(driver)
    domain = b".".join([b"y" * 60] * 3)
    orcpt = b"ORCPT=rfc822;" + b"r" * 480 + b"@y.test"  # 500 characters
    rcpt = b"RCPT TO:<" + b"b" * 64 + b"@" + domain + b"> NOTIFY=SUCCESS " + orcpt
    assert 512 < len(rcpt) + 2 <= 512 + 500
    assert codes(driver.feed(rcpt + b"\r\n"))[0].startswith("250")
    driver.feed(b"RSET\r\n")
    # MAIL: past 512 with its 100 more octets the line is read as a command (here 555
    # for the unknown padding parameter); past 612 it is too long.
    mail = b"MAIL FROM:<a@x.test> RET=HDRS ENVID=" + b"e" * 100 + b" PAD="
    for length, reply in (
        (600, "555 5.5.4 Unsupported parameter PAD"),
        (620, "500 5.5.6 Line too long"),
    ):
        line = mail + b"p" * (length - 2 - len(mail)) + b"\r\n"
        assert codes(driver.feed(line))[0].startswith(reply)
    noop = b"NOOP " + b"n" * 600
    assert codes(driver.feed(noop + b"\r\n"))[0].startswith("500 5.5.6 Line too long")


def test_orcpt_of_the_utf8_type_may_carry_utf8_in_an_smtputf8_transaction(
    driver: Driver,
) -> None:
    """RFC 6533 3 (utf-8-addr-unitext), RFC 6531 3.3: only with SMTPUTF8."""
    started(driver, b"MAIL FROM:<a@x.test> SMTPUTF8\r\n")
    line = "RCPT TO:<b@y.test> ORCPT=utf-8;jörg@y.test\r\n".encode()
    assert codes(driver.feed(line))[0].startswith("250")
    rcpt = [e for e in driver.events if isinstance(e, Rcpt)][-1]
    assert rcpt.orcpt == "utf-8;jörg@y.test"
    plain = make_driver()
    started(plain)
    assert codes(plain.feed(line))[0].startswith("501 5.5.4")


@given(st.text(max_size=80))
def test_xtext_round_trips_any_text(text: str) -> None:
    """What decode_xtext gives (octets as characters 0 to 0xFF) comes back as it was; text
    with characters above 0xFF goes as its UTF-8 octets."""
    encoded = encode_xtext(text)
    assert encoded.isascii() and "=" not in encoded and " " not in encoded
    decoded = decode_xtext(encoded)
    assert decoded is not None
    if max(text, default="\0") <= "\xff":
        assert decoded == text
    else:
        assert decoded.encode("latin-1") == text.encode("utf-8")


def test_orcpt_is_sent_on_as_xtext() -> None:
    assert orcpt_parameter("rfc822;a+b=c@y.test") == "rfc822;a+2Bb+3Dc@y.test"
    assert orcpt_parameter("utf-8;jörg@y.test", smtputf8=True) == "utf-8;jörg@y.test"
    assert orcpt_parameter("utf-8;jörg@y.test") == "utf-8;j\\x{F6}rg@y.test"
