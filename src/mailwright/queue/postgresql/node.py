"""This node in the cluster: its name held, new mail heard, its leases kept.

``NodeLink`` keeps one connection of its own (outside the pool) for two jobs
that need a session that lasts:

- the node's name: a session advisory lock keyed by the node's row in
  ``nodes``.  A second process with the same ``[queue] node`` cannot take it,
  so it refuses to start (it would release or renew the first one's leases).
  PostgreSQL drops the lock when the session ends, so a node that dies
  (kill -9, a lost host) frees its name without anyone cleaning up;
- ``LISTEN`` on the new-mail channel: a commit on any node wakes this node's
  delivery worker at once.  A lost notification only delays: the worker also
  looks at the queue every few seconds (delivery/worker.py POLL_INTERVAL).

When that connection is cut (the database restarted, pg_terminate_backend),
the link reconnects with back-off, takes the name again, listens again and
wakes the worker once for whatever it missed.

``LeaseKeeper`` renews, every third of a lease, the leases of the deliveries
this node has under way (``Claims.renew``), so only a node that stopped
renewing (dead, or cut from the database for a whole lease) has its work
taken over, and a claim it never received (its answer lost with a cut
connection) lapses after one lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg

from mailwright.errors import QueueUnavailable, StorageError
from mailwright.queue.postgresql.claims import Claims
from mailwright.queue.postgresql.connect import DatabaseAddress, connect, first_line
from mailwright.queue.postgresql.schema import NODE_LOCK
from mailwright.queue.postgresql.writer import NEW_MAIL_CHANNEL

logger = logging.getLogger("mailwright.queue.postgresql")

#: Seconds ``NodeLink.stop`` waits for its listening task to end.
STOP_WAIT = 2.0
#: Seconds between attempts to reconnect: doubling from the first to the last.
RECONNECT_BACKOFF = (0.5, 10.0)


class NodeNameTaken(StorageError):
    """Another live node holds this node's name."""


class NodeLink:
    """The node's own connection: its name (an advisory lock) and LISTEN (see the module)."""

    def __init__(
        self, address: DatabaseAddress, node: str, wait: float, on_new_mail: Callable[[], None]
    ) -> None:
        self._address = address
        self._node = node
        self._wait = wait
        self.on_new_mail = on_new_mail
        self._connection: psycopg.AsyncConnection[Any] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Take the node's name and listen; NodeNameTaken or QueueUnavailable if not."""
        self._connection = await self._hold_name()
        self._task = asyncio.create_task(self._listen(), name="mailwright-queue-listen")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # Bounded: should psycopg absorb the cancellation (see LeaseKeeper.stop), closing
            # the connection below ends the wait for notifications anyway.
            await asyncio.wait({task}, timeout=STOP_WAIT)
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()  # ends the session: the name's lock goes with it

    async def _hold_name(self) -> psycopg.AsyncConnection[Any]:
        connection = await connect(self._address, self._wait)
        try:
            row = await (
                await connection.execute(
                    "INSERT INTO nodes (name) VALUES (%s) ON CONFLICT (name)"
                    " DO UPDATE SET name = EXCLUDED.name RETURNING id",
                    (self._node,),
                )
            ).fetchone()
            assert row is not None
            locked = await (
                await connection.execute("SELECT pg_try_advisory_lock(%s, %s)", (NODE_LOCK, row[0]))
            ).fetchone()
            if not (locked and locked[0]):
                raise NodeNameTaken(
                    f"another live mailwright node named {self._node!r} uses the queue in"
                    f" {self._address.shown()}; give each node its own [queue] node name"
                )
            await connection.execute("UPDATE nodes SET started_at = now() WHERE id = %s", (row[0],))
            await connection.execute(f"LISTEN {NEW_MAIL_CHANNEL}")
        except BaseException as exc:
            await connection.close()
            if isinstance(exc, psycopg.Error):
                raise QueueUnavailable(
                    f"cannot register node {self._node!r}: {first_line(exc)}"
                ) from None
            raise
        return connection

    async def _listen(self) -> None:
        while True:
            connection = self._connection
            try:
                if connection is None:
                    raise psycopg.OperationalError("not connected")
                async for _ in connection.notifies():
                    self.on_new_mail()
            except psycopg.Error as exc:
                logger.warning(
                    "queue: lost the node's connection to %s (%s); reconnecting",
                    self._address.shown(),
                    first_line(exc),
                )
            if connection is not None:
                with contextlib.suppress(psycopg.Error):
                    await connection.close()
            self._connection = None
            self._connection = await self._reconnect()
            self.on_new_mail()  # whatever was committed while we were away

    async def _reconnect(self) -> psycopg.AsyncConnection[Any]:
        pause, longest = RECONNECT_BACKOFF
        while True:
            await asyncio.sleep(pause)
            try:
                connection = await self._hold_name()
            except NodeNameTaken as exc:
                logger.error("queue: %s", exc)
            except QueueUnavailable as exc:
                logger.warning("queue: %s; trying again in %gs", exc, min(pause * 2, longest))
            else:
                logger.info("queue: the node's connection to %s is back", self._address.shown())
                return connection
            pause = min(pause * 2, longest)


class LeaseKeeper:
    """Renews the leases of this node's deliveries every third of a lease while the store
    is open."""

    def __init__(
        self, claims: Claims, lease_seconds: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._claims = claims
        self._interval = lease_seconds / 3
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.renewals = 0

    def start(self) -> None:
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="mailwright-queue-leases")

    async def stop(self) -> None:
        """Let a renewal under way finish, then end.  Not by cancelling: a cancellation
        that lands inside psycopg's pool may be absorbed there, and the task run on."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping.set()
            await task

    async def _run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)
                return
            try:
                await self._claims.renew(self._clock())
                self.renewals += 1
            except StorageError as exc:  # tried again at the next interval
                logger.warning("queue: %s", exc)
            except Exception:  # a bug: logged, and the leases are still renewed
                logger.exception("queue: renewing the leases failed")
