"""Write once through a real server: which messages are linked into their Maildir, and
that every copy arrives whole with its trace lines once (docs/queue-and-delivery.md)."""

from __future__ import annotations

import os
import re
import signal
import smtplib
from pathlib import Path

from tests.helpers import ServerProcess, wait_for

CONFIG = """
hostname = "mx.example.test"
data_dir = "data"
[smtp]
listen = ["127.0.0.1:0"]
[domains]
local = ["example.test"]
auto_mailbox = ["example.test"]
"""

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
