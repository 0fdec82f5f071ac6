"""metrics.py: the values of several processes kept apart, each in files of its own pid."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client.multiprocess import MultiProcessCollector

#: Runs in a fresh interpreter: use_shared_directory changes prometheus_client's global
#: choice of value class, which must not leak into the other tests.
FORKING_PROCESS = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from mailwright.metrics import Metrics, use_shared_directory

    use_shared_directory(Path(sys.argv[1]))
    metrics = Metrics()
    metrics.messages.inc()
    child = os.fork()
    if child == 0:
        metrics.messages.inc(2)
        os._exit(0)
    _, status = os.waitpid(child, 0)
    metrics.messages.inc(4)
    print(os.getpid(), child, os.waitstatus_to_exitcode(status))
    """
)


def messages_in(path: Path) -> float:
    """mailwright_smtp_messages_total as kept in one process's file."""
    return sum(
        sample.value
        for metric in MultiProcessCollector.merge([str(path)])
        for sample in metric.samples
        if sample.name == "mailwright_smtp_messages_total"
    )


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_process_counts_into_files_of_its_own_pid(tmp_path: Path) -> None:
    """The pid is remembered, not asked at each increment: a fork must still be seen."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", FORKING_PROCESS, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    parent, child, status = (int(word) for word in done.stdout.split())
    assert status == 0
    assert messages_in(tmp_path / f"counter_{parent}.db") == 5
    assert messages_in(tmp_path / f"counter_{child}.db") == 2
