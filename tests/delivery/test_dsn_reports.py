"""DSN reports (RFC 3464) as the sender asked for them (RFC 3461): a real server on
loopback, smtplib clients sending the DSN parameters, a sink peer as the next hop, and
the reports read back from the sender's Maildir with the stdlib ``email`` package."""

from __future__ import annotations

import email
import email.message
import smtplib
from collections.abc import Callable, Sequence
from pathlib import Path

from mailwright.config import load_config
from mailwright.protocol.reply import Reply
from tests.helpers import BASE_CONFIG, RawClient, RunningServer, maildir_messages, wait_for
from tests.sink import Behaviour, SinkServer

#: owner@ sends and gets the reports; the rest as in BASE_CONFIG.
BASE = BASE_CONFIG.replace("[mailboxes]\n", '[mailboxes]\n"owner@example.test" = {}\n')
OWNER = "owner@example.test"
#: The next hop, without DSN: it cannot take the parameters on, so "relayed" is ours to send.
NO_DSN = frozenset({"DSN"})
REFUSED = Reply(550, "5.1.1", "No such user here")
LATER = Reply(451, "4.3.2", "Try again later")


def config_text(sink: SinkServer, extra: str = "", max_age: int = 60) -> str:
    return f"""
[routes]
"elsewhere.test" = "127.0.0.1:{sink.port}"
[relay]
networks = ["127.0.0.0/8"]
[queue]
retry = [1]
max_age = {max_age}
{extra}
"""


def send(
    server: RunningServer,
    rcpts: Sequence[str],
    body: str,
    *,
    mail_options: Sequence[str] = (),
    rcpt_options: Sequence[str] = (),
    sender: str = OWNER,
) -> None:
    with smtplib.SMTP(server.host, server.port, timeout=10) as client:
        refused = client.sendmail(sender, list(rcpts), body, list(mail_options), list(rcpt_options))
        assert refused == {}


def reports(server: RunningServer, count: int = 1) -> list[email.message.Message]:
    """The reports in owner@'s Maildir, once there are ``count`` of them."""
    raws = wait_for(lambda: len(maildir_messages(server.data_dir, OWNER)) >= count, timeout=30)
    assert raws
    return [email.message_from_bytes(raw) for raw in maildir_messages(server.data_dir, OWNER)]


def queue_is_empty(server: RunningServer) -> Callable[[], bool]:
    return lambda: server.call(lambda: server.app.store.list()) == []


def sections(
    report: email.message.Message,
) -> tuple[email.message.Message, list[email.message.Message]]:
    """The per-message fields and the per-recipient sections of a report (RFC 3464 2.1)."""
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    status = report.get_payload()[1]
    assert status.get_content_type() == "message/delivery-status"
    per_message, *per_recipient = status.get_payload()
    return per_message, per_recipient


def part_types(report: email.message.Message) -> list[str]:
    return [part.get_content_type() for part in report.get_payload()]


def refused_report(
    server_factory: Callable[..., RunningServer],
    sink: SinkServer,
    body: str,
    mail_options: Sequence[str],
    rcpt_options: Sequence[str] = (),
) -> email.message.Message:
    """The report of a message to bob@ (forwarded to the sink, which refuses him)."""
    sink.default = Behaviour(rcpt=REFUSED, hide=NO_DSN)
    server = server_factory(config_text(sink), base=BASE)
    send(server, ["bob@example.test"], body, mail_options=mail_options, rcpt_options=rcpt_options)
    [report] = reports(server)
    wait_for(queue_is_empty(server))
    return report


# ------------------------------------------------------------------ failed


def test_a_failure_with_ret_full_returns_the_whole_original_with_envid_and_orcpt(
    server_factory: Callable[..., RunningServer], sink: SinkServer
) -> None:
    report = refused_report(
        server_factory,
        sink,
        "Subject: doomed\r\n\r\nBODY-MARKER line one\r\n",
        ["RET=FULL", "ENVID=env+2B42"],
        ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;Bob+2BTag@Original.test"],
    )
    assert report["Subject"] == "Undelivered Mail Returned to Sender"
    per_message, [bob] = sections(report)
    assert per_message["Original-Envelope-Id"] == "env+2B42"  # xtext, as the sender gave it
    assert per_message["Reporting-MTA"] == "dns; mx.example.test"
    assert bob["Original-Recipient"] == "rfc822; Bob+Tag@Original.test"
    assert bob["Final-Recipient"] == "rfc822; bob@elsewhere.test"
    assert bob["Action"] == "failed"
    assert bob["Status"] == "5.1.1"
    assert bob["Remote-MTA"].startswith("dns; ")
    assert bob["Diagnostic-Code"] == "smtp; 550 5.1.1 No such user here"
    assert part_types(report) == ["text/plain", "message/delivery-status", "message/rfc822"]
    [original] = report.get_payload()[2].get_payload()
    assert original["Subject"] == "doomed"
    assert "BODY-MARKER line one" in original.get_payload()


