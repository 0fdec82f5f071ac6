"""``mailwright queue`` as a process, on a queue made by a real store (issue 12, items 10 and 12)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from mailwright.model import Address
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
                queue_id, 0, RecipientResult(RecipientState.DEFERRED, reply, now + 3600)
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
