"""The shared queue: PostgreSQL, for several mailwright nodes accepting and delivering one stream.

``PostgresQueueStore`` is the facade; the work is done by its parts, one per
concern, as in the SQLite store:

- ``connect``: the URL, the pool, psycopg's errors mapped to the queue's;
- ``schema``: the tables, their version and upgrades, made at open;
- ``writer.GroupCommitter``: enqueues that finish together share a commit;
- ``bodies``: spools, the large-body path, chunked reading;
- ``claims``: SKIP LOCKED claims with leases by node, results (batched like enqueues);
- ``admin``: list, get, retry, remove;
- ``node``: the node's name (a session advisory lock), LISTEN/NOTIFY, the lease upkeep;
- ``ids``: queue ids unique across hosts.

Roles, as for SQLite.  ``server``: the node's one delivering process; it
takes the node's name (refusing to start if a live node holds it), releases
the claims its own previous run left, listens for new mail and renews its
leases.  ``acceptor``: a receiving process of the same node; it only
enqueues.  ``admin``: ``mailwright queue``.  Only the server role holds a
name or leases.

A database that goes away: every operation fails with QueueUnavailable
(new mail gets 451 4.3.0, claims and results are tried again by delivery),
the pool replaces dead connections as soon as the database answers again,
and nothing that was acknowledged is lost: it was committed with
synchronous_commit on.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import BinaryIO

from psycopg_pool import AsyncConnectionPool, PoolTimeout

from mailwright.errors import QueueUnavailable, StorageError
from mailwright.model import NO_OPTIONS, Address, MailOptions
from mailwright.queue.base import (
    Attempt,
    BodyReader,
    BodySpool,
    QueuedMessage,
    QueueStats,
    RecipientResult,
    Target,
)
from mailwright.queue.postgresql import schema
from mailwright.queue.postgresql.admin import Admin
from mailwright.queue.postgresql.bodies import Bodies
from mailwright.queue.postgresql.claims import Claims
from mailwright.queue.postgresql.connect import (
    DEFAULT_CONNECT_WAIT,
    DatabaseAddress,
    connect,
    make_pool,
    storage_errors,
)
from mailwright.queue.postgresql.node import LeaseKeeper, NodeLink
from mailwright.queue.postgresql.writer import CommitStats, GroupCommitter
from mailwright.queue.spool import SpillingSpool
from mailwright.queue.sqlite.store import DEFAULT_MEMORY_SPOOL_LIMIT, StoreRole

logger = logging.getLogger("mailwright.queue.postgresql")

#: A claim protects a delivery this long; the node renews it while it lives.
DEFAULT_LEASE_SECONDS = 60.0
#: Connections of one store at most.  Every operation holds one for a query or a
#: transaction only (never for an SMTP conversation), so a few serve many deliveries.
DEFAULT_POOL_SIZE = 10
#: Messages in one group commit at most.
DEFAULT_MAX_BATCH = 500


class PostgresQueueStore:
    """A ``QueueStore`` (queue/base.py) in PostgreSQL, shared by the nodes of a cluster.

    ``data_dir`` holds only the spool of bodies being received (spool/tmp);
    everything queued is in the database.  ``node`` names this node in leases
    and logs.  ``on_new_mail`` (server role) is called when any node commits
    new mail or asks for a retry.
    """

    def __init__(
        self,
        address: DatabaseAddress,
        *,
        node: str,
        data_dir: Path,
        role: StoreRole = "server",
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        memory_spool_limit: int = DEFAULT_MEMORY_SPOOL_LIMIT,
        max_batch: int = DEFAULT_MAX_BATCH,
        pool_size: int = DEFAULT_POOL_SIZE,
        connect_wait: float = DEFAULT_CONNECT_WAIT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be positive: {lease_seconds}")
        self._address = address
        self._node = node
        self._role: StoreRole = role
        self._lease_seconds = lease_seconds
        self._pool_size = pool_size
        self._wait = connect_wait
        self._pool: AsyncConnectionPool | None = None
        self._stats = CommitStats()
        self._committer = GroupCommitter(
            self._open_pool, node, max_batch=max_batch, stats=self._stats
        )
        self._bodies = Bodies(
            tmp_dir=Path(data_dir) / "spool" / "tmp",
            pool=self._open_pool,
            committer=self._committer,
            node=node,
            clock=clock,
            memory_spool_limit=memory_spool_limit,
        )
        self._result_stats = CommitStats()
        self._claims = Claims(
            self._open_pool,
            node,
            lease_seconds,
            max_batch=max_batch,
            result_stats=self._result_stats,
        )
        self._admin = Admin(self._open_pool, node)
        self._link: NodeLink | None = None
        self._leases = LeaseKeeper(self._claims, lease_seconds, clock)
        self._on_new_mail: Callable[[], None] = lambda: None

    @property
    def node(self) -> str:
        return self._node

    @property
    def commit_stats(self) -> CommitStats:
        return self._stats

    @property
    def result_commit_stats(self) -> CommitStats:
        """How well ``record_result`` calls share commits (as ``commit_stats`` for enqueues)."""
        return self._result_stats

    def on_new_mail(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when any node commits new mail (LISTEN/NOTIFY; server role)."""
        self._on_new_mail = callback
        if self._link is not None:
            self._link.on_new_mail = callback

    def _open_pool(self) -> AsyncConnectionPool:
        if self._pool is None:
            raise StorageError("the queue store is not open")
        return self._pool

    # ------------------------------------------------------------ open / close

    async def open(self) -> None:
        """Create or upgrade the schema, open the pool; the server role takes the node's name.

        Raises QueueUnavailable when the database cannot be reached now, StorageError
        when the schema is newer than this code or another live node has this name.
        """
        if self._pool is not None:
            raise StorageError("the queue store is already open")
        connection = await connect(self._address, self._wait)
        try:
            async with storage_errors(f"cannot prepare the queue in {self._address.shown()}"):
                await schema.prepare(connection, self._address.shown())
        finally:
            await connection.close()
        pool = make_pool(self._address, self._pool_size, self._wait)
        try:
            await pool.open(wait=True, timeout=self._wait)
        except PoolTimeout:
            await pool.close()
            raise QueueUnavailable(
                f"cannot reach the queue's database {self._address.shown()}"
            ) from None
        self._pool = pool
        try:
            if self._role == "server":
                link = NodeLink(self._address, self._node, self._wait, self._on_new_mail)
                await link.start()
                self._link = link
                released = await self._claims.release()
                if released:
                    logger.info(
                        "queue: released %d claims of node %s's previous run; they are due again",
                        released,
                        self._node,
                    )
                self._leases.start()
            self._committer.start()
            self._claims.results.start()
            self._bodies.start(receives=self._role != "admin", clean=self._role == "server")
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Commit what was submitted, end this node's claims (other nodes may take them at
        once), give up the node's name and close the connections."""
        if self._pool is None:
            return
        await self._committer.stop()
        await self._claims.results.stop()
        await self._leases.stop()
        self._bodies.stop()
        if self._link is not None:
            with contextlib.suppress(StorageError):
                await self._claims.release()
            await self._link.stop()
            self._link = None
        pool, self._pool = self._pool, None
        await pool.close()

    # ------------------------------------------------------------ receiving

    def new_spool(self, local_prefix: bytes = b"") -> SpillingSpool:
        """Up to ``memory_spool_limit`` octets in memory, then a file in data_dir/spool/tmp.
        ``local_prefix`` is ignored: bodies are kept in the database, every copy written."""
        return self._bodies.new_spool()

    async def enqueue(
        self,
        sender: Address | None,
        targets: Sequence[Target],
        body: BodySpool,
        options: MailOptions = NO_OPTIONS,
    ) -> str:
        """Store the message (committed with synchronous_commit on) and return its queue id.

        Bodies in memory share a group commit; a spilled body is copied in a
        transaction of its own.  QueueUnavailable when the database cannot be
        reached; StorageError for other failures; either way nothing of the
        message is visible.  Cancelled while the commit is under way, the
        message may still be stored: it was never acknowledged.
        """
        return await self._bodies.enqueue(sender, targets, body, options)

    # ------------------------------------------------------------ delivering

    async def claim_due(self, now: float, limit: int) -> list[QueuedMessage]:
        """Claim up to ``limit`` messages with recipients due at ``now``, earliest due first.

        Each claimed recipient is leased to this node until ``now + lease_seconds``,
        renewed while the node runs.
        """
        return await self._claims.claim_due(now, limit)

    async def record_result(self, queue_id: str, index: int, result: RecipientResult) -> None:
        """Record one attempt, end its claim; remove the message once all are final.

        Results recorded at once share one transaction (claims.ResultBatcher).
        """
        await self._claims.record_result(queue_id, index, result)

    async def mark_delay_reported(self, queue_id: str, indexes: Sequence[int]) -> None:
        """Set ``delay_reported`` of these recipients, committed with synchronous_commit on,
        so that no crash ever makes a second "delayed" report."""
        await self._claims.mark_delay_reported(queue_id, indexes)

    def read_body(self, queue_id: str) -> AbstractAsyncContextManager[BodyReader]:
        """The stored body, fetched one chunk (256 KiB) at a time."""
        return self._bodies.read_body(queue_id)

    def open_body(self, queue_id: str) -> BinaryIO:
        """The stored body for a worker thread; each chunk is fetched on the store's loop."""
        return self._bodies.open_body(queue_id)

    # ------------------------------------------------------------ administration

    async def get(self, queue_id: str) -> QueuedMessage | None:
        return await self._admin.get(queue_id)

    async def remove(self, queue_id: str) -> bool:
        return await self._admin.remove(queue_id)

    async def retry_now(self, queue_id: str | None = None) -> int:
        """Make pending recipients due now (claims are left alone) and wake every node."""
        return await self._admin.retry_now(queue_id)

    async def retry_domain(self, domain: str) -> int:
        """Make the pending remote recipients at ``domain`` due now; returns how many."""
        return await self._admin.retry_domain(domain)

    async def hold(self, queue_id: str) -> int | None:
        """QUEUED and DEFERRED recipients not being delivered now go on hold (how many)."""
        return await self._admin.hold(queue_id)

    async def release(self, queue_id: str) -> int | None:
        """Held recipients back to QUEUED or DEFERRED, on their schedule (how many)."""
        return await self._admin.release(queue_id)

    async def page(
        self, *, state: str | None, domain: str | None, limit: int, after: str | None
    ) -> list[QueuedMessage]:
        """Messages with a recipient in ``state`` at ``domain``, after ``after``, oldest first."""
        return await self._admin.page(state=state, domain=domain, limit=limit, after=after)

    async def history(self, queue_id: str) -> list[Attempt]:
        """The delivery attempts of a message still in the queue, oldest first."""
        return await self._admin.history(queue_id)

    async def stats(self) -> QueueStats:
        """Messages by state (held, deferred, queued) and the oldest arrival."""
        return await self._admin.stats()

    async def check_writable(self) -> None:
        """The database answers and takes writes (``/readyz``); StorageError when not."""
        await self._admin.check_writable()

    # Last, so that the name ``list`` in annotations above means the builtin.
    async def list(self) -> list[QueuedMessage]:
        """Every message still in the queue, oldest first, with all its recipients."""
        return await self._admin.list_all()