def test_ret_full_over_50_kib_returns_the_headers_and_says_the_rest_was_left_out(
    server_factory: Callable[..., RunningServer], sink: SinkServer
) -> None:
    padding = ("BODY-MARKER " + "x" * 86 + "\r\n") * 600  # about 60 KB
    report = refused_report(
        server_factory, sink, "Subject: too big\r\n\r\n" + padding, ["RET=FULL"]
    )
    assert part_types(report) == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    text = report.get_payload()[0].get_payload()
    assert "larger than 50 KiB" in text and "the rest was left out" in text
    returned = report.get_payload()[2].get_payload()
    assert "Subject: too big" in returned
    assert b"BODY-MARKER" not in report.as_bytes()


def test_ret_full_of_a_binarymime_message_returns_its_headers_only(
    server_factory: Callable[..., RunningServer], sink: SinkServer
) -> None:
    """RFC 3030: a binary body cannot travel in a message/rfc822 part of a text report."""
    sink.default = Behaviour(rcpt=REFUSED, hide=NO_DSN)
    server = server_factory(config_text(sink), base=BASE)
    body = b"Subject: binary\r\n\r\nBODY-MARKER \x00\xff\r\n"
    client = RawClient(server.host, server.port)
    try:
        client.read_reply()
        client.send(b"EHLO client.test\r\n")
        assert "CHUNKING" in client.read_reply()
        client.send(f"MAIL FROM:<{OWNER}> BODY=BINARYMIME RET=FULL\r\n".encode())
        client.send(b"RCPT TO:<bob@example.test>\r\n")
        client.send(f"BDAT {len(body)} LAST\r\n".encode() + body)
        replies = client.replies(3)
        assert [reply[:3] for reply in replies] == ["250", "251", "250"], replies
    finally:
        client.close()
    [report] = reports(server)
    _, [bob] = sections(report)
    assert bob["Action"] == "failed"
    assert part_types(report) == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    assert "Subject: binary" in report.get_payload()[2].get_payload()
    assert b"BODY-MARKER" not in report.as_bytes()


def test_ret_hdrs_returns_the_headers_only(
    server_factory: Callable[..., RunningServer], sink: SinkServer
) -> None:
    report = refused_report(
        server_factory, sink, "Subject: hdrs\r\n\r\nBODY-MARKER\r\n", ["RET=HDRS", "ENVID=hdrs-1"]
    )
    per_message, [bob] = sections(report)
    assert per_message["Original-Envelope-Id"] == "hdrs-1"
    assert bob["Action"] == "failed"
    assert part_types(report) == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    assert "Subject: hdrs" in report.get_payload()[2].get_payload()
    assert b"BODY-MARKER" not in report.as_bytes()


def test_notify_never_and_notify_without_failure_give_no_report(
    server_factory: Callable[..., RunningServer], sink: SinkServer
) -> None:
    """Two messages whose failures must not be reported, then one whose failure must: its
    report arrives alone, and nothing is left in the queue to come after it."""
    sink.default = Behaviour(rcpt=REFUSED, hide=NO_DSN)
    server = server_factory(config_text(sink), base=BASE)
    send(server, ["x@elsewhere.test"], "Subject: never\r\n\r\nb\r\n", rcpt_options=["NOTIFY=NEVER"])
    send(
        server,
        ["y@elsewhere.test"],
        "Subject: success only\r\n\r\nb\r\n",
        rcpt_options=["NOTIFY=SUCCESS,DELAY"],
    )
    send(server, ["z@elsewhere.test"], "Subject: reported\r\n\r\nb\r\n")
    [report] = reports(server)
    wait_for(queue_is_empty(server))
    assert len(maildir_messages(server.data_dir, OWNER)) == 1
    _, [z] = sections(report)
    assert z["Final-Recipient"] == "rfc822; z@elsewhere.test"
    assert "Subject: reported" in report.get_payload()[2].get_payload()
    assert len(sink.messages) == 0  # all three were refused at RCPT


