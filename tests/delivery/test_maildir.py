"""Maildir delivery against real directories: tmp -> fsync -> rename into new/."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest

from mailwright.delivery.maildir import deliver_to_maildir, maildir_unique_name
from mailwright.errors import StorageError

PREFIX = b"Return-Path: <sender@example.test>\r\nDelivered-To: alice@example.test\r\n"


class RecordingBody(io.BytesIO):
    """A body that remembers how much each read asked for."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.requests: list[int] = []

    def read(self, size: int | None = -1) -> bytes:
        self.requests.append(-1 if size is None else size)
        return super().read(size)


class FailingBody(io.BytesIO):
    """A body whose storage fails half-way, like a disk error under the queue."""

    def read(self, size: int | None = -1) -> bytes:
        if self.tell() > 0:
            raise OSError(5, "Input/output error")
        return super().read(size)


def test_message_appears_in_new_with_prefix_and_exact_body_and_tmp_is_empty(
    tmp_path: Path,
) -> None:
    mailbox = tmp_path / "mail" / "example.test" / "alice"
    body = b"Subject: hi\r\n\r\n" + os.urandom(10_000)

    path = deliver_to_maildir(mailbox, io.BytesIO(body), prefix=PREFIX, hostname="mx.test")

    assert path.parent == mailbox / "new"
    assert path.read_bytes() == PREFIX + body
    assert list((mailbox / "tmp").iterdir()) == []
    assert (mailbox / "cur").is_dir()
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)


def test_body_is_copied_in_bounded_chunks_never_read_whole(tmp_path: Path) -> None:
    body = RecordingBody(os.urandom(1_000_000))

    path = deliver_to_maildir(tmp_path, body, prefix=b"", hostname="mx.test", chunk_size=4096)

    assert path.read_bytes() == body.getvalue()
    assert body.requests and all(0 < size <= 4096 for size in body.requests)


def test_each_delivery_gets_its_own_file(tmp_path: Path) -> None:
    paths = {
        deliver_to_maildir(tmp_path, io.BytesIO(b"%d" % n), prefix=b"", hostname="mx.test")
        for n in range(50)
    }
    assert len(paths) == 50
    assert sorted(p.read_bytes() for p in paths) == sorted(b"%d" % n for n in range(50))


def test_file_name_follows_the_maildir_spec_and_escapes_slash_and_colon() -> None:
    name = maildir_unique_name(
        "mx/a:b", now=1_700_000_000.25, pid=42, random_hex="00ff", sequence=7
    )
    assert name == "1700000000.M250000P42Q7R00ff.mx\\057a\\072b"
    assert ":" not in name and "/" not in name
    plain = maildir_unique_name("mx", now=1.0, pid=1, random_hex="ab")
    assert re.fullmatch(r"1\.M0P1Rab\.mx", plain)


def test_failed_body_read_leaves_no_file_and_raises_storage_error(tmp_path: Path) -> None:
    body = FailingBody(b"x" * 100_000)

    with pytest.raises(StorageError):
        deliver_to_maildir(tmp_path, body, prefix=PREFIX, hostname="mx.test", chunk_size=1000)

    assert list((tmp_path / "tmp").iterdir()) == []
    assert list((tmp_path / "new").iterdir()) == []


def test_mailbox_that_cannot_be_created_raises_storage_error(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where a directory should be")

    with pytest.raises(StorageError):
        deliver_to_maildir(
            tmp_path / "blocker" / "alice", io.BytesIO(b"x"), prefix=b"", hostname="mx.test"
        )


def test_missing_new_directory_is_created_again(tmp_path: Path) -> None:
    deliver_to_maildir(tmp_path, io.BytesIO(b"first"), prefix=b"", hostname="mx.test")
    for leftover in (tmp_path / "new").iterdir():
        leftover.unlink()
    (tmp_path / "new").rmdir()

    path = deliver_to_maildir(tmp_path, io.BytesIO(b"second"), prefix=b"", hostname="mx.test")

    assert path.read_bytes() == b"second"


def test_maildir_writes_run_in_a_few_threads_below_receiving_priority(
    server_factory,
) -> None:
    """[delivery] local_concurrency threads write Maildirs, niced so receiving goes first."""
    import smtplib
    import threading

    from mailwright.delivery.local import MAILDIR_THREAD_NICENESS
    from tests.helpers import maildir_messages, wait_for

    before = set(threading.enumerate())  # writers of other tests' servers are not ours
    server = server_factory("[delivery]\nlocal_concurrency = 2\n")
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    with smtplib.SMTP(server.host, server.port, timeout=10) as client:
        for n in range(6):
            client.sendmail("x@example.test", ["team@example.test"], f"Subject: {n}\r\n\r\nhi\r\n")
    data = server.config.data_dir
    wait_for(lambda: len(maildir_messages(data, "alice@example.test")) == 6)
    wait_for(lambda: len(maildir_messages(data, "dave@example.test")) == 6)
    writers = [
        t for t in set(threading.enumerate()) - before if t.name.startswith("mailwright-maildir")
    ]
    assert 1 <= len(writers) <= 2
    for thread in writers:
        niceness = os.getpriority(os.PRIO_PROCESS, thread.native_id)
        assert niceness == min(base + MAILDIR_THREAD_NICENESS, 19)
