"""Message bodies: spooled while received, made durable by enqueue, read back for delivery.

Durability.  ``enqueue`` returns only after the commit that holds the message
has been fsynced (``synchronous=FULL``: the WAL is synced at every commit), so
the server may answer 250 to DATA (RFC 5321 4.1.1.4, 6.1: once accepted, a
message must not be lost).  A body up to ``memory_spool_limit`` is a BLOB in
its row; a larger one is a spool file, fsynced (on the sync pool, so the
writer thread never waits on it) and renamed into ``spool/``, and that
directory synced *before* the commit that references it.

Write once.  A body up to ``memory_spool_limit`` for one local recipient is
neither a BLOB nor a sealed spool file: it is that recipient's finished Maildir
copy, ``local_copy_prefix`` (Return-Path, Delivered-To) then the body, written
to spool/<queue id> by the writer thread just before the commit and synced
after it together with the commit (writer.py), its row holding the prefix's
length (``body_offset``, skipped by every reader of the body) and a CRC-32
(``spool_crc``, checked by recovery after a crash).  Local delivery links the
file into the Maildir (``QueuedMessage.local_copy``).

Reading.  ``read_body`` is for the event loop: opening (a SELECT on the
thread's own read-only connection, the BLOB fetched with it, or the spool file
opened) runs on the store's read pool, and so does every read of a spool file;
a BLOB, at most ``memory_spool_limit`` octets, is then read from memory.  The
open goes to the pool even for a small BLOB, although inline it would be
cheaper on average (measured with a 4 KiB BLOB, one at a time: 8 us inline,
100 to 150 us through ``read_body``): the loop cannot bound the worst case of
a SELECT (pages read from disk, SQLite's busy handler for up to
``busy_timeout``), and a tenth of a millisecond is small beside the SMTP
transaction the body feeds (the queue-drain benchmark gave the same rate
before and after).  ``open_body`` is the blocking path for callers already in
a worker thread (the Maildir writers).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import io
import os
import sqlite3
import threading
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from mailwright.errors import StorageError
from mailwright.model import NO_OPTIONS, Address, MailOptions
from mailwright.queue.base import (
    BODY_READ_SIZE,
    BodyReader,
    BodySpool,
    Target,
    local_copy_prefix,
)
from mailwright.queue.spool import SpillingSpool
from mailwright.queue.sqlite.database import Database
from mailwright.queue.sqlite.files import (
    QueueLayout,
    open_regular_file,
    unlink_if_present,
)
from mailwright.queue.sqlite.ids import QueueIdGenerator
from mailwright.queue.sqlite.ready_files import ReadyFiles
from mailwright.queue.sqlite.rows import split
from mailwright.queue.sqlite.writer import Effects, Job, JobRunner


class Bodies:
    """The store's body handling: ``new_spool``, ``enqueue``, ``read_body``, ``open_body``.

    Owns the two thread pools of the store: the sync pool (fsync and rename of
    spool files) and the read pool (opening and reading bodies for the event
    loop), made by ``start`` and shut down by ``stop``.
    """

    def __init__(
        self,
        *,
        layout: QueueLayout,
        database: Database,
        jobs: JobRunner,
        queue_ids: QueueIdGenerator,
        clock: Callable[[], float],
        memory_spool_limit: int,
        sync_threads: int,
        read_threads: int,
        write_once_from: int | None = 0,
    ) -> None:
        self._layout = layout
        self._database = database
        self._jobs = jobs
        self._new_queue_id = queue_ids
        self._clock = clock
        self._memory_spool_limit = memory_spool_limit
        self._sync_threads = sync_threads
        self._read_threads = read_threads
        self._write_once_from = write_once_from
        self._ready: ReadyFiles | None = None
        self._sync_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._read_pool: concurrent.futures.ThreadPoolExecutor | None = None

    def start(self) -> None:
        self._sync_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self._sync_threads, thread_name_prefix="mailwright-spool-sync"
        )
        if self._write_once_from is not None:
            self._ready = ReadyFiles(os.fspath(self._layout.spool_dir), self._sync_pool)
        self._read_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self._read_threads, thread_name_prefix="mailwright-body-read"
        )

    def stop(self) -> None:
        if self._ready is not None:
            self._ready.close()
            self._ready = None
        for pool in (self._sync_pool, self._read_pool):
            if pool is not None:
                pool.shutdown(wait=False)
        self._sync_pool = self._read_pool = None

    # ------------------------------------------------------------ receiving

    def new_spool(self, local_prefix: bytes = b"") -> SpillingSpool:
        """See ``SqliteQueueStore.new_spool``."""
        if self._write_once_from is None or self._write_once_from > self._memory_spool_limit:
            local_prefix = b""  # a body spilled to a file is not to be written once
        return SpillingSpool(self._layout.tmp_dir, self._memory_spool_limit, prefix=local_prefix)

    async def enqueue(
        self,
        sender: Address | None,
        targets: Sequence[Target],
        body: BodySpool,
        options: MailOptions = NO_OPTIONS,
    ) -> str:
        """See ``SqliteQueueStore.enqueue``."""
        if not targets:
            raise ValueError("a message needs at least one target")
        writer = self._jobs.require_open()
        body.take_ownership()
        queue_id = self._new_queue_id()
        received_at = self._clock()
        try:
            blob: bytes | None = None
            spool_name: str | None = None
            local_copy: bytes | None = None
            local_path = ""
            ready: str | None = None  # an empty file made ahead for the local copy
            offset = 0
            if body.on_disk:
                spool_name = queue_id
                if body.prefix:  # the file is the one local copy: synced before its commit
                    _check_prefix(body.prefix, sender, targets)
                    offset = len(body.prefix)
                await self._seal(body, self._layout.spool_dir / spool_name)
            elif (
                self._write_once_from is not None
                and body.size >= self._write_once_from
                and len(targets) == 1
                and targets[0].local
            ):
                ready = self._ready.take() if self._ready is not None else None
                spool_name = queue_id if ready is None else os.path.basename(ready)
                local_path = os.path.join(self._layout.spool_dir, spool_name)
                prefix = local_copy_prefix(sender, targets[0].address)
                offset = len(prefix)
                local_copy = prefix + body.take_bytes()
            else:
                blob = body.take_bytes()
            row = (
                queue_id,
                *split(sender),
                received_at,
                body.size,
                spool_name,
                blob,
                options.ret,
                options.envid,
                options.body,
                int(options.smtputf8),
                offset,
                None if local_copy is None else zlib.crc32(local_copy),
            )
            recipients = [
                (
                    queue_id,
                    index,
                    *split(t.address),
                    *split(t.original),
                    int(t.local),
                    received_at,
                    t.folder,
                    str(t.notify) if t.notify.given else None,
                    t.orcpt,
                )
                for index, t in enumerate(targets)
            ]
            job: Job[str] = Job(
                lambda connection, effects: self._insert(connection, effects, row, recipients),
                on_failure=body.remove,
            )
            if local_copy is not None:
                # Written by the writer thread just before the commit, synced after it
                # together with the commit (writer.py: one sync where there were two).
                job.on_failure = functools.partial(unlink_if_present, Path(local_path))
                job.prepare = functools.partial(
                    _write_local_copy, local_path, local_copy, ready is None
                )
                job.unsynced_file = local_path
            writer.submit(job)
        except asyncio.CancelledError:
            raise  # _seal arranged the clean-up
        except BaseException as exc:
            body.remove()
            if isinstance(exc, OSError):
                raise StorageError(f"cannot store the message: {exc}") from exc
            raise
        return await self._jobs.result(job, "cannot store the message")

    async def _seal(self, spool: BodySpool, final_path: Path) -> None:
        """fsync and rename a spool file on the sync pool; clean up even if cancelled."""
        if self._sync_pool is None:
            raise StorageError("the queue store is closed")
        sealing = self._sync_pool.submit(spool.seal, final_path)
        try:
            await asyncio.wrap_future(sealing)
        except asyncio.CancelledError:
            sealing.add_done_callback(lambda _: spool.remove())
            raise

    @staticmethod
    def _insert(
        connection: sqlite3.Connection,
        effects: Effects,
        row: tuple[Any, ...],
        recipients: list[tuple[Any, ...]],
    ) -> str:
        connection.execute(
            "INSERT INTO messages (queue_id, sender_local, sender_domain, received_at, size,"
            " spool_name, body, ret, envid, body_type, smtputf8, body_offset, spool_crc)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            row,
        )
        connection.executemany(
            "INSERT INTO recipients (queue_id, idx, address_local, address_domain,"
            " original_local, original_domain, local, state, next_attempt, folder, notify, orcpt)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?)",
            recipients,
        )
        if row[5] is not None and row[12] is None:  # a sealed (renamed) spool file
            effects.sync_spool_dir = True
        return str(row[0])

    # ------------------------------------------------------------ reading

    @contextlib.asynccontextmanager
    async def read_body(self, queue_id: str) -> AsyncIterator[BodyReader]:
        """See ``SqliteQueueStore.read_body``."""
        self._jobs.require_open()
        pool = self._read_pool
        if pool is None:
            raise StorageError("the queue store is closed")
        opening = pool.submit(self._open, queue_id)
        try:
            file, in_memory = await asyncio.wrap_future(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(_close_opened)
            raise
        reader = StoredBody(file, None if in_memory else pool)
        try:
            yield reader
        finally:
            reader.close()

    def open_body(self, queue_id: str) -> BinaryIO:
        """See ``SqliteQueueStore.open_body``."""
        writer = self._jobs.require_open()
        if _on_event_loop():
            raise RuntimeError("open_body blocks: on the event loop, use read_body")
        if threading.current_thread() is writer.thread:
            raise RuntimeError("open_body cannot be called from the queue's writer thread")
        return self._open(queue_id)[0]

    def _open(self, queue_id: str) -> tuple[BinaryIO, bool]:
        """The body from its start, and whether it is in memory (a BLOB) rather than a file.

        A SELECT on this thread's own read-only connection: WAL lets readers run
        beside the writer, so delivery never queues behind a group commit (the
        profile showed a fifth of the delivery path waiting here when it went
        through the writer).
        """
        try:
            row = (
                self._database.reader()
                .execute(
                    "SELECT spool_name, body, body_offset FROM messages WHERE queue_id = ?",
                    (queue_id,),
                )
                .fetchone()
            )
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the body of {queue_id}: {exc}") from exc
        if row is None:
            raise StorageError(f"no message {queue_id} in the queue")
        spool_name, blob, offset = row
        if spool_name is None:
            return io.BytesIO(blob), True
        try:
            fd = open_regular_file(self._layout.spool_dir / spool_name, os.O_RDONLY)
            file = open(fd, "rb")  # noqa: SIM115 (the caller closes it)
            if offset:
                file.seek(offset)  # past a local copy's trace lines: the body as received
            return file, False
        except OSError as exc:
            raise StorageError(f"cannot open the body of {queue_id}: {exc}") from exc


class StoredBody:
    """A ``BodyReader`` (queue/base.py) over a stored body opened by ``Bodies.read_body``.

    ``pool`` None: the body is in memory and read there; else each read of the
    file runs on ``pool``.
    """

    def __init__(self, file: BinaryIO, pool: concurrent.futures.Executor | None) -> None:
        self._file = file
        self._pool = pool

    async def read(self, size: int) -> bytes:
        if size <= 0:
            raise ValueError(f"size must be positive: {size}")
        try:
            if self._pool is None:
                return self._file.read(size)
            return await asyncio.wrap_future(self._pool.submit(self._file.read, size))
        except (OSError, ValueError, RuntimeError) as exc:  # the disk; closed file; closed pool
            raise StorageError(f"cannot read the message body: {exc}") from exc

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._pieces()

    def close(self) -> None:
        """Close the body; a file on the pool, where a read cut short may still hold it."""
        if self._pool is not None:
            try:
                self._pool.submit(self._file.close)
                return
            except RuntimeError:  # the store is closed: its pool reads no more
                pass
        self._file.close()

    async def _pieces(self) -> AsyncIterator[bytes]:
        while piece := await self.read(BODY_READ_SIZE):
            yield piece


def _check_prefix(prefix: bytes, sender: Address | None, targets: Sequence[Target]) -> None:
    """A file may start with trace lines only when they are those of its one local copy."""
    one_local = len(targets) == 1 and targets[0].local
    if not one_local or prefix != local_copy_prefix(sender, targets[0].address):
        raise ValueError("a spool's local_prefix must be the trace lines of its one local copy")


def _write_local_copy(path: str, content: bytes, create: bool) -> None:
    """Write ``content`` into ``path``: a file to ``create`` (never an existing name, never
    through a link), or an empty one made ahead (ready_files.py), opened without following
    a link.  Not synced (see writer.py); the job's ``on_failure`` removes a partial file."""
    fd = open_regular_file(Path(path), os.O_WRONLY | (os.O_CREAT | os.O_EXCL if create else 0))
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _close_opened(opening: concurrent.futures.Future[tuple[BinaryIO, bool]]) -> None:
    """An open finished after its reader was cancelled: close what it opened."""
    if not opening.cancelled() and opening.exception() is None:
        opening.result()[0].close()
