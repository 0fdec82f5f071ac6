"""DirectorySyncer: concurrent renames share directory fsyncs, and none returns uncovered."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from mailwright.durable import DirectorySyncer


class CountingSyncer(DirectorySyncer):
    """Records, for every real fsync, which renames had happened before it started."""

    def __init__(self) -> None:
        super().__init__()
        self.fsyncs: list[set[str]] = []
        self.renamed: set[str] = set()
        self.guard = threading.Lock()

    def _fsync(self, path: Path) -> None:
        with self.guard:
            covered = set(self.renamed)
        super()._fsync(path)
        with self.guard:
            self.fsyncs.append(covered)


def test_concurrent_renames_share_fsyncs_and_each_is_covered(tmp_path: Path) -> None:
    syncer = CountingSyncer()
    new = tmp_path / "new"
    new.mkdir()
    errors: list[str] = []

    def deliver(n: int) -> None:
        for i in range(20):
            name = f"m{n}-{i}"
            (tmp_path / name).write_bytes(b"x")
            os.rename(tmp_path / name, new / name)
            with syncer.guard:
                syncer.renamed.add(name)
            syncer.sync(new)
            with syncer.guard:
                if not any(name in covered for covered in syncer.fsyncs):
                    errors.append(name)

    threads = [threading.Thread(target=deliver, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []  # every caller returned only after an fsync that started after its rename
    assert len(os.listdir(new)) == 160


def test_a_lone_caller_gets_its_own_fsync(tmp_path: Path) -> None:
    syncer = CountingSyncer()
    syncer.sync(tmp_path)
    syncer.sync(tmp_path)
    assert len(syncer.fsyncs) == 2
