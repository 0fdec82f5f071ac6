"""ReadyFiles: empty files made ahead in a real directory, by a real thread pool."""

from __future__ import annotations

import concurrent.futures
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailwright.queue.sqlite.ready_files import ReadyFiles


@pytest.fixture
def pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as executor:
        yield executor


def test_files_are_made_ahead_handed_out_once_and_the_rest_removed_at_close(
    tmp_path: Path, pool: concurrent.futures.ThreadPoolExecutor
) -> None:
    ready = ReadyFiles(str(tmp_path), pool, keep=8)
    assert ready.take() is None  # none yet: this asks for them
    deadline = time.monotonic() + 30
    while len(os.listdir(tmp_path)) < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(os.listdir(tmp_path)) == 8
    taken = [ready.take() for _ in range(3)]
    assert all(path is not None and os.path.getsize(path) == 0 for path in taken)
    assert len(set(taken)) == 3
    pool.submit(lambda: None).result()  # the refill asked for meanwhile has run
    ready.close()
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(str(p)) for p in taken)


def test_a_directory_that_takes_no_file_gives_one_warning_not_one_per_message(
    tmp_path: Path,
    pool: concurrent.futures.ThreadPoolExecutor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ready = ReadyFiles(str(tmp_path / "gone"), pool, keep=8)
    with caplog.at_level(logging.WARNING, logger="mailwright.queue"):
        for _ in range(50):
            assert ready.take() is None
            pool.submit(lambda: None).result()  # let any refill asked for run
    warnings = [r.getMessage() for r in caplog.records if "ahead" in r.getMessage()]
    assert len(warnings) == 1 and "tried again in 30 s" in warnings[0]
    ready.close()
