"""A real PostgreSQL for the tests: a fresh database per test module, dropped afterwards.

The server comes from MAILWRIGHT_TEST_PG_URL (default
postgresql://postgres@127.0.0.1:5432/test); where none answers, the tests
that need it skip with a reason starting "needs " (a failure under CI).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from mailwright.queue.postgresql import DatabaseAddress, PostgresQueueStore

DEFAULT_TEST_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def server_url() -> str:
    return os.environ.get("MAILWRIGHT_TEST_PG_URL", DEFAULT_TEST_PG_URL)


def url_of(database: str) -> str:
    """The test server's URL with another database name."""
    parts = conninfo_to_dict(server_url())
    parts["dbname"] = database
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host', 'localhost')}{port}/{database}"


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """CREATE a database of a random name; its URL; DROP it (its sessions ended) after."""
    try:
        admin = psycopg.connect(server_url(), autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        pytest.skip(f"needs PostgreSQL at {server_url()} (MAILWRIGHT_TEST_PG_URL): {exc}")
    name = f"mailwright_test_{secrets.token_hex(6)}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield url_of(name)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def empty_queue(url: str) -> None:
    """Remove every message and node of a queue database (the schema stays)."""
    with psycopg.connect(url, autocommit=True) as connection:
        exists = connection.execute("SELECT to_regclass('messages') IS NOT NULL").fetchone()
        if exists and exists[0]:
            connection.execute("TRUNCATE messages, recipients, body_chunks, attempts, nodes")


def pg_store(
    url: str, data_dir: Path, *, node: str = "node-a", lease_seconds: float = 60.0
) -> PostgresQueueStore:
    return PostgresQueueStore(
        DatabaseAddress(url), node=node, data_dir=data_dir, lease_seconds=lease_seconds
    )


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """A fresh queue database for one test module (import this fixture into the module)."""
    with fresh_database() as url:
        yield url
