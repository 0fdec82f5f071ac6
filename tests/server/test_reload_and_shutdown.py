"""Reload (SIGHUP, ``mailwright reload``) and shutdown (SIGTERM) of ``mailwright serve``
as a real process.

Every test sends real signals to a real server and talks SMTP to it over loopback,
with a real sink as the next hop.  Nothing waits on a pause: "the reload happened"
is the server's own log line, and "the shutdown has begun" an idle session's 421.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailwright.server.pidfile import PID_FILE_NAME
from tests.helpers import RawClient, ServerProcess, maildir_messages, wait_for
from tests.sink import SinkServer

CONFIG = """
hostname = "mx.example.test"
data_dir = "data"
[smtp]
listen = ["127.0.0.1:0"]
{smtp}
[domains]
local = ["example.test"]
[mailboxes]
"alice@example.test" = {{}}
{mailboxes}
{extra}
"""

SHUTTING_DOWN = b"421 4.3.2 Service shutting down; try again later\r\n"

STARTED: list[ServerProcess] = []


@pytest.fixture(autouse=True)
def _no_server_left() -> Iterator[None]:
    yield
    for server in STARTED:
        if server.proc.poll() is None:
            server.kill()
    STARTED.clear()


def write_config(tmp_path: Path, *, smtp: str = "", mailboxes: str = "", extra: str = "") -> Path:
    path = tmp_path / "mailwright.toml"
    path.write_text(CONFIG.format(smtp=smtp, mailboxes=mailboxes, extra=extra))
    return path


def start(tmp_path: Path, **config: str) -> ServerProcess:
    server = ServerProcess(write_config(tmp_path, **config))
    STARTED.append(server)
    return server


def stop(server: ServerProcess) -> None:
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait() == 0


def reload_and_wait(server: ServerProcess, event: str = "event=reloaded") -> None:
    """SIGHUP, then wait for one more ``event`` line than there was before."""
    before = server.log().count(event)
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: server.log().count(event) > before)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailwright", *args], capture_output=True, text=True, timeout=60
    )


def transaction(client: RawClient, recipient: str, subject: str) -> list[str]:
    """One pipelined transaction on an open session: the MAIL, RCPT and DATA replies,
    then (when DATA got 354) the reply to the body."""
    client.send(f"MAIL FROM:<someone@remote.test>\r\nRCPT TO:<{recipient}>\r\nDATA\r\n".encode())
    answers = client.replies(3)
    if answers[2].startswith("354"):
        client.send(f"Subject: {subject}\r\n\r\nbody\r\n.\r\n".encode())
        answers.append(client.read_reply())
    return answers


def greet(server: ServerProcess) -> RawClient:
    client = RawClient(server.host, server.port)
    assert client.read_reply().startswith("220")
    client.send(b"EHLO client.example\r\n")
    assert client.read_reply().startswith("250")
    return client


def test_a_mailbox_added_by_reload_takes_mail_in_the_next_transaction_of_an_open_session(
    tmp_path: Path,
) -> None:
    server = start(tmp_path)
    client = greet(server)
    # A transaction begun before the reload, left open across it.
    client.send(b"MAIL FROM:<someone@remote.test>\r\nRCPT TO:<alice@example.test>\r\n")
    assert [r[:3] for r in client.replies(2)] == ["250", "250"]

    write_config(tmp_path, mailboxes='"bob@example.test" = {}')
    reload_and_wait(server)

    # The open transaction keeps what it started with (decided at MAIL): bob is unknown.
    client.send(b"RCPT TO:<bob@example.test>\r\nDATA\r\n")
    unknown, data = client.replies(2)
    assert unknown.startswith("550 5.1.1") and data.startswith("354")
    client.send(b"Subject: before\r\n\r\nbody\r\n.\r\n")
    assert client.read_reply().startswith("250 ")
    # The same connection, its next transaction: the new mailbox takes mail.
    answers = transaction(client, "bob@example.test", "after")
    assert [a[:4] for a in answers] == ["250 ", "250 ", "354 ", "250 "]
    client.send(b"QUIT\r\n")
    assert client.read_reply().startswith("221")
    client.close()
    bodies = wait_for(lambda: maildir_messages(tmp_path / "data", "bob@example.test"))
    assert b"Subject: after" in bodies[0]  # type: ignore[index]
    assert "result=quit" in server.log()  # the session ended by its QUIT, not dropped
    stop(server)


def test_a_reload_that_does_not_check_keeps_the_old_configuration(tmp_path: Path) -> None:
    server = start(tmp_path)
    path = tmp_path / "mailwright.toml"
    good = path.read_text()
    # Each key fine on its own; together they break a rule (an alias to nobody here).
    path.write_text(
        good.replace(
            "[mailboxes]", '[aliases]\n"team@example.test" = ["nobody@example.test"]\n[mailboxes]'
        )
        + '"bob@example.test" = {}\n'
    )
    reload_and_wait(server, "event=reload-failed")
    [line] = [x for x in server.log().splitlines() if "reload-failed" in x]
    assert 'key="aliases.\\"team@example.test\\""' in line and "nobody@example.test" in line
    assert "event=reloaded" not in server.log()

    # The old configuration still runs: alice takes mail, bob (only in the bad file) does not.
    with smtplib.SMTP(server.host, server.port, timeout=30) as client:
        client.sendmail("someone@remote.test", ["alice@example.test"], b"Subject: still\r\n\r\n")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("someone@remote.test", ["bob@example.test"], b"Subject: no\r\n\r\n")
    wait_for(lambda: maildir_messages(tmp_path / "data", "alice@example.test"))

    path.write_text(good)  # fixed: the next reload goes through
    reload_and_wait(server)
    stop(server)


def test_a_changed_listener_is_named_once_as_needing_a_restart_and_ignored(
    tmp_path: Path,
) -> None:
    server = start(tmp_path)
    path = tmp_path / "mailwright.toml"
    path.write_text(
        path.read_text().replace('listen = ["127.0.0.1:0"]', 'listen = ["127.0.0.1:1"]')
        + '"bob@example.test" = {}\n'
    )
    reload_and_wait(server)
    [line] = [x for x in server.log().splitlines() if "reload-needs-restart" in x]
    assert "keys=smtp.listen" in line
    # Still on its port, and the rest of the file applied: bob takes mail.
    with smtplib.SMTP(server.host, server.port, timeout=30) as client:
        client.sendmail("someone@remote.test", ["bob@example.test"], b"Subject: hi\r\n\r\n")
    wait_for(lambda: maildir_messages(tmp_path / "data", "bob@example.test"))
    stop(server)


def test_mailwright_reload_signals_the_server_named_by_its_pid_file(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    pid_file = tmp_path / "data" / PID_FILE_NAME
    result = run_cli("reload", "--config", str(path))
    assert result.returncode == 1
    assert "no server is running" in result.stderr and str(pid_file) in result.stderr

    server = start(tmp_path)
    # Written once serve handles SIGHUP, just after the listener is up: wait for it.
    wait_for(pid_file.exists)
    assert pid_file.read_text().strip() == str(server.proc.pid)
    write_config(tmp_path, mailboxes='"bob@example.test" = {}')
    result = run_cli("reload", "--config", str(path))
    assert result.returncode == 0, result.stderr
    wait_for(lambda: "event=reloaded" in server.log())
    with smtplib.SMTP(server.host, server.port, timeout=30) as client:
        client.sendmail("someone@remote.test", ["bob@example.test"], b"Subject: hi\r\n\r\n")

    # A file that does not check is named here, and the server is left alone.
    path.write_text(path.read_text() + "[smtp.nonsense]\n")
    result = run_cli("reload", "--config", str(path))
    assert result.returncode == 2 and "smtp.nonsense" in result.stderr
    assert "event=reload-failed" not in server.log()

    stop(server)
    assert not pid_file.exists()  # removed at a clean exit
    write_config(tmp_path)
    assert run_cli("reload", "--config", str(path)).returncode == 1


def test_a_pid_file_left_by_a_crash_names_no_server(tmp_path: Path) -> None:
    """A pid taken since by another program is never signalled, nor one that is gone."""
    path = write_config(tmp_path)
    (tmp_path / "data").mkdir()
    pid_file = tmp_path / "data" / PID_FILE_NAME
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        pid_file.write_text(f"{stranger.pid}\n")
        result = run_cli("reload", "--config", str(path))
        if Path("/proc/self/cmdline").exists():
            assert result.returncode == 1 and "is not mailwright" in result.stderr
            assert stranger.poll() is None  # not signalled: SIGHUP would have ended it
    finally:
        stranger.kill()
        stranger.wait()
    result = run_cli("reload", "--config", str(path))
    assert result.returncode == 1 and f"process {stranger.pid} of" in result.stderr


def test_reload_reaches_every_process(tmp_path: Path) -> None:
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs Linux /proc to tell the processes apart")
    server = start(tmp_path, smtp="processes = 2")
    wait_for(lambda: server.log().count("event=started") == 3)  # the server, 2 acceptors
    started = set(re.findall(r"event=started role=(\w+) pid=(\d+)", server.log()))
    supervisor = int(re.findall(r"event=processes count=2 supervisor=(\d+)", server.log())[0])
    assert (tmp_path / "data" / PID_FILE_NAME).read_text().strip() == str(supervisor)

    write_config(tmp_path, smtp="processes = 2", mailboxes='"bob@example.test" = {}')
    server.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: server.log().count("event=reloaded") == 3)
    reloaded = set(re.findall(r"event=reloaded role=(\w+) pid=(\d+)", server.log()))
    assert reloaded == started
    # Every acceptor takes mail for bob now, whichever gets the connection.
    for n in range(6):
        with smtplib.SMTP(server.host, server.port, timeout=30) as client:
            client.sendmail(
                "someone@remote.test", ["bob@example.test"], f"Subject: {n}\r\n\r\n".encode()
            )
    wait_for(lambda: len(maildir_messages(tmp_path / "data", "bob@example.test")) == 6)
    stop(server)


# ---------------------------------------------------------------- shutdown


def in_data(server: ServerProcess, subject: str) -> RawClient:
    """A session whose client has sent half a message body."""
    client = greet(server)
    client.send(b"MAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
    assert client.replies(3)[-1].startswith("354")
    client.send(f"Subject: {subject}\r\n\r\nfirst half\r\n".encode())
    return client


def test_sigterm_lets_a_body_being_received_finish_and_says_421_to_idle_sessions(
    tmp_path: Path,
) -> None:
    server = start(tmp_path)
    waiting = greet(server)
    busy = in_data(server, "in flight")
    server.proc.send_signal(signal.SIGTERM)
    assert waiting.read_until_closed() == SHUTTING_DOWN  # the shutdown has begun
    busy.send(b"second half\r\n.\r\n")
    assert busy.read_reply().startswith("250 2.0.0 Ok: queued as ")
    assert busy.read_until_closed() == SHUTTING_DOWN  # then it is closed too
    assert server.wait() == 0
    with pytest.raises(OSError):  # the listener is gone
        RawClient(server.host, server.port, timeout=2).read_reply()
    # The message acknowledged during the shutdown is on disk: delivered at the next start.
    server = start(tmp_path)
    bodies = wait_for(lambda: maildir_messages(tmp_path / "data", "alice@example.test"))
    assert bodies[0].endswith(b"Subject: in flight\r\n\r\nfirst half\r\nsecond half\r\n")  # type: ignore[index]
    stop(server)


def test_sigterm_lets_a_message_between_its_bdat_chunks_finish(tmp_path: Path) -> None:
    """Between two BDAT chunks a message is half received, as in the middle of DATA: the
    client may send the rest within shutdown_timeout and get its 250."""
    server = start(tmp_path)
    waiting = greet(server)
    busy = greet(server)
    first = b"Subject: chunked\r\n\r\nfirst half\r\n"
    busy.send(b"MAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.test>\r\n")
    busy.send(b"BDAT %d\r\n%s" % (len(first), first))
    assert busy.replies(3)[-1] == f"250 2.0.0 {len(first)} octets received"
    server.proc.send_signal(signal.SIGTERM)
    assert waiting.read_until_closed() == SHUTTING_DOWN  # the shutdown has begun
    busy.send(b"BDAT 13 LAST\r\nsecond half\r\n")
    assert busy.read_reply().startswith("250 2.0.0 Ok: queued as ")
    assert busy.read_until_closed() == SHUTTING_DOWN
    assert server.wait() == 0
    server = start(tmp_path)
    bodies = wait_for(lambda: maildir_messages(tmp_path / "data", "alice@example.test"))
    assert bodies[0].endswith(first + b"second half\r\n")  # type: ignore[index]
    stop(server)


def test_a_body_unfinished_after_shutdown_timeout_gets_421_and_no_250(tmp_path: Path) -> None:
    server = start(tmp_path, smtp="shutdown_timeout = 0.5")
    busy = in_data(server, "cut")
    server.proc.send_signal(signal.SIGTERM)
    assert busy.read_until_closed() == SHUTTING_DOWN  # never a 250: the client keeps it
    assert server.wait() == 0
    assert "result=shutdown" in server.log()
    # Nothing of it was kept: a message sent after the restart arrives alone.
    server = start(tmp_path)
    with smtplib.SMTP(server.host, server.port, timeout=30) as client:
        client.sendmail("a@remote.test", ["alice@example.test"], b"Subject: later\r\n\r\nbody\r\n")
    bodies = wait_for(lambda: maildir_messages(tmp_path / "data", "alice@example.test"))
    assert len(bodies) == 1 and b"Subject: later" in bodies[0]  # type: ignore[arg-type,index]
    stop(server)


def test_a_commit_that_outlasts_the_shutdown_grace_gets_421_is_kept_and_logged(
    tmp_path: Path,
) -> None:
    """The queue's write lock is held from outside, so the commit of a finished body
    waits past shutdown_timeout: the client gets 421 (it keeps the message), the commit
    still lands when the lock is free, and after its "queued" line the log says that
    no 250 went out for it.  The next start delivers it (a duplicate at worst)."""
    server = start(tmp_path, smtp="shutdown_timeout = 0.5")
    lock = os.open(tmp_path / "data" / "queue.write-lock", os.O_RDWR)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        client = greet(server)
        client.send(b"MAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
        assert client.replies(3)[2].startswith("354")
        client.send(b"Subject: late\r\n\r\nbody\r\n.\r\n")
        wait_for(lambda: "event=connect" in server.log())
        server.proc.send_signal(signal.SIGTERM)
        assert client.read_until_closed() == SHUTTING_DOWN  # never a 250
    finally:
        os.close(lock)  # the commit goes on
    assert server.wait() == 0
    log = server.log()
    queued = re.search(r"event=queued id=(\S+)", log)
    assert queued is not None
    (line,) = [line for line in log.splitlines() if "event=unacknowledged" in line]
    assert queued.group(1) in line and "421 sent" in line
    server = start(tmp_path)
    bodies = wait_for(lambda: maildir_messages(tmp_path / "data", "alice@example.test"))
    assert len(bodies) == 1 and b"Subject: late" in bodies[0]  # type: ignore[arg-type,index]
    stop(server)


def test_sigterm_during_a_slow_delivery_loses_nothing(tmp_path: Path) -> None:
    """The attempt is cut after the end of its data: repeated after the restart."""
    sink = SinkServer()
    try:
        sink.end_of_data_delay = 120.0  # the next hop takes the body and never answers
        routes = (
            f'[routes]\n"remote.test" = "127.0.0.1:{sink.port}"\n'
            '[relay]\nnetworks = ["127.0.0.0/8"]\n'
        )
        server = start(tmp_path, smtp="shutdown_timeout = 0.5", extra=routes)
        with smtplib.SMTP(server.host, server.port, timeout=30) as client:
            client.sendmail("a@example.test", ["x@remote.test"], b"Subject: slow\r\n\r\nbody\r\n")
        sink.wait_for_messages(1, timeout=30)  # the body is there, its reply held back
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait() == 0
        assert "event=delivery-interrupted id=" in server.log()

        sink.end_of_data_delay = 0.0
        server = start(tmp_path, extra=routes)
        second = sink.wait_for_messages(2, timeout=30)[1]  # tried again, as SMTP allows
        assert second.body.endswith(b"Subject: slow\r\n\r\nbody\r\n")
        assert second.reply is not None and second.reply.code == 250
        stop(server)
    finally:
        sink.stop()
