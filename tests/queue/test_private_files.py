"""What the queue opens in data_dir, and the modes it creates (issue 12, items 10 and 11).

Whoever owns data_dir can put a symbolic link, a FIFO or another file at any
name in it; the store must refuse them rather than follow them.  Real files in
tmp_path, real stores; the tests about another owner need root.
"""

from __future__ import annotations

import asyncio
import os
import smtplib
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from mailwright.errors import StorageError
from mailwright.model import Address
from mailwright.queue.base import Target
from mailwright.queue.sqlite import SqliteQueueStore, StoreRole
from tests.helpers import RunningServer, maildir_messages, wait_for

ALICE = Address("alice", "example.test")
#: An unprivileged uid and gid that exist on Debian and most other systems (nobody).
NOBODY = 65534
SECRET = b"root's secret\n"


async def open_and_close(data_dir: Path, role: StoreRole = "server") -> None:
    store = SqliteQueueStore(data_dir, role=role)
    await store.open()
    await store.close()


async def enqueue_spooled(data_dir: Path, body: bytes) -> str:
    """A message whose body is a file in spool/ (memory limit 0)."""
    store = SqliteQueueStore(data_dir, memory_spool_limit=0)
    await store.open()
    try:
        spool = store.new_spool()
        spool.write(body)
        return await store.enqueue(ALICE, [Target(ALICE, ALICE, True)], spool)
    finally:
        await store.close()


def make_target(folder: Path) -> Path:
    """A private file outside data_dir that a planted link points to."""
    target = folder / "target"
    target.write_bytes(SECRET)
    target.chmod(0o600)
    return target


def assert_untouched(target: Path, uid: int) -> None:
    info = target.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (uid, 0o600)
    assert target.read_bytes() == SECRET


# ---------------------------------------------------------------- links and odd files (item 10)


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("queue.lock", "server"),
        ("queue.acceptors", "server"),
        ("queue.write-lock", "server"),
        ("queue.sqlite3", "server"),
        ("queue.acceptors", "acceptor"),
        ("queue.write-lock", "admin"),
        ("queue.sqlite3", "admin"),
    ],
)
def test_a_symbolic_link_in_data_dir_is_refused_not_followed(
    tmp_path: Path, name: str, role: StoreRole
) -> None:
    data_dir = tmp_path / "data"
    asyncio.run(open_and_close(data_dir))
    target = make_target(tmp_path)
    (data_dir / name).unlink()
    (data_dir / name).symlink_to(target)

    with pytest.raises(StorageError, match=f"refusing to open .*{name}: it is a symbolic link"):
        asyncio.run(open_and_close(data_dir, role))
    assert_untouched(target, os.geteuid())


def test_a_fifo_in_place_of_a_lock_file_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    asyncio.run(open_and_close(data_dir))
    (data_dir / "queue.write-lock").unlink()
    os.mkfifo(data_dir / "queue.write-lock")

    with pytest.raises(StorageError, match=r"queue\.write-lock: it is not a regular file"):
        asyncio.run(open_and_close(data_dir, "admin"))


def test_a_spool_file_replaced_by_a_link_is_not_read(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    queue_id = asyncio.run(enqueue_spooled(data_dir, b"Subject: x\r\n\r\nbody\r\n"))
    target = make_target(tmp_path)
    (data_dir / "spool" / queue_id).unlink()
    (data_dir / "spool" / queue_id).symlink_to(target)

    async def read() -> None:
        store = SqliteQueueStore(data_dir, role="admin")
        await store.open()
        try:
            with pytest.raises(StorageError, match="symbolic link"):
                async with store.read_body(queue_id):
                    pass
        finally:
            await store.close()

    asyncio.run(read())
    assert_untouched(target, os.geteuid())


# ---------------------------------------------------------------- root and another owner (item 10)


def chown_tree(top: Path, uid: int, gid: int) -> None:
    os.chown(top, uid, gid)
    for folder, directories, files in os.walk(top):
        for name in directories + files:
            os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a data_dir of another user)")
@pytest.mark.parametrize("role", ["server", "acceptor", "admin"])
def test_root_refuses_a_data_dir_that_belongs_to_another_user(
    tmp_path: Path, role: StoreRole
) -> None:
    """That user controls every name in it, SQLite's -wal and -shm included."""
    data_dir = tmp_path / "data"
    asyncio.run(open_and_close(data_dir))
    chown_tree(data_dir, NOBODY, NOBODY)
    before = sorted(os.listdir(data_dir))

    with pytest.raises(StorageError, match=f"as root: it belongs to uid {NOBODY}"):
        asyncio.run(open_and_close(data_dir, role))
    assert sorted(os.listdir(data_dir)) == before
    assert {os.lstat(data_dir / name).st_uid for name in before} == {NOBODY}


# ---------------------------------------------------------------- modes (item 11)


def test_data_dir_and_every_directory_in_it_are_created_private(
    server_factory: Callable[..., RunningServer],
) -> None:
    server = server_factory()
    with smtplib.SMTP(server.host, server.port, timeout=10) as client:
        client.sendmail("someone@remote.test", ["alice@example.test"], b"Subject: x\r\n\r\nhi\r\n")
    wait_for(lambda: maildir_messages(server.data_dir, "alice@example.test"))

    directories = [server.data_dir]
    for folder, names, _ in os.walk(server.data_dir):
        directories += [Path(folder, name) for name in names]
    assert len(directories) >= 8  # spool/, spool/tmp/, mailboxes/, the Maildir's tmp/ new/ cur/
    modes = {
        str(d.relative_to(server.data_dir)): stat.S_IMODE(d.stat().st_mode) for d in directories
    }
    assert modes == dict.fromkeys(modes, 0o700)
