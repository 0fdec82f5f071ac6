"""The delivery worker keeps going: a failure stays in the delivery where it happened.

Real servers on loopback, a real queue: the failing storage is a real tmpfs
that fills up, or the queue's own SQLite database refusing a write (a trigger,
as a failing disk would refuse it); the slow destination is a real TCP peer
that never greets.
"""

from __future__ import annotations

import contextlib
import email
import itertools
import logging
import os
import re
import signal
import smtplib
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailwright.config import load_config
from mailwright.protocol.reply import Reply
from tests.helpers import (
    BASE_CONFIG,
    RunningServer,
    ServerProcess,
    maildir_messages,
    mounted_tmpfs,
    wait_for,
)
from tests.peers import Tarpit
from tests.sink import Behaviour, SinkServer

#: Threads sending at once while the disk fills, and the refusals each waits for.
SENDERS = 3
REFUSALS_EACH = 3


# ------------------------------------------------------------------ helpers


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: a real file system that really fills up, and grows on remount."""
    with mounted_tmpfs(tmp_path / "disk", "4m") as disk:
        yield disk


@pytest.fixture
def tarpit() -> Iterator[Tarpit]:
    peer = Tarpit()
    yield peer
    peer.stop()


def queue_cli(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailwright", "queue", *args, "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def send(server: RunningServer, sender: str, rcpts: list[str], body: str) -> None:
    with smtplib.SMTP(server.host, server.port, timeout=10) as client:
        assert client.sendmail(sender, rcpts, body) == {}


def markers_in_maildir(data_dir: Path, address: str) -> list[str]:
    """The marker (``Subject: fill-N``) of every message in the Maildir, once per copy."""
    return [
        match.group(1).decode()
        for message in maildir_messages(data_dir, address)
        if (match := re.search(rb"Subject: (fill-\d+)", message))
    ]


def run_sql(data_dir: Path, statement: str) -> None:
    """One statement on the server's queue database, from a connection of the test's own."""
    with contextlib.closing(
        sqlite3.connect(data_dir / "queue.sqlite3", timeout=30, isolation_level=None)
    ) as connection:
        connection.execute(statement)


def logged(caplog: pytest.LogCaptureFixture, text: str) -> Callable[[], bool]:
    return lambda: any(text in record.getMessage() for record in caplog.records)


def queue_is_empty(server: RunningServer) -> Callable[[], bool]:
    return lambda: server.call(lambda: server.app.store.list()) == []


def recipient_states(server: RunningServer) -> dict[str, str]:
    messages = server.call(lambda: server.app.store.list())
    return {str(r.target.address): r.state.value for m in messages for r in m.recipients}


def routed(port: int, extra: str = "") -> str:
    return f"""