# ------------------------------------------------------------------ success


def test_local_delivery_with_notify_success_gives_a_delivered_report_with_headers_only(
    server_factory: Callable[..., RunningServer], sink: SinkServer
) -> None:
    server = server_factory(config_text(sink), base=BASE)
    send(
        server,
        ["alice@example.test"],
        "Subject: hello alice\r\n\r\nBODY-MARKER\r\n",
        mail_options=["RET=FULL", "ENVID=ok-1"],
        rcpt_options=["NOTIFY=SUCCESS", "ORCPT=rfc822;alice@example.test"],
    )
    [report] = reports(server)
    assert report["Subject"] == "Successful Mail Delivery Report"
    assert report["From"].startswith("Mail Delivery System <MAILER-DAEMON@mx.example.test>")
    assert b"Return-Path: <>" in maildir_messages(server.data_dir, OWNER)[0]
    per_message, [alice] = sections(report)
    assert per_message["Original-Envelope-Id"] == "ok-1"
    assert alice["Original-Recipient"] == "rfc822; alice@example.test"
    assert alice["Final-Recipient"] == "rfc822; alice@example.test"
    assert alice["Action"] == "delivered"
    assert alice["Status"] == "2.0.0"
    assert alice["Remote-MTA"] is None
    # Only a failure returns the whole message (RFC 3461 4.3): this one has its headers.
    assert part_types(report) == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    assert b"BODY-MARKER" not in report.as_bytes()
    assert len(maildir_messages(server.data_dir, "alice@example.test")) == 1


def test_a_next_hop_without_dsn_gives_a_relayed_report(
    server_factory: Callable[..., RunningServer], sink: SinkServer
) -> None:
    sink.default = Behaviour(hide=NO_DSN)
    server = server_factory(config_text(sink), base=BASE)
    send(
        server,
        ["bob@example.test"],
        "Subject: relay me\r\n\r\nb\r\n",
        rcpt_options=["NOTIFY=SUCCESS,FAILURE"],
    )
    sink.wait_for_messages(1)
    [report] = reports(server)
    _, [bob] = sections(report)
    assert bob["Action"] == "relayed"
    assert bob["Status"].startswith("2.")
    assert bob["Final-Recipient"] == "rfc822; bob@elsewhere.test"
    assert bob["Original-Recipient"] == "rfc822; bob@example.test"  # the 251 forward
    assert bob["Remote-MTA"].startswith("dns; ")


def test_a_next_hop_with_dsn_is_given_notify_and_no_relayed_report_is_made(
    server_factory: Callable[..., RunningServer], sink: SinkServer
) -> None:
    """RFC 3461 5.2.2: the next hop took NOTIFY=SUCCESS and reports itself.  A local
    delivery with SUCCESS asked comes after it, and its report arrives alone."""
    server = server_factory(config_text(sink), base=BASE)
    send(server, ["bob@example.test"], "Subject: on\r\n\r\nb\r\n", rcpt_options=["NOTIFY=SUCCESS"])
    [received] = sink.wait_for_messages(1)
    assert received.rcpt_params[0]["NOTIFY"] == "SUCCESS"
    wait_for(queue_is_empty(server))
    send(
        server, ["dave@example.test"], "Subject: here\r\n\r\nb\r\n", rcpt_options=["NOTIFY=SUCCESS"]
    )
    [report] = reports(server)
    wait_for(queue_is_empty(server))
    assert len(maildir_messages(server.data_dir, OWNER)) == 1
    _, [dave] = sections(report)
    assert (dave["Action"], dave["Final-Recipient"]) == ("delivered", "rfc822; dave@example.test")


def test_success_is_not_reported_unless_asked(
    server_factory: Callable[..., RunningServer], sink: SinkServer
) -> None:
    """Delivered without NOTIFY, then with NOTIFY=SUCCESS: only the second is reported."""
    server = server_factory(config_text(sink), base=BASE)
    send(server, ["alice@example.test"], "Subject: first\r\n\r\nb\r\n")
    send(
        server,
        ["dave@example.test"],
        "Subject: second\r\n\r\nb\r\n",
        rcpt_options=["NOTIFY=SUCCESS"],
    )
    [report] = reports(server)
    wait_for(queue_is_empty(server))
    assert len(maildir_messages(server.data_dir, OWNER)) == 1
    _, [dave] = sections(report)
    assert dave["Final-Recipient"] == "rfc822; dave@example.test"


