"""SqliteQueueStore against real files in tmp_path: durability, leases, recovery, roles, processes."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailwright.errors import StorageError
from mailwright.model import Address
from mailwright.protocol.reply import Reply
from mailwright.queue.base import RecipientResult, RecipientState, Target
from mailwright.queue.sqlite import QueueIdGenerator, SqliteQueueStore
from mailwright.queue.sqlite.schema import SCHEMA_VERSION
from tests.helpers import run
from tests.queue.contract import ALICE, SENDER, body_of, put

#: A recipient this queue relays: its body stays in the database.
REMOTE = Address("bob", "remote.test")

CHILD = Path(__file__).with_name("enqueue_until_killed.py")
ACCEPTOR = Path(__file__).with_name("enqueue_as_acceptor.py")


@contextlib.asynccontextmanager
async def opened(data_dir: Path, **options: Any) -> AsyncIterator[SqliteQueueStore]:
    store = SqliteQueueStore(data_dir, **options)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def spool_files(data_dir: Path) -> list[str]:
    return sorted(p.name for p in (data_dir / "spool").iterdir() if p.is_file())


def tmp_files(data_dir: Path) -> list[str]:
    return sorted(p.name for p in (data_dir / "spool" / "tmp").iterdir())


def lock_is_free(path: Path) -> bool:
    """Whether a new open file description gets an exclusive flock on ``path`` right now."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # releases the lock if it was taken
    return True


