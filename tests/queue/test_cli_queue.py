"""``mailwright queue`` as a process, on a queue made by a real store (issue 12, items 10 and 12)."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailwright.model import Address
from mailwright.protocol.reply import Reply
from mailwright.queue.base import RecipientResult, RecipientState, Target
from mailwright.queue.sqlite import SqliteQueueStore

ALICE = Address("alice", "example.test")
BOB = Address("bob", "elsewhere.test")


def make_queue(data_dir: Path, body: bytes, sender: Address, reply: str) -> str:
    """A queue holding one message whose remote recipient was deferred with ``reply``."""

    async def build() -> str:
        store = SqliteQueueStore(data_dir)
        await store.open()
        try:
            spool = store.new_spool()
            spool.write(body)
            queue_id = await store.enqueue(sender, [Target(BOB, BOB, False)], spool)
            now = time.time()
            await store.claim_due(now + 1, 10)
            await store.record_result(
                queue_id,
                0,
                RecipientResult(RecipientState.DEFERRED, Reply.parse(reply), now + 3600),
            )
            return queue_id
        finally:
            await store.close()

    return asyncio.run(build())


def write_config(folder: Path, data_dir: Path) -> Path:
    config = folder / "mailwright.toml"
    config.write_text(f'hostname = "mx.example.test"\ndata_dir = "{data_dir}"\n')
    return config


def queue_cli(config: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "mailwright", "queue", *args, "--config", str(config)],
        capture_output=True,
        timeout=60,
        check=False,
    )


# ---------------------------------------------------------------- terminal escapes (item 12)

#: ESC sequences that clear the screen and set the window title, and line breakers.
HOSTILE = "\x1b[2J\x1b]0;owned\x07\x00\x0b\x85\u2028\u202e"


def test_queue_show_and_list_print_no_control_characters_from_the_network(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    body = f"Subject: hello{HOSTILE}\r\nX-Other: two\r\n\r\nbody{HOSTILE}\r\n".encode()
    queue_id = make_queue(
        data_dir,
        body,
        sender=Address("a\x85\u2028b", "remote.test"),
        reply=f"451 4.3.0 try later{HOSTILE}",
    )
    config = write_config(tmp_path, data_dir)

    shown = queue_cli(config, "show", queue_id)
    listed = queue_cli(config, "list")
    for run in (shown, listed):
        assert run.returncode == 0, run.stderr
        out = run.stdout.decode("utf-8")
        assert all(line.isprintable() for line in out.split("\n")), out
    out = shown.stdout.decode("utf-8")
    lines = out.split("\n")
    assert f"{queue_id}  " in lines[0]
    assert "from <a\\x85\\u2028b@remote.test>" in lines[0]
    assert (
        "              last reply: 451 4.3.0 try later"
        "\\x1b[2J\\x1b]0;owned\\x07\\x00\\x0b\\x85\\u2028\\u202e"
    ) in lines
    assert "Subject: hello\\x1b[2J\\x1b]0;owned\\x07\\x00\\x0b\\x85\\u2028\\u202e" in lines
    assert lines[lines.index("X-Other: two") - 1].startswith("Subject: hello")
    assert "last reply: 451 4.3.0 try later\\x1b[2J" in listed.stdout.decode("utf-8")


# ---------------------------------------------------------------- sudo mailwright queue (item 10)

#: An unprivileged uid and gid that exist on Debian and most other systems (nobody).
NOBODY = 65534
LOCK_FILES = ("queue.write-lock", "queue.lock", "queue.acceptors")
SECRET = b"root's secret\n"


@pytest.fixture
def service_dir() -> Iterator[Path]:
    """A folder the service account (nobody) can reach, unlike pytest's tmp_path (0700 root).

    Holds the config and root's files (root's, mode 0600); data/ is made nobody's by the test.
    """
    folder = Path(tempfile.mkdtemp(prefix="mailwright-service-"))
    folder.chmod(0o711)
    yield folder
    shutil.rmtree(folder)


def give_to_nobody(top: Path) -> None:
    os.chown(top, NOBODY, NOBODY)
    for folder, directories, files in os.walk(top):
        for name in directories + files:
            os.chown(os.path.join(folder, name), NOBODY, NOBODY, follow_symlinks=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (sudo mailwright queue)")
def test_as_root_links_planted_by_the_service_account_are_neither_followed_nor_chowned(
    service_dir: Path,
) -> None:
    """The service account points every lock file at a file of root's; root runs
    ``mailwright queue list``.  Nothing of root's may change hands or content."""
    data_dir = service_dir / "data"
    make_queue(data_dir, b"Subject: x\r\n\r\nbody\r\n", Address("a", "remote.test"), "451 later")
    targets = []
    for name in LOCK_FILES:
        target = service_dir / f"{name}.target"
        target.write_bytes(SECRET)
        target.chmod(0o600)
        (data_dir / name).unlink()
        (data_dir / name).symlink_to(target)
        targets.append(target)
    give_to_nobody(data_dir)

    run = queue_cli(write_config(service_dir, data_dir), "list")

    for target in targets:
        info = target.stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 0, 0o600)
        assert target.read_bytes() == SECRET
    assert run.returncode != 0, run.stdout
    assert b"queue.write-lock: it is a symbolic link" in run.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (sudo mailwright queue)")
def test_as_root_the_command_works_as_the_owner_of_data_dir(service_dir: Path) -> None:
    """What it creates belongs to the owner (it ran as the owner), so the server can use it."""
    data_dir = service_dir / "data"
    queue_id = make_queue(
        data_dir, b"Subject: x\r\n\r\nbody\r\n", Address("a", "remote.test"), "451 later"
    )
    (data_dir / "queue.write-lock").unlink()
    give_to_nobody(data_dir)
    config = write_config(service_dir, data_dir)

    listed = queue_cli(config, "list")
    retried = queue_cli(config, "retry")

    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.decode().startswith(f"{queue_id}  ")
    assert retried.returncode == 0 and retried.stdout == b"1 recipient(s) due now\n"
    owners = {(p.name, os.lstat(p).st_uid, os.lstat(p).st_gid) for p in data_dir.iterdir()}
    assert owners == {(p.name, NOBODY, NOBODY) for p in data_dir.iterdir()}
    assert (data_dir / "queue.write-lock").exists()
