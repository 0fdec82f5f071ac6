"""Message bodies in PostgreSQL: stored once, as rows of CHUNK_SIZE octets, read in pieces.

Why rows of ``bytea`` (``body_chunks``) rather than large objects: a row is
deleted with its message (ON DELETE CASCADE), so no body is ever left behind
by a crash or a ``queue delete``; large objects outlive the rows naming them
unless every path calls ``lo_unlink``, need privileges of their own, and are
not in logical replication.  A reader fetches one chunk at a time, so
delivery holds at most one chunk (256 KiB) of a 25 MB message in memory, and
each fetch takes a pooled connection only for the one query, never for the
SMTP transaction the body feeds.

Receiving.  A body up to ``memory_spool_limit`` stays in memory and goes into
the group commit (writer.py) with its rows.  A larger one spills to a file in
data_dir/spool/tmp (queue/spool.py) and is copied into the database in a
transaction of its own, read from the file in chunks (COPY), so the other
messages' commits never wait behind it; that commit too has
``synchronous_commit`` on before ``enqueue`` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from mailwright.errors import StorageError
from mailwright.model import NO_OPTIONS, Address, MailOptions
from mailwright.queue.base import BODY_READ_SIZE, BodyReader, BodySpool, Target
from mailwright.queue.postgresql.connect import PoolOf, pooled
from mailwright.queue.postgresql.ids import ClusterQueueIds
from mailwright.queue.postgresql.rows import split
from mailwright.queue.postgresql.schema import CHUNK_SIZE
from mailwright.queue.postgresql.writer import (
    INSERT_MESSAGE,
    INSERT_RECIPIENT,
    NEW_MAIL_CHANNEL,
    GroupCommitter,
    NewMessage,
)
from mailwright.queue.spool import SpillingSpool, make_directories

FetchChunk = Callable[[int], Awaitable[bytes]]


class Bodies:
    """``new_spool``, ``enqueue``, ``read_body`` and ``open_body`` of the PostgreSQL store."""

    def __init__(
        self,
        *,
        tmp_dir: Path,
        pool: PoolOf,
        committer: GroupCommitter,
        node: str,
        clock: Callable[[], float],
        memory_spool_limit: int,
    ) -> None:
        self._tmp_dir = tmp_dir
        self._pool = pool
        self._committer = committer
        self._node = node
        self._clock = clock
        self._memory_spool_limit = memory_spool_limit
        self._new_queue_id = ClusterQueueIds()
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, *, receives: bool, clean: bool) -> None:
        """``receives``: make the spool folder (not for ``mailwright queue``); ``clean``:
        remove what a previous run left in it (a server opening, before its acceptors
        start: nothing there was ever acknowledged)."""
        if receives:
            make_directories(self._tmp_dir)
        if clean:
            for entry in os.scandir(self._tmp_dir):
                if not entry.is_dir(follow_symlinks=False):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
        self._loop = asyncio.get_running_loop()

    def stop(self) -> None:
        self._loop = None

    # ------------------------------------------------------------ receiving

    def new_spool(self) -> SpillingSpool:
        return SpillingSpool(self._tmp_dir, self._memory_spool_limit)

    async def enqueue(
        self,
        sender: Address | None,
        targets: Sequence[Target],
        body: BodySpool,
        options: MailOptions = NO_OPTIONS,
    ) -> str:
        """See ``PostgresQueueStore.enqueue``."""
        if not targets:
            raise ValueError("a message needs at least one target")
        if self._loop is None:
            raise StorageError("the queue store is not open")
        body.take_ownership()
        queue_id = self._new_queue_id()
        received_at = self._clock()
        size = body.size
        message = (
            queue_id,
            *split(sender),
            received_at,
            size,
            -(-size // CHUNK_SIZE),  # chunks: the size divided, rounded up
            options.ret,
            options.envid,
            options.body,
            options.smtputf8,
            self._node,
        )
        recipients = [
            (
                queue_id,
                index,
                *split(t.address),
                *split(t.original),
                t.local,
                received_at,
                t.folder,
                str(t.notify) if t.notify.given else None,
                t.orcpt,
            )
            for index, t in enumerate(targets)
        ]
        try:
            if body.on_disk:
                return await self._store_from_file(body, queue_id, message, recipients)
            data = body.take_bytes()
            chunks = [data[at : at + CHUNK_SIZE] for at in range(0, len(data), CHUNK_SIZE)]
            return await self._committer.store(NewMessage(message, recipients, chunks))
        finally:
            body.remove()

    async def _store_from_file(
        self,
        body: BodySpool,
        queue_id: str,
        message: tuple[Any, ...],
        recipients: list[tuple[Any, ...]],
    ) -> str:
        """A spilled body: its own transaction, the file copied in CHUNK_SIZE rows (COPY)."""
        path = self._tmp_dir / f"{queue_id}.enqueue"
        try:
            await asyncio.to_thread(body.seal, path)
            file = await asyncio.to_thread(open, path, "rb")
        except OSError as exc:
            raise StorageError(f"cannot store the message: {exc}") from exc
        try:
            async with pooled(
                self._pool, "cannot store the message", synchronous_commit=True, pipeline=False
            ) as connection:
                await connection.execute(INSERT_MESSAGE, message)
                async with connection.cursor() as cursor:
                    await cursor.executemany(INSERT_RECIPIENT, recipients)
                    async with cursor.copy(
                        "COPY body_chunks (queue_id, seq, data) FROM STDIN"
                    ) as copy:
                        seq = 0
                        while chunk := await asyncio.to_thread(file.read, CHUNK_SIZE):
                            await copy.write_row((queue_id, seq, chunk))
                            seq += 1
                if seq != message[5]:
                    raise StorageError(
                        f"cannot store the message: its file had {seq} chunks,"
                        f" {message[5]} expected"
                    )
                await connection.execute("SELECT pg_notify(%s, %s)", (NEW_MAIL_CHANNEL, self._node))
        finally:
            file.close()
        return queue_id

    # ------------------------------------------------------------ reading

    async def fetch_chunk(self, queue_id: str, seq: int) -> bytes:
        """One piece of a stored body; StorageError when it is gone (the message removed)."""
        async with pooled(self._pool, f"cannot read the body of {queue_id}") as connection:
            cursor = await connection.execute(
                "SELECT data FROM body_chunks WHERE queue_id = %s AND seq = %s",
                (queue_id, seq),
                binary=True,
            )
            row = await cursor.fetchone()
        if row is None:
            raise StorageError(f"the body of {queue_id} is gone from the queue")
        return bytes(row[0])

    async def _first_chunk(self, queue_id: str) -> tuple[int, bytes]:
        """How many chunks the body has, and the first (b"" for an empty body): one query,
        so a body of one chunk (most mail) costs one round trip to read."""
        async with pooled(self._pool, f"cannot read the body of {queue_id}") as connection:
            cursor = await connection.execute(
                "SELECT m.chunks, c.data FROM messages m LEFT JOIN body_chunks c"
                " ON c.queue_id = m.queue_id AND c.seq = 0 WHERE m.queue_id = %s",
                (queue_id,),
                binary=True,
            )
            row = await cursor.fetchone()
        if row is None:
            raise StorageError(f"no message {queue_id} in the queue")
        count, first = int(row[0]), row[1]
        if first is None and count:
            raise StorageError(f"the body of {queue_id} is gone from the queue")
        return count, b"" if first is None else bytes(first)

    @contextlib.asynccontextmanager
    async def read_body(self, queue_id: str) -> AsyncIterator[BodyReader]:
        """See ``PostgresQueueStore.read_body``."""
        if self._loop is None:
            raise StorageError("the queue store is not open")
        count, first = await self._first_chunk(queue_id)
        yield ChunkedBody(lambda seq: self.fetch_chunk(queue_id, seq), count, first)

    def open_body(self, queue_id: str) -> BinaryIO:
        """See ``PostgresQueueStore.open_body``: each chunk fetched on the store's loop."""
        loop = self._loop
        if loop is None:
            raise StorageError("the queue store is not open")
        if _on_event_loop():
            raise RuntimeError("open_body blocks: on the event loop, use read_body")
        count, first = _wait_on(loop, self._first_chunk(queue_id))
        raw = ChunkFile(lambda seq: _wait_on(loop, self.fetch_chunk(queue_id, seq)), count, first)
        return io.BufferedReader(raw, buffer_size=CHUNK_SIZE)