[routes]
"elsewhere.test" = "127.0.0.1:{port}"
[queue]
retry = [1]
max_age = 60
{extra}
"""


# ------------------------------------------------------------------ storage failing


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root and a tmpfs mount")
def test_a_full_disk_does_not_stop_delivery_for_good(small_tmpfs: Path, tmp_path: Path) -> None:
    """Fill the data_dir until the server refuses, give the space back, retry: every
    message that got 250 reaches its Maildir once, and every result is recorded."""
    config_path = tmp_path / "mw.toml"
    config_path.write_text(
        BASE_CONFIG.replace('data_dir = "data"', f'data_dir = "{small_tmpfs}"')
        + "\n[queue]\nretry = [1]\n"
    )
    server = ServerProcess(config_path)
    accepted: list[str] = []
    refusals: list[int] = []
    lock = threading.Lock()
    padding = ("x" * 998 + "\r\n") * 24  # about 24 KB a message
    numbers = itertools.count(1)

    def fill() -> None:
        """Send until the server has refused a few times: the disk is full."""
        refused_here = 0
        while refused_here < REFUSALS_EACH:
            marker = f"fill-{next(numbers)}"
            try:
                with smtplib.SMTP(server.host, server.port, timeout=30) as client:
                    client.sendmail(
                        "sender@remote.test",
                        ["alice@example.test"],
                        f"Subject: {marker}\r\n\r\n{padding}",
                    )
            except smtplib.SMTPResponseException as refusal:
                with lock:
                    refusals.append(refusal.smtp_code)
                refused_here += 1
                continue
            with lock:
                accepted.append(marker)

    try:
        senders = [threading.Thread(target=fill) for _ in range(SENDERS)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(120)
        assert len(refusals) == SENDERS * REFUSALS_EACH
        assert all(400 <= code < 500 for code in refusals), refusals
        subprocess.run(["mount", "-o", "remount,size=64m", str(small_tmpfs)], check=True)
        retried = queue_cli(config_path, "retry")
        assert retried.returncode == 0, retried.stderr

        def every_result_recorded() -> bool:
            listing = queue_cli(config_path, "list")
            return listing.stdout.splitlines()[-1:] == ["0 message(s) in the queue"]

        wait_for(every_result_recorded, timeout=60, interval=0.5)
        assert sorted(markers_in_maildir(small_tmpfs, "alice@example.test")) == sorted(accepted)
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait() == 0
        assert "event=delivery-crash" not in server.log()
    finally:
        server.kill()


REFUSE_RESULTS = """
CREATE TRIGGER refuse_results BEFORE UPDATE OF state ON recipients
BEGIN SELECT RAISE(ABORT, 'the disk refuses the write'); END
"""


def test_a_result_that_cannot_be_recorded_is_recorded_once_storage_is_back(
    server_factory: Callable[..., RunningServer], caplog: pytest.LogCaptureFixture
) -> None:
    """The worker records the result again (with a pause) instead of dropping it: the copy
    is not delivered again, and the worker goes on with new mail."""
    caplog.set_level(logging.INFO, logger="mailwright.delivery")
    server = server_factory()
    run_sql(server.data_dir, REFUSE_RESULTS)
    send(server, "sender@remote.test", ["alice@example.test"], "Subject: first\r\n\r\nb\r\n")
    wait_for(logged(caplog, "event=record-error"))
    assert len(maildir_messages(server.data_dir, "alice@example.test")) == 1
    run_sql(server.data_dir, "DROP TRIGGER refuse_results")
    wait_for(queue_is_empty(server))
    send(server, "sender@remote.test", ["alice@example.test"], "Subject: second\r\n\r\nb\r\n")
    wait_for(lambda: len(maildir_messages(server.data_dir, "alice@example.test")) == 2)
    wait_for(queue_is_empty(server))
    copies = maildir_messages(server.data_dir, "alice@example.test")
    assert sorted(m.count(b"Subject: first") for m in copies) == [0, 1]
    assert not logged(caplog, "event=delivery-crash")()


# ------------------------------------------------------------------ bounces

#: The queue refuses to store any message from the null sender: every bounce fails.
REFUSE_BOUNCES = """
CREATE TRIGGER refuse_bounces BEFORE INSERT ON messages WHEN NEW.sender_local IS NULL
BEGIN SELECT RAISE(ABORT, 'no room for bounces'); END
"""


def half_delivered(
    server: RunningServer, sink: SinkServer, caplog: pytest.LogCaptureFixture
) -> None:
    """alice's message goes to dave (local, delivered) and bob (remote, refused for good);
    its bounce to alice fails."""
    sink.default = Behaviour(rcpt=Reply(550, "5.1.1", "No such user here"))
    run_sql(server.data_dir, REFUSE_BOUNCES)
    send(
        server,
        "alice@example.test",
        ["dave@example.test", "bob@example.test"],
        "Subject: half\r\n\r\nbody\r\n",
    )
    wait_for(logged(caplog, "event=bounce-error"))


def assert_one_copy_and_the_bounce(server: RunningServer) -> None:
    [raw] = wait_for(lambda: maildir_messages(server.data_dir, "alice@example.test"), timeout=30)
    report = email.message_from_bytes(raw).as_bytes()
    assert b"Final-Recipient: rfc822; bob@elsewhere.test" in report
    assert b"Status: 5.1.1" in report
    wait_for(queue_is_empty(server))  # every result recorded: nothing is delivered after this
    [copy] = maildir_messages(server.data_dir, "dave@example.test")
    assert b"Subject: half" in copy


def test_a_failed_bounce_is_made_later_on_its_own(
    server_factory: Callable[..., RunningServer],
    sink: SinkServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mailwright.delivery")
    server = server_factory(routed(sink.port))
    half_delivered(server, sink, caplog)
    recorded = {"dave@example.test": "delivered", "bob@elsewhere.test": "bouncing"}
    wait_for(lambda: recipient_states(server) == recorded)
    run_sql(server.data_dir, "DROP TRIGGER refuse_bounces")
    assert_one_copy_and_the_bounce(server)  # no retry command, no restart


def test_a_failed_bounce_never_makes_a_delivered_copy_again_after_a_restart(
    tmp_path: Path, sink: SinkServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A restart releases every claim, as a lapsed lease does: the recipient delivered
    before the bounce failed must not be delivered again, and the bounce is still made."""
    caplog.set_level(logging.INFO, logger="mailwright.delivery")
    config_path = tmp_path / "mw.toml"
    config_path.write_text(BASE_CONFIG + routed(sink.port))
    config = load_config(config_path)
    server = RunningServer(config)
    try:
        half_delivered(server, sink, caplog)
    finally:
        server.stop()
    listing = queue_cli(config_path, "list").stdout
    assert "bouncing  <bob@elsewhere.test> (remote)  attempts=1  next=" in listing
    assert "last reply: 550 5.1.1 No such user here" in listing
    run_sql(config.data_dir, "DROP TRIGGER refuse_bounces")
    server = RunningServer(config)
    try:
        assert_one_copy_and_the_bounce(server)
    finally:
        server.stop()