def test_an_alias_with_several_targets_gives_one_expanded_report(
    server_factory: Callable[..., RunningServer], sink: SinkServer
) -> None:
    """team@ expands to alice@ and dave@: one "expanded" section for team@ (as Postfix),
    none for the targets; a NOTIFY=SUCCESS message to dave@ alone comes after it."""
    server = server_factory(config_text(sink), base=BASE)
    send(
        server,
        ["team@example.test"],
        "Subject: to the team\r\n\r\nb\r\n",
        rcpt_options=["NOTIFY=SUCCESS,FAILURE"],
    )
    assert len(reports(server)) == 1
    wait_for(queue_is_empty(server))
    send(
        server,
        ["dave@example.test"],
        "Subject: after\r\n\r\nb\r\n",
        rcpt_options=["NOTIFY=SUCCESS"],
    )
    first, second = reports(server, 2)
    _, [team] = sections(first)
    assert team["Action"] == "expanded"
    assert team["Final-Recipient"] == "rfc822; team@example.test"
    assert team["Original-Recipient"] == "rfc822; team@example.test"
    assert team["Status"] == "2.0.0"
    _, [dave] = sections(second)
    assert (dave["Action"], dave["Final-Recipient"]) == ("delivered", "rfc822; dave@example.test")
    assert len(maildir_messages(server.data_dir, "alice@example.test")) == 1
    assert len(maildir_messages(server.data_dir, "dave@example.test")) == 2


# ------------------------------------------------------------------ one report, several recipients


def test_reports_falling_due_together_share_one_report(
    server_factory: Callable[..., RunningServer], sink: SinkServer
) -> None:
    """dave@ delivered (SUCCESS asked), x@ and y@ refused: one report, three sections."""
    sink.default = Behaviour(rcpt=REFUSED, hide=NO_DSN)
    server = server_factory(config_text(sink), base=BASE)
    with smtplib.SMTP(server.host, server.port, timeout=10) as client:
        client.ehlo("client.test")
        assert client.mail(OWNER, ["ENVID=shared"])[0] == 250
        assert client.rcpt("dave@example.test", ["NOTIFY=SUCCESS"])[0] == 250
        assert client.rcpt("x@elsewhere.test", ["NOTIFY=FAILURE"])[0] == 250
        assert client.rcpt("y@elsewhere.test")[0] == 250
        assert client.data("Subject: three\r\n\r\nb\r\n")[0] == 250
    wait_for(queue_is_empty(server), timeout=30)
    [report] = reports(server)
    assert report["Subject"] == "Undelivered Mail Returned to Sender"
    _, recipients = sections(report)
    actions = {r["Final-Recipient"]: r["Action"] for r in recipients}
    assert actions == {
        "rfc822; dave@example.test": "delivered",
        "rfc822; x@elsewhere.test": "failed",
        "rfc822; y@elsewhere.test": "failed",
    }


def test_a_null_sender_never_gets_a_report(
    server_factory: Callable[..., RunningServer], sink: SinkServer
) -> None:
    """From <> with NOTIFY=SUCCESS and a refused recipient: nothing; the same from owner@
    then gets its report, alone."""
    sink.default = Behaviour(rcpt=REFUSED, hide=NO_DSN)
    server = server_factory(config_text(sink), base=BASE)
    for sender in ("", OWNER):
        with smtplib.SMTP(server.host, server.port, timeout=10) as client:
            client.ehlo("client.test")
            assert client.mail(sender)[0] == 250
            assert client.rcpt("dave@example.test", ["NOTIFY=SUCCESS,FAILURE"])[0] == 250
            assert client.rcpt("x@elsewhere.test", ["NOTIFY=SUCCESS,FAILURE"])[0] == 250
            assert client.data(f"Subject: from <{sender}>\r\n\r\nb\r\n")[0] == 250
    [report] = reports(server)
    wait_for(queue_is_empty(server))
    assert len(maildir_messages(server.data_dir, OWNER)) == 1
    assert f"Subject: from <{OWNER}>" in report.get_payload()[2].get_payload()
    assert maildir_messages(server.data_dir, "postmaster@example.test") == []


# ------------------------------------------------------------------ delayed


