"""The PostgreSQL queue's settings and commands: [queue] keys refused with one line,
``mailwright serve`` exiting 2 for a bad URL and 75 for a database it cannot reach
(never showing the password), and ``mailwright queue`` working the same on it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailwright.config import parse_config
from mailwright.errors import ConfigError
from mailwright.model import Address
from mailwright.protocol.reply import Reply
from mailwright.queue.base import RecipientResult, RecipientState, Target
from tests.peers import free_port
from tests.queue.postgresql import empty_queue, pg_database, pg_store  # noqa: F401 - fixture

BOB = Address("bob", "elsewhere.test")


def refusal(text: str, tmp_path: Path) -> str:
    with pytest.raises(ConfigError) as refused:
        parse_config(text, source="test", base_dir=tmp_path)
    return str(refused.value)


@pytest.mark.parametrize(
    ("queue", "words"),
    [
        ('backend = "postgresql"', 'queue.url: backend = "postgresql" needs url'),
        ('backend = "mysql"', "queue.backend: expected one of sqlite, postgresql"),
        ('url = "postgresql://mail@db/queue"', 'queue.url: only for backend = "postgresql"'),
        (
            'backend = "postgresql"\nurl = "postgresql://mail:s3cret@db/queue"',
            "must not hold the password: put it in password_file or PGPASSWORD",
        ),
        ('backend = "postgresql"\nurl = "mysql://db/queue"', "expected a postgresql://"),
        (
            'backend = "postgresql"\nurl = "postgresql://db:notaport/queue"',
            "not a valid PostgreSQL URL: port 'notaport'",
        ),
        (
            'backend = "postgresql"\nurl = "postgresql://db/queue?nosuchoption=1"',
            "not a valid PostgreSQL URL",
        ),
        ('node = "two words"', "queue.node: expected a name"),
    ],
)
def test_queue_settings_are_checked_when_loaded(queue: str, words: str, tmp_path: Path) -> None:
    problem = refusal(f"[queue]\n{queue}\n", tmp_path)
    assert words in problem
    assert "s3cret" not in problem


def test_mailboxes_dir_is_taken_from_the_configuration_folder(tmp_path: Path) -> None:
    config = parse_config(
        '[delivery]\nmailboxes_dir = "../shared/mail"\n', source="t", base_dir=tmp_path
    )
    assert config.mailboxes_dir == (tmp_path.parent / "shared" / "mail").resolve()
    default = parse_config("", source="t", base_dir=tmp_path)
    assert default.mailboxes_dir == default.data_dir / "mailboxes"


def serve(tmp_path: Path, queue: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "mailwright.toml"
    path.write_text(f'data_dir = "data"\n[smtp]\nlisten = ["127.0.0.1:0"]\n[queue]\n{queue}\n')
    return subprocess.run(
        [sys.executable, "-m", "mailwright", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_with_a_malformed_url_exits_2_with_one_line(tmp_path: Path) -> None:
    result = serve(tmp_path, 'backend = "postgresql"\nurl = "postgresql://db:notaport/q"')
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "queue.url" in lines[0]


def test_serve_without_a_reachable_database_exits_75_never_showing_the_password(
    tmp_path: Path,
) -> None:
    (tmp_path / "password").write_text("s3cret\n")
    port = free_port()
    result = serve(
        tmp_path,
        f'backend = "postgresql"\nurl = "postgresql://mail@127.0.0.1:{port}/queue"\n'
        'password_file = "password"',
    )
    assert result.returncode == 75  # EX_TEMPFAIL: a service manager tries again
    [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("mailwright:")]
    assert f"mail@127.0.0.1:{port}/queue" in line
    assert "s3cret" not in result.stderr


def test_mailwright_queue_lists_shows_holds_releases_retries_and_deletes_on_postgresql(
    pg_database: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    empty_queue(pg_database)

    async def build() -> str:
        store = pg_store(pg_database, tmp_path / "node")
        await store.open()
        try:
            spool = store.new_spool()
            spool.write(b"Subject: queued on a cluster\r\n\r\nhello\r\n")
            queue_id = await store.enqueue(None, [Target(BOB, BOB, False)], spool)
            now = time.time()
            await store.claim_due(now + 1, 10)
            deferred = RecipientResult(
                RecipientState.DEFERRED, Reply.parse("451 4.7.1 greylisted"), now + 3600
            )
            await store.record_result(queue_id, 0, deferred)
            return queue_id
        finally:
            await store.close()

    queue_id = asyncio.run(build())
    config = tmp_path / "mailwright.toml"
    config.write_text(
        f'data_dir = "admin-data"\n[queue]\nbackend = "postgresql"\nurl = "{pg_database}"\n'
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mailwright", "queue", *args, "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    listed = cli("list")
    assert listed.returncode == 0, listed.stderr
    assert queue_id in listed.stdout and "1 message(s) in the queue" in listed.stdout
    shown = cli("show", queue_id)
    assert shown.returncode == 0, shown.stderr
    assert "451 4.7.1 greylisted" in shown.stdout and "queued on a cluster" in shown.stdout
    held = cli("hold", queue_id)
    assert held.returncode == 0, held.stderr
    assert "held" in cli("show", queue_id).stdout
    released = cli("release", queue_id)
    assert released.returncode == 0, released.stderr
    assert "deferred" in cli("show", queue_id).stdout
    retried = cli("retry", queue_id)
    assert retried.returncode == 0 and "1 recipient(s) due now" in retried.stdout
    deleted = cli("delete", queue_id)
    assert deleted.returncode == 0 and f"deleted {queue_id}" in deleted.stdout
    assert cli("show", queue_id).returncode != 0
    assert "0 message(s) in the queue" in cli("list").stdout
    assert not (tmp_path / "admin-data").exists()  # the admin role made no files