class ChunkedBody:
    """A ``BodyReader`` (queue/base.py) over ``count`` chunks, one in memory at a time;
    ``first`` is chunk 0, fetched when the body was opened."""

    def __init__(self, fetch: FetchChunk, count: int, first: bytes) -> None:
        self._fetch = fetch
        self._count = count
        self._next = 1
        self._chunk = first
        self._at = 0

    async def read(self, size: int) -> bytes:
        if size <= 0:
            raise ValueError(f"size must be positive: {size}")
        pieces: list[bytes] = []
        wanted = size
        while wanted:
            if self._at >= len(self._chunk):
                if self._next >= self._count:
                    break
                self._chunk = await self._fetch(self._next)
                self._next += 1
                self._at = 0
            piece = self._chunk[self._at : self._at + wanted]
            self._at += len(piece)
            wanted -= len(piece)
            pieces.append(piece)
        return b"".join(pieces)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._pieces()

    async def _pieces(self) -> AsyncIterator[bytes]:
        while piece := await self.read(BODY_READ_SIZE):
            yield piece


class ChunkFile(io.RawIOBase):
    """The blocking side for worker threads: ``fetch`` waits for a chunk from the loop."""

    def __init__(self, fetch: Callable[[int], bytes], count: int, first: bytes) -> None:
        super().__init__()
        self._fetch = fetch
        self._count = count
        self._next = 1
        self._chunk = memoryview(first)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._chunk:
            if self._next >= self._count:
                return 0
            self._chunk = memoryview(self._fetch(self._next))
            self._next += 1
        size = min(len(buffer), len(self._chunk))
        buffer[:size] = self._chunk[:size]
        self._chunk = self._chunk[size:]
        return size


def _wait_on(loop: asyncio.AbstractEventLoop, coroutine: Any) -> Any:
    """Run ``coroutine`` on the store's loop from a worker thread and wait for it."""
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result()


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
