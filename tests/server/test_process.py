"""``mailwright serve`` as a process: configuration errors, signals, kill -9 under load, and
which messages are written once (linked into their Maildir, docs/queue-and-delivery.md)."""

from __future__ import annotations

import os
import re
import signal
import smtplib
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.helpers import ServerProcess, maildir_messages, wait_for

CONFIG = """
hostname = "mx.example.test"
data_dir = "data"
[smtp]
listen = ["127.0.0.1:0"]
[domains]
local = ["example.test"]
auto_mailbox = ["example.test"]
"""


def write_config(tmp_path: Path, text: str = CONFIG) -> Path:
    path = tmp_path / "mailwright.toml"
    path.write_text(text)
    return path


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailwright", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_bad_config_stops_startup_with_one_line_and_exit_2(tmp_path: Path) -> None:
    path = write_config(tmp_path, CONFIG + "\n[smtp.extra]\n")
    path.write_text(
        CONFIG.replace('listen = ["127.0.0.1:0"]', 'listen = ["127.0.0.1:0"]\nmax_mesage_size = 10')
    )
    result = run_cli("serve", "--config", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "smtp.max_mesage_size" in lines[0]
    check = run_cli("check-config", str(path))
    assert check.returncode == 2 and "smtp.max_mesage_size" in check.stderr


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    result = run_cli("check-config", str(write_config(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "example.test" in result.stdout


def test_unreadable_config_file_is_named(tmp_path: Path) -> None:
    result = run_cli("serve", "--config", str(tmp_path / "missing.toml"))
    assert result.returncode == 2
    assert "missing.toml" in result.stderr


@pytest.mark.parametrize("write_once", [True, False], ids=["linked", "copied"])
def test_kill_9_under_load_loses_no_acknowledged_message(tmp_path: Path, write_once: bool) -> None:
    """Linked: every message (about 1 KiB) is stored as its Maildir copy and linked there;
    copied: kept in the database and copied at delivery (below ``write_once_from``)."""
    queue = "[queue]\nwrite_once_from = 0\n" if write_once else ""
    config = write_config(tmp_path, CONFIG + queue)
    server = ServerProcess(config)
    acknowledged: list[tuple[str, str]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            marker = f"c{n}m{i}"
            body = f"Subject: {marker}\r\n\r\n" + (f"{marker} line\r\n" * 40)
            try:
                with smtplib.SMTP(server.host, server.port, timeout=5) as s:
                    s.sendmail("load@remote.test", [f"user{n}@example.test"], body)
            except (OSError, smtplib.SMTPException):
                return
            with lock:
                acknowledged.append((f"user{n}@example.test", marker))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acknowledged) >= 40, timeout=60)
    server.proc.kill()  # SIGKILL: no chance to flush anything
    server.wait()
    stop.set()
    for t in threads:
        t.join(10)
    assert acknowledged

    server = ServerProcess(config)
    try:

        def all_delivered() -> bool:
            for address, marker in acknowledged:
                bodies = maildir_messages(tmp_path / "data", address)
                if not any(f"Subject: {marker}\r\n".encode() in b for b in bodies):
                    return False
            return True

        wait_for(all_delivered, timeout=60)
        # every message in new/ is whole: ends with its 40th line; and, linked, each is
        # there once (a delivery repeated after the kill finds its own link in new/)
        markers: list[bytes] = []
        for user_dir in (tmp_path / "data" / "mailboxes" / "example.test").iterdir():
            for path in (user_dir / "new").iterdir():
                data = path.read_bytes()
                marker = data.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0]
                assert data.endswith(marker + b" line\r\n") and data.count(marker + b" line") == 40
                markers.append(marker)
                # linked: the queue's own file under the name its queue id gives
                assert (re.match(r"\d+\.M\d+Q", path.name) is not None) == write_once
        assert len(markers) == len(set(markers)) or not write_once
    finally:
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait() == 0


def test_bad_dkim_key_stops_startup_and_check_config_with_one_line(tmp_path: Path) -> None:
    key = tmp_path / "example.test.s1.key"
    key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    key.chmod(0o600)
    path = write_config(
        tmp_path,
        CONFIG
        + '\n[[dkim.keys]]\ndomain = "example.test"\nselector = "s1"\nkey = "example.test.s1.key"\n',
    )
    for args in (("serve", "--config", str(path)), ("check-config", str(path))):
        result = run_cli(*args)
        assert result.returncode == 2
        [line] = result.stderr.strip().splitlines()
        assert "dkim.keys[0].key" in line and str(key) in line


def test_arc_seal_without_srs_stops_startup_and_check_config_with_one_line(tmp_path: Path) -> None:
    path = write_config(tmp_path, CONFIG + "\n[arc]\nseal = true\n")
    for args in (("serve", "--config", str(path)), ("check-config", str(path))):
        result = run_cli(*args)
        assert result.returncode == 2
        [line] = result.stderr.strip().splitlines()
        assert "arc.seal" in line and "needs SRS" in line


# ---------------------------------------------------------------- write once

#: A Maildir name made from a queue id: the queue's own file, linked (maildir.linked_name).
LINKED = re.compile(r"\d+\.M\d+Q")


def new_files(data_dir: Path, local: str) -> list[Path]:
    new = data_dir / "mailboxes" / "example.test" / local / "new"
    return sorted(new.iterdir()) if new.is_dir() else []


def message(marker: str, size: int) -> str:
    line = f"{marker} {'x' * 70}\r\n"
    return f"Subject: {marker}\r\n\r\n" + line * (size // len(line) + 1)


def test_from_write_once_from_up_a_message_for_one_mailbox_is_linked_and_others_copied(
    tmp_path: Path,
) -> None:
    """Default ``write_once_from`` (64 KiB): a small message is kept in the database and
    copied; a larger one is stored as its Maildir file and linked, one over the memory
    limit (1 MiB, spooled to a file while received) too; one for two mailboxes is
    copied into each.  Each copy is whole, with Return-Path and Delivered-To once."""
    config = tmp_path / "mailwright.toml"
    config.write_text(CONFIG)
    data = tmp_path / "data"
    sent = {
        "small": (["alice@example.test"], message("small", 10_000)),
        "large": (["alice@example.test"], message("large", 100_000)),
        "huge": (["alice@example.test"], message("huge", 1_500_000)),
        "shared": (["bob@example.test", "carol@example.test"], message("shared", 100_000)),
    }
    server = ServerProcess(config)
    try:
        with smtplib.SMTP(server.host, server.port, timeout=30) as client:
            for recipients, text in sent.values():
                client.sendmail("sender@remote.test", recipients, text)
        wait_for(lambda: sum(len(new_files(data, u)) for u in ("alice", "bob", "carol")) == 5)
        spool = data / "spool"
        wait_for(lambda: not [n for n in os.listdir(spool) if not n.startswith(("ready.", "tmp"))])
    finally:
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait() == 0
    # A clean stop: the files made ahead are gone, and the next start need not check
    # the local copies written since (recovery.py).
    assert [n for n in os.listdir(data / "spool") if n != "tmp"] == []
    assert (data / "queue.closed-cleanly").exists()

    linked: dict[str, bool] = {}
    for user in ("alice", "bob", "carol"):
        for path in new_files(data, user):
            content = path.read_bytes()
            marker = content.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0].decode()
            recipients, text = sent[marker]
            assert content.startswith(
                f"Return-Path: <sender@remote.test>\r\nDelivered-To: {user}@example.test\r\n".encode()
            )
            assert content.count(b"Return-Path:") == 1 and content.count(b"Delivered-To:") == 1
            assert content.endswith(text.encode())
            assert path.stat().st_nlink == 1
            linked[f"{marker} {user}"] = LINKED.match(path.name) is not None
    assert linked == {
        "small alice": False,
        "large alice": True,
        "huge alice": True,
        "shared bob": False,
        "shared carol": False,
    }
