"""The free-space reserve (issue 12, item 15): MAIL gets 452 4.3.1 before any data is taken.

The fill-and-free test runs on a real 8 MiB tmpfs (we mount it: it needs root);
the SIZE= test needs no mount: it declares more than the real disk has free.
"""

from __future__ import annotations

import os
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailwright.queue.space import disk_space
from tests.helpers import (
    BASE_CONFIG,
    RunningServer,
    maildir_messages,
    make_config,
    mounted_tmpfs,
    wait_for,
)

SMALL_DISK = 8 << 20


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs: a real file system whose free space the test controls."""
    with mounted_tmpfs(tmp_path / "disk", SMALL_DISK) as disk:
        yield disk


def mail_from(server: RunningServer, size: int | None = None) -> tuple[int, bytes]:
    with smtplib.SMTP(server.host, server.port, timeout=10) as s:
        s.ehlo()
        return s.mail("someone@remote.test", [f"SIZE={size}"] if size is not None else [])


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root and a tmpfs mount")
def test_below_the_reserve_mail_gets_452_until_space_is_freed(
    small_disk: Path, tmp_path: Path
) -> None:
    base = BASE_CONFIG.replace('data_dir = "data"', f'data_dir = "{small_disk}"')
    server = RunningServer(make_config(tmp_path, '[queue]\nmin_free_space = "50%"', base=base))
    try:
        assert mail_from(server) == (250, b"2.1.0 Ok")
        # Leave 3 MiB free: still plenty for a message, but below the 4 MiB reserve.
        filler = small_disk / "filler"
        filler.write_bytes(b"\0" * (disk_space(small_disk).free - (3 << 20)))
        assert mail_from(server) == (452, b"4.3.1 Insufficient system storage; try again later")
        assert mail_from(server, size=1000)[0] == 452
        filler.unlink()
        assert mail_from(server) == (250, b"2.1.0 Ok")
        with smtplib.SMTP(server.host, server.port, timeout=10) as s:
            s.sendmail("someone@remote.test", ["postmaster@example.test"], "Subject: back\r\n\r\n")
        wait_for(lambda: maildir_messages(small_disk, "postmaster@example.test"))
    finally:
        server.stop()


def test_a_size_larger_than_the_room_above_the_reserve_gets_452(
    server_factory, tmp_path: Path
) -> None:
    """RFC 1870 6.1 (1): 452 when the declared size does not fit now (552 is for the maximum)."""
    free = disk_space(tmp_path).free
    # The maximum is far above the free space, so only the room can refuse the SIZE.
    listen = 'listen = ["127.0.0.1:0"]'
    server = server_factory(
        base=BASE_CONFIG.replace(listen, f"{listen}\nmax_message_size = {free * 4}")
    )
    assert mail_from(server, size=free * 2) == (
        452,
        b"4.3.1 Insufficient system storage for a message of the declared SIZE; try again later",
    )
    assert mail_from(server, size=free * 5)[0] == 552  # over the maximum: permanent
    assert mail_from(server, size=1000) == (250, b"2.1.0 Ok")
