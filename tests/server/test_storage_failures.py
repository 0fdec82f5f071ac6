"""A disk that fills up while mail arrives: never a 250 for what was not kept (real tmpfs)."""

from __future__ import annotations

import os
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import (
    BASE_CONFIG,
    RawClient,
    RunningServer,
    maildir_messages,
    make_config,
    mounted_tmpfs,
    wait_for,
)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs: a real filesystem that really runs out of space."""
    with mounted_tmpfs(tmp_path / "disk", "3m") as disk:
        yield disk


def fill(disk: Path, leave: int) -> Path:
    """Write a file that leaves about ``leave`` bytes free."""
    stat = os.statvfs(disk)
    free = stat.f_bavail * stat.f_frsize
    filler = disk / "filler"
    with open(filler, "ab") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def server_on(disk: Path, tmp_path: Path) -> RunningServer:
    """A server whose data (queue and mailboxes) lives on ``disk``, with no free-space
    reserve: the disk is filled on purpose past any reserve."""
    base = BASE_CONFIG.replace('data_dir = "data"', f'data_dir = "{disk}"')
    return RunningServer(make_config(tmp_path, "[queue]\nmin_free_space = 0", base=base))


def test_disk_full_gets_452_and_the_server_goes_on(small_disk: Path, tmp_path: Path) -> None:
    server = server_on(small_disk, tmp_path)
    try:
        with smtplib.SMTP(server.host, server.port, timeout=10) as s:
            assert (
                s.sendmail("a@remote.test", ["alice@example.test"], "Subject: before\r\n\r\nok\r\n")
                == {}
            )
        wait_for(lambda: maildir_messages(small_disk, "alice@example.test"))
        filler = fill(small_disk, leave=64 * 1024)
        big = "Subject: too big for the disk\r\n\r\n" + ("x" * 998 + "\r\n") * 600  # 600 KB
        with smtplib.SMTP(server.host, server.port, timeout=10) as s:
            s.ehlo()
            s.mail("a@remote.test")
            s.rcpt("alice@example.test")
            code, text = s.data(big)
            assert code in (451, 452), (code, text)
            assert text.startswith((b"4.3.1", b"4.3.0"))
            assert s.noop()[0] == 250  # the session goes on
        # nothing of the refused message is visible anywhere
        messages = server.call(lambda: server.app.store.list())
        assert all(m.size < 100_000 for m in messages)
        new = small_disk / "mailboxes" / "example.test" / "alice" / "new"
        assert all(b"too big for the disk" not in p.read_bytes() for p in new.iterdir())
        # space comes back: the same message is accepted and delivered whole
        filler.unlink()
        with smtplib.SMTP(server.host, server.port, timeout=10) as s:
            assert s.sendmail("a@remote.test", ["alice@example.test"], big) == {}

        def delivered_whole() -> bool:
            return any(
                m.endswith(big[-1000:].encode())
                for m in maildir_messages(small_disk, "alice@example.test")
            )

        wait_for(delivered_whole)
    finally:
        server.stop()


def test_maildir_full_defers_delivery_without_half_files(small_disk: Path, tmp_path: Path) -> None:
    """The queue keeps the message when the Maildir cannot take it; it arrives once space is back."""
    # queue on the big disk, mailboxes on the small one: only delivery fails
    config = make_config(tmp_path)
    server = RunningServer(config)
    try:
        mailboxes = config.data_dir / "mailboxes"
        mailboxes.mkdir(parents=True, exist_ok=True)
        target = mailboxes / "example.test"
        target.symlink_to(small_disk, target_is_directory=True)
        filler = fill(small_disk, leave=16 * 1024)
        body = "Subject: waits\r\n\r\n" + ("y" * 998 + "\r\n") * 100  # 100 KB
        with smtplib.SMTP(server.host, server.port, timeout=10) as s:
            assert s.sendmail("a@remote.test", ["alice@example.test"], body) == {}

        def deferred() -> bool:
            msgs = server.call(lambda: server.app.store.list())
            return bool(msgs) and msgs[0].recipients[0].state.value == "deferred"

        wait_for(deferred)
        assert list((small_disk / "alice" / "new").iterdir()) == []
        assert list((small_disk / "alice" / "tmp").iterdir()) == []
        filler.unlink()
        server.call(lambda: server.app.store.retry_now())
        server.loop.call_soon_threadsafe(server.app.worker.wake)
        wait_for(lambda: maildir_messages(config.data_dir, "alice@example.test"))
        assert maildir_messages(config.data_dir, "alice@example.test")[0].endswith(
            body[-500:].encode()
        )
    finally:
        server.stop()


def test_disk_full_in_bdat_chunks_gets_452_and_the_session_goes_on(
    small_disk: Path, tmp_path: Path
) -> None:
    """The same as after DATA: the message's final reply (after BDAT LAST) is the refusal."""
    server = server_on(small_disk, tmp_path)
    try:
        filler = fill(small_disk, leave=64 * 1024)
        chunk = ("z" * 998 + "\r\n").encode() * 100  # 100 KB a chunk, 600 KB in all
        client = RawClient(server.host, server.port)
        client.read_reply()
        client.send(
            b"EHLO c.example\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.test>\r\n"
            + (b"BDAT %d\r\n%s" % (len(chunk), chunk)) * 5
            + b"BDAT %d LAST\r\n%s" % (len(chunk), chunk)
            + b"NOOP\r\n"
        )
        replies = client.replies(10)
        assert replies[3:8] == ["250 2.0.0 100000 octets received"] * 5
        assert replies[8][:9] in ("452 4.3.1", "451 4.3.0"), replies[8]
        assert replies[9] == "250 2.0.0 Ok"  # the session goes on
        client.close()
        assert all(m.size < 100_000 for m in server.call(lambda: server.app.store.list()))
        filler.unlink()
    finally:
        server.stop()
