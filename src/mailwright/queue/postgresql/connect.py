"""Reaching the queue's PostgreSQL: the connection string, the pool, and its errors mapped once.

Why psycopg 3 (async) with psycopg_pool rather than asyncpg: psycopg speaks
libpq, so the URL, ``PGPASSWORD``, ``~/.pgpass``, ``sslmode`` and the other
libpq settings an operator already knows work unchanged, and the URL is
checked at configuration time by libpq's own parser; its pool checks a
connection before handing it out and replaces broken ones with back-off, which
is what "the database went away and came back" needs.  asyncpg is faster per
query, but the queue's cost is the commit (fsync), not the driver.

Every psycopg error is mapped here, in one place (``storage_errors``), to the
queue's own: a connection that cannot be had or was cut is
``QueueUnavailable`` (temporary: 451 for new mail, deliveries pause), anything
else the database refuses is a ``StorageError``.
"""

from __future__ import annotations

import contextlib
import select
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from mailwright.errors import QueueUnavailable, StorageError

#: Seconds to wait for a connection (at start-up, and for each operation while the
#: database is away) before the operation fails as temporary: an SMTP client at the end
#: of DATA then gets 451 within this long, rather than waiting for its own timeout.
DEFAULT_CONNECT_WAIT = 5.0


@dataclass(frozen=True, slots=True)
class DatabaseAddress:
    """Where the queue's database is: the URL, the password kept apart (never shown)."""

    url: str
    password: str | None = field(default=None, repr=False)
    #: ``application_name`` of our connections: pg_stat_activity shows which node is which.
    application_name: str = "mailwright"

    @classmethod
    def from_settings(
        cls, url: str, password_file: Path | None, application_name: str
    ) -> DatabaseAddress:
        """The URL of ``[queue] url`` and the first line of ``password_file``, if any.

        Without a file libpq takes PGPASSWORD (or ~/.pgpass) by itself.
        """
        password = None
        if password_file is not None:
            try:
                password = password_file.read_text().splitlines()[0] or None
            except (OSError, IndexError, UnicodeDecodeError) as exc:
                raise StorageError(f"cannot read the queue's password_file: {exc}") from None
        return cls(url, password, application_name)

    def conninfo(self) -> str:
        """The connection string for libpq (it may hold the password: never log it)."""
        extra: dict[str, Any] = {"application_name": self.application_name}
        if self.password is not None:
            extra["password"] = self.password
        return make_conninfo(self.url, **extra)

    def shown(self) -> str:
        """The database as logs may show it: user@host:port/dbname, no password."""
        parts = conninfo_to_dict(self.url)
        user = f"{parts['user']}@" if parts.get("user") else ""
        port = f":{parts['port']}" if parts.get("port") else ""
        return f"{user}{parts.get('host', 'localhost')}{port}/{parts.get('dbname', '')}"


async def connect(address: DatabaseAddress, wait: float) -> psycopg.AsyncConnection[Any]:
    """One connection of its own (autocommit); QueueUnavailable, with libpq's words, if none."""
    try:
        return await psycopg.AsyncConnection.connect(
            address.conninfo(), autocommit=True, connect_timeout=max(1, round(wait))
        )
    except psycopg.Error as exc:
        raise QueueUnavailable(
            f"cannot reach the queue's database {address.shown()}: {first_line(exc)}"
        ) from None


def make_pool(address: DatabaseAddress, size: int, wait: float) -> AsyncConnectionPool:
    """The store's pool (opened by the caller).  Each connection is looked at when taken
    (``check_idle_connection``), so one cut while idle is replaced, not used."""
    return AsyncConnectionPool(
        address.conninfo(),
        min_size=1,
        max_size=size,
        open=False,
        kwargs={"autocommit": True},
        check=check_idle_connection,
        timeout=wait,
        name="mailwright-queue",
    )


async def check_idle_connection(connection: psycopg.AsyncConnection[Any]) -> None:
    """Raise if a connection taken from the pool was cut while it was idle.

    An idle pooled connection receives nothing unasked, so if its socket is
    readable the server said something: the FATAL message and end of stream of
    a restart or pg_terminate_backend.  Only then is a round trip spent to ask
    (psycopg_pool's check would spend one on every use: measured, it was a
    tenth of the delivery path).  A server that vanished without a word is
    found by the operation itself, which then fails as QueueUnavailable.
    """
    if connection.closed:
        raise psycopg.OperationalError("the connection is closed")
    readable, _, _ = select.select([connection.fileno()], [], [], 0)
    if readable:
        await AsyncConnectionPool.check_connection(connection)


@contextlib.asynccontextmanager
async def storage_errors(what: str) -> AsyncIterator[None]:
    """Map the database's errors to the queue's: ``what`` failed, and why."""
    try:
        yield
    except PoolClosed:
        raise StorageError(f"{what}: the queue store is closed") from None
    except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as exc:
        raise QueueUnavailable(
            f"{what}: the queue's database is unavailable ({first_line(exc)})"
        ) from exc
    except psycopg.Error as exc:
        raise StorageError(f"{what}: {first_line(exc)}") from exc


#: The pool of an open store; raises StorageError when the store is not open.
PoolOf = Callable[[], AsyncConnectionPool]


@contextlib.asynccontextmanager
async def pooled(
    pool: PoolOf, what: str, *, synchronous_commit: bool | None = None, pipeline: bool = True
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A pooled connection for one operation, its errors mapped (``storage_errors``).

    ``synchronous_commit`` given: inside a transaction with that setting
    (on: the commit returns once its WAL is flushed; off: bookkeeping whose
    loss only repeats work), in pipeline mode unless ``pipeline`` is false (COPY
    cannot run in one); None: autocommit.
    """
    async with storage_errors(what), pool().connection() as connection:
        if synchronous_commit is None:
            yield connection
            return
        # Pipeline mode: BEGIN, the setting and the statements up to the first result the
        # caller reads leave in one round trip, and so do COMMIT and what follows that read.
        # (A cursor's rowcount is known once the pipeline has synced: after the block.)
        async with contextlib.AsyncExitStack() as stack:
            if pipeline:
                await stack.enter_async_context(connection.pipeline())
            await stack.enter_async_context(connection.transaction())
            setting = "on" if synchronous_commit else "off"
            await connection.execute(f"SET LOCAL synchronous_commit = {setting}")
            yield connection


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
