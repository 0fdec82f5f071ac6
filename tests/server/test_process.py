"""``mailwright serve`` as a process: configuration errors, signals, and kill -9 under load."""

from __future__ import annotations

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