@contextlib.contextmanager
def holding_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` as another process would (it must be free now)."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)


def descriptors_of(path: Path) -> int:
    """How many of this process's file descriptors are open on ``path``."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                count += 1
    return count


def python_output(script: str) -> str:
    """What a new Python process running ``script`` prints (it must succeed)."""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def numbered_body(origin: str, number: int) -> bytes:
    """Distinct per origin and number, 100 to 20,099 octets (some go to spool files)."""
    seed = hashlib.sha256(f"{origin} {number}".encode()).digest()
    size = 100 + (number * 7919) % 20_000
    return (seed * (size // len(seed) + 1))[:size]


# ---------------------------------------------------------------- schema, removal, ids


def test_a_schema_1_queue_is_upgraded_and_an_older_mailwright_refuses_it(
    tmp_path: Path,
) -> None:
    """Schema 2 adds the 'bouncing' state: its index of pending recipients replaces schema
    1's; schema 3 adds the folder column, schema 4 the offset and CRC of a local copy.  The
    version tells a mailwright that predates them to keep off, and the message queued
    before the upgrade is still delivered."""

    def indexes() -> list[str]:
        with contextlib.closing(sqlite3.connect(tmp_path / "queue.sqlite3")) as connection:
            rows = connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'recipients'"
                " AND sql IS NOT NULL"
            )
            return sorted(name for (name,) in rows)

    async def test() -> None:
        async with opened(tmp_path) as store:
            await put(store, b"body", [Target(REMOTE, REMOTE, False)])
        with contextlib.closing(
            sqlite3.connect(tmp_path / "queue.sqlite3", isolation_level=None)
        ) as connection:
            connection.execute("ALTER TABLE messages DROP COLUMN body_offset")
            connection.execute("ALTER TABLE messages DROP COLUMN spool_crc")
            connection.execute("DROP INDEX recipients_pending")
            connection.execute(
                "CREATE INDEX recipients_due ON recipients (next_attempt)"
                " WHERE state IN ('queued', 'deferred')"
            )
            connection.execute("ALTER TABLE recipients DROP COLUMN folder")
            connection.execute("PRAGMA user_version = 1")
        assert indexes() == ["recipients_due"]
        async with opened(tmp_path) as store:
            (message,) = await store.claim_due(time.time() + 1, 10)
            assert message.recipients[0].target.folder is None
            assert message.local_copy is None
            assert await body_of(store, message.queue_id) == b"body"
        assert indexes() == ["recipients_pending"]
        with contextlib.closing(sqlite3.connect(tmp_path / "queue.sqlite3")) as connection:
            assert connection.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
            assert SCHEMA_VERSION == 4

    run(test)


def test_remove_deletes_message_and_spool_file_and_later_results_are_ignored(
    tmp_path: Path,
) -> None:
    async def test() -> None:
        async with opened(tmp_path, memory_spool_limit=10) as store:
            queue_id = await put(store, b"a body longer than ten octets")
            assert spool_files(tmp_path) == [queue_id]
            await store.claim_due(time.time() + 1, 10)
            assert await store.remove(queue_id) is True
            assert await store.remove(queue_id) is False
            assert spool_files(tmp_path) == []
            await store.record_result(
                queue_id, 0, RecipientResult(RecipientState.DELIVERED, Reply.parse("250"))
            )
            assert await store.list() == []
            with pytest.raises(StorageError):
                async with store.read_body(queue_id):
                    pass

    run(test)


def test_queue_ids_are_unique_sortable_and_safe_as_file_names(tmp_path: Path) -> None:
    async def test() -> list[str]:
        async with opened(tmp_path) as store:
            return list(await asyncio.gather(*(put(store, b"x") for _ in range(300))))

    ids = run(test)
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)  # assigned in call order
    assert all(re.fullmatch(r"[0-9a-z]{16}", queue_id) for queue_id in ids)


def test_importing_the_queue_makes_no_object_and_registers_no_fork_hook() -> None:
    """Nothing at import time: queue ids come from a generator each store owns."""
    script = (
        "import enum, gc, os\n"
        "hooks = []\n"
        "register = os.register_at_fork\n"
        "def spy(**hook):\n"
        "    hooks.extend(hook.values())\n"
        "    register(**hook)\n"
        "os.register_at_fork = spy\n"
        "import mailwright.app, mailwright.cli.queue, mailwright.queue.sqlite\n"
        "ours = [h for h in hooks if 'mailwright' in str(getattr(h, '__module__', ''))]\n"
        "made = [type(o).__qualname__ for o in gc.get_objects()\n"
        "        if type(o).__module__.startswith('mailwright.queue')\n"
        "        and not isinstance(o, enum.Enum)]\n"
        "print(len(ours), sorted(made))\n"
    )
    assert python_output(script).split(maxsplit=1) == ["0", "[]\n"]


def test_a_queue_id_generator_is_refused_in_a_forked_child() -> None:
    """The copied lock may be held by a thread the child lacks; the child makes its own store."""
    script = (
        "import os\n"
        "from mailwright.queue.sqlite import QueueIdGenerator\n"
        "ids = QueueIdGenerator()\n"
        "ids()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    try:\n"
        "        ids()\n"
        "    except RuntimeError:\n"
        "        os._exit(0)\n"
        "    os._exit(1)\n"
        "print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), len(ids()))\n"
    )
    assert python_output(script).split() == ["0", "16"]  # refused in the child, fine in the parent


# ---------------------------------------------------------------- group commit


def test_concurrent_enqueues_share_commits(tmp_path: Path) -> None:
    messages = 200

    async def test() -> None:
        async with opened(tmp_path) as store:
            before = store.commit_stats.commits
            ids = await asyncio.gather(*(put(store, b"x" * 1024) for _ in range(messages)))
            commits = store.commit_stats.commits - before
            assert commits <= messages // 4, f"{commits} commits for {messages} messages"
            assert {m.queue_id for m in await store.list()} == set(ids)

    run(test)


# ---------------------------------------------------------------- bodies


def test_large_body_goes_to_a_spool_file_and_round_trips_byte_exact(tmp_path: Path) -> None:
    body = os.urandom(3 * 1024 * 1024 + 17)

    async def test() -> None:
        async with opened(tmp_path, memory_spool_limit=256 * 1024) as store:
            spool = store.new_spool()
            spool.write(body[:100_000])
            assert not spool.on_disk
            spool.write(body[100_000:300_000])
            assert spool.on_disk
            assert len(tmp_files(tmp_path)) == 1
            for start in range(300_000, len(body), 65_536):
                spool.write(body[start : start + 65_536])
            queue_id = await store.enqueue(SENDER, [Target(ALICE, ALICE, True)], spool)
            spool.discard()  # a no-op: the queue owns it now
            assert tmp_files(tmp_path) == []
            assert spool_files(tmp_path) == [queue_id]
            assert (tmp_path / "spool" / queue_id).read_bytes() == body
            assert await body_of(store, queue_id) == body
            message = await store.get(queue_id)
            assert message is not None and message.size == len(body)

            await store.claim_due(time.time() + 1, 1)
            await store.record_result(
                queue_id, 0, RecipientResult(RecipientState.DELIVERED, Reply(250, None, "ok"))
            )
            assert spool_files(tmp_path) == []

    run(test)


def test_open_body_serves_worker_threads_and_is_refused_on_the_event_loop(
    tmp_path: Path,
) -> None:
    """The blocking reader is for threads (the Maildir writers); the loop uses read_body."""

    def read_in_this_thread(store: SqliteQueueStore, queue_id: str) -> bytes:
        with store.open_body(queue_id) as body:
            return body.read()

    async def test() -> None:
        async with opened(tmp_path, memory_spool_limit=10) as store:
            small = await put(store, b"0123456789")
            large = await put(store, b"more than ten octets")
            for queue_id in (small, large):
                with pytest.raises(RuntimeError, match="read_body"):
                    store.open_body(queue_id)
            assert await asyncio.to_thread(read_in_this_thread, store, small) == b"0123456789"
            assert await asyncio.to_thread(read_in_this_thread, store, large) == (
                b"more than ten octets"
            )

    run(test)


def test_local_copies_go_into_files_made_ahead_and_those_left_are_removed_at_close(
    tmp_path: Path,
) -> None:
    """Write once creates no file before a 250 when one was made ahead (ready_files.py);
    the files still ready when the store closes are removed, so only messages' files stay."""

    async def test() -> None:
        async with opened(tmp_path) as store:
            first = await put(store, b"first\r\n")  # none ready yet: created for it
            deadline = time.monotonic() + 30
            while len(spool_files(tmp_path)) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            ready = set(spool_files(tmp_path)) - {first}
            assert ready and all(name.startswith("ready.") for name in ready)
            assert all((tmp_path / "spool" / name).stat().st_size == 0 for name in ready)
            second = await put(store, b"second\r\n")
            (message,) = [
                m for m in await store.claim_due(time.time() + 1, 10) if m.queue_id == second
            ]
            assert message.local_copy is not None
            assert os.path.basename(message.local_copy) in ready
            assert await body_of(store, second) == b"second\r\n"
            kept = {first, os.path.basename(message.local_copy)}
        assert set(spool_files(tmp_path)) == kept
        async with opened(tmp_path) as store:
            assert await body_of(store, first) == b"first\r\n"
            assert await body_of(store, second) == b"second\r\n"

    run(test)


def test_a_body_too_large_for_memory_is_written_once_after_its_trace_lines(
    tmp_path: Path,
) -> None:
    """With ``local_prefix`` a body that spills to a file starts it with the local copy's
    trace lines: sealed (synced) before its commit like any spool file, and linked at
    delivery.  A prefix that is not the one local copy's is refused, nothing stored."""
    body = os.urandom(300_000)
    prefix = b"Return-Path: <sender@example.test>\r\nDelivered-To: alice@example.test\r\n"

    async def test() -> None:
        async with opened(tmp_path, memory_spool_limit=64 * 1024) as store:
            spool = store.new_spool(prefix)
            spool.write(body)
            assert spool.on_disk and spool.size == len(body)
            queue_id = await store.enqueue(SENDER, [Target(ALICE, ALICE, True)], spool)
            (message,) = await store.claim_due(time.time() + 1, 10)
            assert message.local_copy == str(tmp_path / "spool" / queue_id)
            assert message.size == len(body)
            assert (tmp_path / "spool" / queue_id).read_bytes() == prefix + body
            assert await body_of(store, queue_id) == body

            wrong = store.new_spool(prefix)
            wrong.write(body)
            with pytest.raises(ValueError, match="local_prefix"):
                await store.enqueue(SENDER, [Target(REMOTE, REMOTE, False)], wrong)
            assert [m.queue_id for m in await store.list()] == [queue_id]
            assert tmp_files(tmp_path) == []

    run(test)


def test_small_body_for_a_remote_or_several_recipients_stays_in_the_database(
    tmp_path: Path,
) -> None:
    async def test() -> None:
        async with opened(tmp_path) as store:
            relayed = await put(store, b"small" * 100, [Target(REMOTE, REMOTE, False)])
            two = await put(store, b"two" * 100, [Target(ALICE, ALICE, True)] * 2)
            assert spool_files(tmp_path) == []
            assert await body_of(store, relayed) == b"small" * 100
            assert await body_of(store, two) == b"two" * 100
            (first, second) = await store.claim_due(time.time() + 1, 10)
            assert first.local_copy is None and second.local_copy is None

    run(test)


@pytest.mark.parametrize("use_syncfs", [True, False], ids=["syncfs", "file-by-file"])
def test_a_small_body_for_one_local_recipient_is_its_whole_local_copy_in_a_file(
    tmp_path: Path, use_syncfs: bool
) -> None:
    """Write once: the spool file starts with the trace lines local delivery would add, so
    delivery links it; every reader of the body still gets the body as received.  Both ways
    of syncing it with its commit (one syncfs; or each file, spool/ and the WAL)."""
    body = b"Subject: hi\r\n\r\nsmall\r\n"

    async def test() -> None:
        async with opened(tmp_path, use_syncfs=use_syncfs) as store:
            queue_id = await put(store, body)
            (message,) = await store.claim_due(time.time() + 1, 10)
            assert message.local_copy == str(tmp_path / "spool" / queue_id)
            with open(message.local_copy, "rb") as copy:
                assert copy.read() == (
                    b"Return-Path: <sender@example.test>\r\nDelivered-To: alice@example.test\r\n"
                    + body
                )
            assert os.stat(message.local_copy).st_mode & 0o777 == 0o600
            assert await body_of(store, queue_id) == body
            assert message.size == len(body)
            opened_body = await asyncio.to_thread(store.open_body, queue_id)
            with opened_body:
                assert opened_body.read() == body
            await store.record_result(
                queue_id, 0, RecipientResult(RecipientState.DELIVERED, Reply(250, None, "ok"))
            )
            assert not os.path.exists(message.local_copy)
        assert spool_files(tmp_path) == []

    run(test)


def test_discarded_spool_leaves_no_file(tmp_path: Path) -> None:
    async def test() -> None:
        async with opened(tmp_path, memory_spool_limit=0) as store:
            spool = store.new_spool()
            spool.write(b"abandoned transaction")
            assert len(tmp_files(tmp_path)) == 1
            spool.discard()
            assert tmp_files(tmp_path) == []
            with pytest.raises(ValueError):
                await store.enqueue(SENDER, [Target(ALICE, ALICE, True)], spool)

    run(test)


# ---------------------------------------------------------------- restarts and roles


def test_admin_store_does_not_reset_the_servers_leases(tmp_path: Path) -> None:
    async def test() -> None:
        now = time.time() + 1
        async with opened(tmp_path, memory_spool_limit=0) as server:
            queue_id = await put(server, b"in flight")
            assert len(await server.claim_due(now, 10)) == 1
            async with opened(tmp_path, role="admin") as admin:
                assert [m.queue_id for m in await admin.list()] == [queue_id]
                assert await body_of(admin, queue_id) == b"in flight"
                assert await server.claim_due(now, 10) == []
            assert await server.claim_due(now, 10) == []
            assert spool_files(tmp_path) == [queue_id]  # the admin cleaned nothing

    run(test)


def test_admin_in_another_process_sees_the_running_servers_queue(tmp_path: Path) -> None:
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from mailwright.queue.sqlite import SqliteQueueStore\n"
        "async def main():\n"
        "    store = SqliteQueueStore(Path(sys.argv[1]), role='admin')\n"
        "    await store.open()\n"
        "    print(' '.join(m.queue_id for m in await store.list()))\n"
        "    print(await store.retry_now())\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
    )

    async def test() -> None:
        async with opened(tmp_path) as server:
            ids = [await put(server, b"one"), await put(server, b"two")]
            now = time.time() + 1
            await server.claim_due(now, 10)
            for queue_id in ids:
                await server.record_result(
                    queue_id,
                    0,
                    RecipientResult(RecipientState.DEFERRED, Reply.parse("451"), now + 3600),
                )
            admin = await asyncio.create_subprocess_exec(
                sys.executable, "-c", script, str(tmp_path), stdout=subprocess.PIPE
            )
            out, _ = await admin.communicate()
            assert admin.returncode == 0
            assert out.decode().split() == [*ids, "2"]
            assert len(await server.claim_due(now, 10)) == 2  # made due by the other process

    run(test)


def test_admin_open_without_a_queue_fails_and_creates_nothing(tmp_path: Path) -> None:
    async def test() -> None:
        with pytest.raises(StorageError, match="no queue"):
            await SqliteQueueStore(tmp_path / "typo", role="admin").open()
        assert not (tmp_path / "typo").exists()

    run(test)


def test_acceptor_open_without_a_queue_fails_and_creates_nothing(tmp_path: Path) -> None:
    async def test() -> None:
        with pytest.raises(StorageError, match="no queue"):
            await SqliteQueueStore(tmp_path / "typo", role="acceptor").open()
        assert not (tmp_path / "typo").exists()
        with pytest.raises(StorageError, match="no queue"):
            await SqliteQueueStore(tmp_path, role="acceptor").open()  # the directory, no queue
        assert list(tmp_path.iterdir()) == []

    run(test)


def test_an_unknown_role_is_refused() -> None:
    with pytest.raises(ValueError, match="acceptor"):
        SqliteQueueStore(Path("unused"), role="reader")  # type: ignore[arg-type]


def test_acceptor_opens_beside_the_server_holding_the_queue_and_changes_nothing(
    tmp_path: Path,
) -> None:
    async def test() -> None:
        now = time.time() + 1
        ids = QueueIdGenerator()  # two stores of one process enqueue into one data_dir
        server = SqliteQueueStore(tmp_path, memory_spool_limit=0, queue_ids=ids)
        await server.open()
        try:
            assert not lock_is_free(tmp_path / "queue.lock")
            in_flight = await put(server, b"being delivered")
            assert len(await server.claim_due(now, 10)) == 1
            receiving = server.new_spool()
            receiving.write(b"half received by the server")
            [unfinished] = tmp_files(tmp_path)
            async with opened(
                tmp_path, role="acceptor", memory_spool_limit=0, queue_ids=ids
            ) as acceptor:
                assert acceptor.role == "acceptor"
                assert tmp_files(tmp_path) == [unfinished]  # the acceptor cleaned nothing
                queue_id = await put(acceptor, b"received by the acceptor")
                assert spool_files(tmp_path) == sorted([in_flight, queue_id])
                # The claim of the server's delivery in flight is untouched.
                claimed = await server.claim_due(now, 10)
                assert [m.queue_id for m in claimed] == [queue_id]
                assert await body_of(server, queue_id) == b"received by the acceptor"
                await server.close()
                # The acceptor holds no queue.lock: only the server did.
                assert lock_is_free(tmp_path / "queue.lock")
            receiving.discard()
        finally:
            await server.close()

    run(test)


def test_a_new_server_will_not_recover_while_acceptors_of_the_old_one_run(
    tmp_path: Path,
) -> None:
    """Recovery deletes unreferenced spool files: not while an acceptor may own one."""

    async def test() -> None:
        async with opened(tmp_path):
            pass  # the server made the queue
        async with opened(tmp_path, role="acceptor", memory_spool_limit=0) as acceptor:
            receiving = acceptor.new_spool()
            receiving.write(b"x" * 100)  # a body on its way to the spool
            with pytest.raises(StorageError, match="acceptor processes of an earlier server"):
                await SqliteQueueStore(tmp_path).open()
            assert lock_is_free(tmp_path / "queue.lock")  # the refused server let it go
            queue_id = await put(acceptor, b"still stored by the acceptor")
            receiving.discard()
        async with opened(tmp_path) as server:  # the acceptor is gone: the server opens
            assert await body_of(server, queue_id) == b"still stored by the acceptor"

    run(test)


def test_second_server_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    async def test() -> None:
        async with opened(tmp_path):
            with pytest.raises(StorageError, match="another mailwright server"):
                await SqliteQueueStore(tmp_path).open()
        async with opened(tmp_path):  # free again once the first one closed
            pass

    run(test)


# ---------------------------------------------------------------- several processes


def test_acceptor_process_and_server_enqueue_together_and_every_message_is_stored(
    tmp_path: Path,
) -> None:
    count = 200

    async def enqueue_here(store: SqliteQueueStore) -> dict[str, str]:
        numbers = iter(range(count))
        ids: dict[str, str] = {}

        async def sender() -> None:
            for number in numbers:
                body = numbered_body("server", number)
                ids[await put(store, body)] = hashlib.sha256(body).hexdigest()

        await asyncio.gather(*(sender() for _ in range(16)))
        return ids

    async def test() -> None:
        async with opened(tmp_path, memory_spool_limit=8 * 1024) as server:
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                str(ACCEPTOR),
                str(tmp_path),
                str(count),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            assert child.stdin is not None and child.stdout is not None
            assert child.stderr is not None
            ready = await child.stdout.readline()
            if ready != b"ready\n":
                await child.wait()
                pytest.fail(f"acceptor did not start: {(await child.stderr.read()).decode()}")
            child.stdin.write(b"go\n")
            await child.stdin.drain()
            here = await enqueue_here(server)  # while the acceptor process enqueues
            out, err = await child.communicate()
            assert child.returncode == 0, err.decode()
            there = dict(line.split() for line in out.decode().splitlines())

            assert len(here) == count and len(there) == count
            assert not set(here) & set(there)
            assert {m.queue_id for m in await server.list()} == set(here) | set(there)
            for queue_id, digest in {**here, **there}.items():
                assert hashlib.sha256(await body_of(server, queue_id)).hexdigest() == digest
            assert tmp_files(tmp_path) == []

    run(test)


def test_reads_do_not_take_the_write_lock_and_writes_wait_for_it(tmp_path: Path) -> None:
    async def test() -> None:
        async with opened(tmp_path) as store:
            queue_id = await put(store, b"before")
            with holding_lock(tmp_path / "queue.write-lock"):
                # Would never finish if reads took the lock (the timeout only turns
                # that into a failure instead of a hang).
                listed = await asyncio.wait_for(store.list(), 30)
                assert [m.queue_id for m in listed] == [queue_id]
                writing = asyncio.ensure_future(put(store, b"after"))
                done, _ = await asyncio.wait({writing}, timeout=0.2)
                assert not done  # it cannot commit while another process holds the lock
            second = await asyncio.wait_for(writing, 30)
            assert [m.queue_id for m in await store.list()] == [queue_id, second]

    run(test)


def test_write_lock_is_released_when_begin_fails(tmp_path: Path) -> None:
    async def test() -> None:
        async with opened(tmp_path, busy_timeout=0.05) as store:
            # SQLite's write lock taken by a connection that ignores queue.write-lock.
            other = sqlite3.connect(tmp_path / "queue.sqlite3", isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")
                with pytest.raises(StorageError, match="locked"):
                    await put(store, b"cannot be stored")
                assert lock_is_free(tmp_path / "queue.write-lock")
            finally:
                other.execute("ROLLBACK")
                other.close()
            queue_id = await put(store, b"stored")
            assert [m.queue_id for m in await store.list()] == [queue_id]

    run(test)


def test_write_lock_is_released_when_commit_fails(tmp_path: Path) -> None:
    async def test() -> None:
        async with opened(tmp_path, memory_spool_limit=10) as store:
            spool = tmp_path / "spool"
            with holding_lock(tmp_path / "queue.write-lock"):
                writing = asyncio.ensure_future(put(store, b"a body that goes to a spool file"))
                # Wait until the body is sealed into spool/: the job is then at (or on its
                # way to) the writer, which waits for the lock held here.
                deadline = time.monotonic() + 30
                while not spool_files(tmp_path) and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                assert len(spool_files(tmp_path)) == 1
                # Make the sync of spool/ before COMMIT fail.
                spool.rename(tmp_path / "elsewhere")
                spool.write_text("a file where the directory was")
            with pytest.raises(StorageError):
                await asyncio.wait_for(writing, 30)
            assert lock_is_free(tmp_path / "queue.write-lock")
            assert await store.list() == []

    run(test)


def test_closing_the_store_closes_the_write_lock(tmp_path: Path) -> None:
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd")
    lock = tmp_path / "queue.write-lock"

    async def test() -> None:
        async with opened(tmp_path):
            assert descriptors_of(lock) == 2  # the writer's and the checkpointer's
            assert lock_is_free(lock)  # held only during write transactions
            async with opened(tmp_path, role="acceptor"):
                assert descriptors_of(lock) == 3
            assert descriptors_of(lock) == 2
        assert descriptors_of(lock) == 0
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600

    run(test)


# ---------------------------------------------------------------- crashes and damage


def test_kill_9_while_enqueueing_loses_no_acknowledged_message(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with (tmp_path / "stderr").open("wb") as stderr:
        child = subprocess.Popen(
            [sys.executable, str(CHILD), str(data_dir)], stdout=subprocess.PIPE, stderr=stderr
        )
    stdout = child.stdout
    assert stdout is not None
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, b"")))
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while not lines and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.01)
        assert lines[:1] == [b"ready\n"], (tmp_path / "stderr").read_text()
        time.sleep(1.0)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        reader.join()
    acknowledged = dict(line.decode().split() for line in lines[1:] if line.endswith(b"\n"))
    assert len(acknowledged) > 20

    async def test() -> None:
        async with opened(data_dir) as store:
            stored = {m.queue_id: m for m in await store.list()}
            for queue_id, digest in acknowledged.items():
                assert queue_id in stored, f"acknowledged {queue_id} was lost"
                assert hashlib.sha256(await body_of(store, queue_id)).hexdigest() == digest
            for message in stored.values():  # never half there, acknowledged or not
                assert len(await body_of(store, message.queue_id)) == message.size
            assert await store.quarantined() == []
        assert tmp_files(data_dir) == []
        with contextlib.closing(sqlite3.connect(data_dir / "queue.sqlite3")) as connection:
            named = connection.execute("SELECT spool_name FROM messages").fetchall()
        assert set(spool_files(data_dir)) <= {name for (name,) in named}  # no file left over

    run(test)


def test_damaged_or_missing_spool_files_are_moved_aside_and_the_rest_delivers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def fill() -> tuple[str, str, str]:
        async with opened(tmp_path, memory_spool_limit=10) as store:
            return (
                await put(store, b"will be truncated " * 10),
                await put(store, b"will go missing " * 10),
                await put(store, b"stays intact " * 10),
            )

    truncated, missing, intact = run(fill)
    (tmp_path / "spool" / truncated).write_bytes(b"will be")
    (tmp_path / "spool" / missing).unlink()

    async def reopen() -> None:
        async with opened(tmp_path, memory_spool_limit=10) as store:
            assert [m.queue_id for m in await store.list()] == [intact]
            assert await body_of(store, intact) == b"stays intact " * 10
            assert [q[0] for q in await store.quarantined()] == [truncated, missing]

    with caplog.at_level(logging.WARNING, logger="mailwright.queue"):
        run(reopen)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(truncated in w and "octets" in w for w in warnings)
    assert any(missing in w and "missing" in w for w in warnings)
    assert (tmp_path / "spool" / "corrupt" / truncated).read_bytes() == b"will be"


def test_after_a_crash_a_local_copy_that_missed_its_sync_is_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A local copy is synced after its commit (write once).  A machine that stops in
    between can leave the committed row with a file of the right length whose blocks never
    reached the disk (zeros here); no 250 was sent.  A start without the clean-close mark
    checks every local copy's CRC and moves such a message aside; a start after a clean
    close reads none of them."""
    body = b"Subject: x\r\n\r\n" + b"y" * 300

    async def fill() -> tuple[str, str]:
        async with opened(tmp_path) as store:
            assert not (tmp_path / "queue.closed-cleanly").exists()
            return await put(store, body), await put(store, body)

    damaged, intact = run(fill)
    assert (tmp_path / "queue.closed-cleanly").exists()  # the close was clean

    async def reopen() -> None:
        async with opened(tmp_path) as store:
            assert {m.queue_id for m in await store.list()} == {damaged, intact}

    with caplog.at_level(logging.INFO, logger="mailwright.queue"):
        run(reopen)
    assert not any("checked" in r.getMessage() for r in caplog.records)
    caplog.clear()

    # What the crash would have left: no clean-close mark, and a copy of the right
    # length whose data never reached the disk.
    (tmp_path / "queue.closed-cleanly").unlink()
    path = tmp_path / "spool" / damaged
    size = path.stat().st_size
    path.write_bytes(bytes(size))

    async def after_crash() -> None:
        async with opened(tmp_path) as store:
            assert [m.queue_id for m in await store.list()] == [intact]
            assert await body_of(store, intact) == body
            assert [q[0] for q in await store.quarantined()] == [damaged]

    with caplog.at_level(logging.INFO, logger="mailwright.queue"):
        run(after_crash)
    messages = [r.getMessage() for r in caplog.records]
    assert any("checked 2 local copies" in m for m in messages)
    assert any(damaged in m and "CRC-32" in m for m in messages)
    assert (tmp_path / "spool" / "corrupt" / damaged).read_bytes() == bytes(size)


def test_unacknowledged_spool_files_are_removed_at_start_up(tmp_path: Path) -> None:
    async def test() -> None:
        async with opened(tmp_path, memory_spool_limit=0) as store:
            kept = await put(store, b"acknowledged")
            store.new_spool().write(b"half received when the server died")
        (tmp_path / "spool" / "0000000000000000").write_bytes(b"renamed, never committed")
        assert len(tmp_files(tmp_path)) == 1
        async with opened(tmp_path, memory_spool_limit=0) as store:
            assert tmp_files(tmp_path) == []
            assert spool_files(tmp_path) == [kept]
            assert await body_of(store, kept) == b"acknowledged"

    run(test)


# ---------------------------------------------------------------- storage failures


def test_open_raises_storage_error_when_a_file_blocks_the_data_dir(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")

    async def test() -> None:
        with pytest.raises(StorageError):
            await SqliteQueueStore(tmp_path / "file" / "data").open()

    run(test)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permissions")
def test_open_raises_storage_error_when_the_data_dir_is_read_only(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)

    async def test() -> None:
        with pytest.raises(StorageError):
            await SqliteQueueStore(tmp_path / "data").open()

    try:
        run(test)
    finally:
        tmp_path.chmod(0o700)


def test_spool_write_raises_storage_error_when_the_spool_cannot_spill(tmp_path: Path) -> None:
    async def test() -> None:
        async with opened(tmp_path, memory_spool_limit=10) as store:
            (tmp_path / "spool" / "tmp").rmdir()
            (tmp_path / "spool" / "tmp").write_text("a file where the directory was")
            spool = store.new_spool()
            spool.write(b"fits")
            with pytest.raises(StorageError):
                spool.write(b"does not fit in ten octets")
            assert await store.list() == []

    run(test)


def test_enqueue_raises_storage_error_and_leaves_nothing_when_the_spool_dir_is_gone(
    tmp_path: Path,
) -> None:
    async def test() -> None:
        async with opened(tmp_path, memory_spool_limit=10) as store:
            spool = store.new_spool()
            spool.write(b"a body that goes to a spool file")
            (tmp_path / "spool").rename(tmp_path / "elsewhere")
            (tmp_path / "spool").write_text("a file where the directory was")
            with pytest.raises(StorageError):
                await store.enqueue(SENDER, [Target(ALICE, ALICE, True)], spool)
            assert await store.list() == []
            moved = tmp_path / "elsewhere"
            assert [p.name for p in moved.iterdir() if p.is_file()] == []  # no body renamed in

    run(test)


def test_the_server_checkpoints_the_wal_in_the_background(tmp_path: Path) -> None:
    """Commits leave checkpoints to the server's checkpointer thread: the pages reach
    the database file without any commit crossing SQLite's automatic mark."""
    from mailwright.queue.sqlite import checkpoint as module

    async def test() -> None:
        async with opened(tmp_path) as store:
            database = tmp_path / "queue.sqlite3"
            before = database.stat().st_size
            relayed = [Target(REMOTE, REMOTE, False)]  # in the database, not a local copy
            ids = [await put(store, bytes([65 + n]) * 200_000, relayed) for n in range(10)]
            # 2 MB of WAL: far below the automatic mark, so only the checkpointer
            # can bring it into the database file.
            assert module.WAL_AUTOCHECKPOINT_PAGES * 4096 > 10 * 200_000
            for _ in range(400):  # up to 20 s; the checkpointer runs every 0.5 s
                if database.stat().st_size > before + 10 * 200_000:
                    break
                await asyncio.sleep(0.05)
            assert database.stat().st_size > before + 10 * 200_000
            assert await body_of(store, ids[-1]) == b"J" * 200_000

    run(test)