# ------------------------------------------------------------------ slow destinations


def test_local_mail_is_delivered_while_a_tarpit_holds_every_remote_slot(
    server_factory: Callable[..., RunningServer], tarpit: Tarpit
) -> None:
    """A destination that accepts connections and never greets holds both of the
    ``concurrency = 2`` slots; more mail waits for it, and local mail still arrives."""
    server = server_factory(routed(tarpit.port, "[delivery]\nconcurrency = 2\n"))
    for number in range(4):
        send(server, "sender@remote.test", ["bob@example.test"], f"Subject: slow {number}\r\n\r\n")
    wait_for(lambda: tarpit.accepted == 2)
    send(server, "sender@remote.test", ["alice@example.test"], "Subject: local\r\n\r\nb\r\n")
    [copy] = wait_for(lambda: maildir_messages(server.data_dir, "alice@example.test"), timeout=30)
    assert b"Subject: local" in copy
    assert tarpit.open_connections() == 2  # still held: the local delivery did not wait
    assert tarpit.accepted == 2  # the other two wait for a slot, not for a second connection


def test_messages_waiting_for_a_slow_destination_leave_room_for_other_work(
    server_factory: Callable[..., RunningServer], tarpit: Tarpit
) -> None:
    """With one SMTP slot and one Maildir thread the worker has 33 messages in delivery at
    most; 40 messages waiting for a tarpit stop counting once they have waited a while,
    so the worker claims the local message behind them."""
    server = server_factory(
        routed(tarpit.port, "[delivery]\nconcurrency = 1\nlocal_concurrency = 1\n")
    )
    assert server.app.worker.max_active == 33
    with smtplib.SMTP(server.host, server.port, timeout=10) as client:
        for number in range(40):
            client.sendmail(
                "sender@remote.test", ["bob@example.test"], f"Subject: {number}\r\n\r\n"
            )
    wait_for(lambda: tarpit.accepted == 1)
    send(server, "sender@remote.test", ["alice@example.test"], "Subject: local\r\n\r\nb\r\n")
    [copy] = wait_for(lambda: maildir_messages(server.data_dir, "alice@example.test"), timeout=30)
    assert b"Subject: local" in copy
    assert tarpit.open_connections() == 1


def test_an_attempt_ends_within_attempt_timeout_and_is_deferred(
    server_factory: Callable[..., RunningServer], tarpit: Tarpit
) -> None:
    """The greeting may take 300 s (RFC 5321 4.5.3.2.1), but the whole attempt is bounded
    by ``[delivery] attempt_timeout``: the connection is closed, the recipient deferred."""
    server = server_factory(
        routed(tarpit.port, "[delivery]\nattempt_timeout = 1\n").replace(
            "retry = [1]", "retry = [3600]"
        )
    )
    send(server, "sender@remote.test", ["bob@example.test"], "Subject: slow\r\n\r\n")

    def deferred() -> str | None:
        messages = server.call(lambda: server.app.store.list())
        [rcpt] = messages[0].recipients
        return str(rcpt.last_reply) if rcpt.state.value == "deferred" else None

    reply = wait_for(deferred, timeout=30)
    assert isinstance(reply, str) and reply.startswith("451 4.4.1") and "timed out" in reply
    wait_for(lambda: tarpit.open_connections() == 0)  # we hung up
    assert tarpit.accepted == 1


def test_a_slow_domain_does_not_hold_up_the_other_domains_of_the_same_message(
    server_factory: Callable[..., RunningServer], tarpit: Tarpit, sink: SinkServer
) -> None:
    base = BASE_CONFIG.replace(
        "[aliases]\n", '[aliases]\n"pair@example.test" = ["x@elsewhere.test", "y@other.test"]\n'
    )
    server = server_factory(
        f"""
[routes]
"elsewhere.test" = "127.0.0.1:{tarpit.port}"
"other.test" = "127.0.0.1:{sink.port}"
""",
        base=base,
    )
    send(server, "sender@remote.test", ["pair@example.test"], "Subject: two\r\n\r\nb\r\n")
    [message] = sink.wait_for_messages(1, timeout=30)
    assert [str(r) for r in message.recipients] == ["y@other.test"]
    assert tarpit.open_connections() == 1  # x's delivery still waits for its greeting