def recipient_attempts(server: RunningServer) -> int:
    """Attempts made for the one recipient of owner@'s message (reports come from <>)."""
    messages = server.call(lambda: server.app.store.list())
    [message] = [m for m in messages if m.sender is not None]  # type: ignore[attr-defined]
    [rcpt] = message.recipients
    return int(rcpt.attempts)


def test_one_delayed_report_per_recipient_across_a_restart(
    tmp_path: Path, sink: SinkServer
) -> None:
    """A next hop that answers 451: after delay_warning one "delayed" report, then more
    deferrals, a restart and more deferrals make no second one; the delivery at last
    makes none either (no SUCCESS asked), and the queue empties."""
    sink.default = Behaviour(rcpt=LATER, hide=NO_DSN)
    config_path = tmp_path / "mw.toml"
    config_path.write_text(BASE + config_text(sink, "delay_warning = 1"))
    config = load_config(config_path)
    server = RunningServer(config)
    try:
        send(
            server,
            ["bob@example.test"],
            "Subject: slow\r\n\r\nBODY-MARKER\r\n",
            mail_options=["RET=FULL"],
        )
        [report] = reports(server)
        assert report["Subject"] == "Delayed Mail (still being retried)"
        _, [bob] = sections(report)
        assert bob["Action"] == "delayed"
        assert bob["Status"] == "4.3.2"
        assert bob["Diagnostic-Code"] == "smtp; 451 4.3.2 Try again later"
        assert bob["Will-Retry-Until"]
        assert part_types(report)[2] == "text/rfc822-headers"  # only a failure returns all
        # The report is in its Maildir a moment before its own delivery is recorded
        # and it leaves the queue: wait for that, then bob's message is alone there.
        wait_for(lambda: len(server.call(lambda: server.app.store.list())) == 1, timeout=30)
        [message] = server.call(lambda: server.app.store.list())  # type: ignore[misc]
        assert message.recipients[0].delay_reported
        reported_at = recipient_attempts(server)
        wait_for(lambda: recipient_attempts(server) >= reported_at + 2, timeout=30)
    finally:
        server.stop()
    server = RunningServer(config)
    try:
        restarted_at = recipient_attempts(server)
        wait_for(lambda: recipient_attempts(server) >= restarted_at + 2, timeout=30)
        sink.default = Behaviour(hide=NO_DSN)
        wait_for(queue_is_empty(server), timeout=30)
        assert len(maildir_messages(server.data_dir, OWNER)) == 1
    finally:
        server.stop()


def test_notify_without_delay_gives_no_delayed_report(
    server_factory: Callable[..., RunningServer], sink: SinkServer
) -> None:
    """NOTIFY=FAILURE defers past delay_warning without a report; a second recipient of
    the default NOTIFY then gets its own, alone."""
    sink.default = Behaviour(
        rcpt={"x@elsewhere.test": LATER, "y@elsewhere.test": LATER}, hide=NO_DSN
    )
    server = server_factory(config_text(sink, "delay_warning = 1"), base=BASE)
    send(server, ["x@elsewhere.test"], "Subject: x\r\n\r\nb\r\n", rcpt_options=["NOTIFY=FAILURE"])

    def attempts_of_x() -> int:
        messages = server.call(lambda: server.app.store.list())
        return max(r.attempts for m in messages for r in m.recipients)  # type: ignore[attr-defined]

    wait_for(lambda: attempts_of_x() >= 3, timeout=30)  # 2 s in the queue: past delay_warning
    send(server, ["y@elsewhere.test"], "Subject: y\r\n\r\nb\r\n")
    [report] = reports(server)
    _, [y] = sections(report)
    assert (y["Action"], y["Final-Recipient"]) == ("delayed", "rfc822; y@elsewhere.test")
    assert len(maildir_messages(server.data_dir, OWNER)) == 1


def test_delay_warning_0_turns_delayed_reports_off(
    server_factory: Callable[..., RunningServer], sink: SinkServer
) -> None:
    """Deferred until max_age, past any delay: the one report is the failure at expiry."""
    sink.default = Behaviour(rcpt=LATER, hide=NO_DSN)
    server = server_factory(config_text(sink, "delay_warning = 0", max_age=3), base=BASE)
    send(server, ["x@elsewhere.test"], "Subject: x\r\n\r\nb\r\n")
    [report] = reports(server)
    wait_for(queue_is_empty(server))
    assert len(maildir_messages(server.data_dir, OWNER)) == 1
    _, [x] = sections(report)
    assert (x["Action"], x["Status"]) == ("failed", "4.4.7")
