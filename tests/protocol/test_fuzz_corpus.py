"""Every input the fuzzer kept (fuzz/corpus/) replayed as a regression test of the server core."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORPUS = sorted((ROOT / "fuzz" / "corpus").iterdir())


def _target():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("fuzz_server", ROOT / "fuzz" / "fuzz_server.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.run_one


RUN_ONE = _target()


def test_corpus_is_not_empty() -> None:
    assert len(CORPUS) >= 3


@pytest.mark.parametrize("path", CORPUS, ids=[p.name[:16] for p in CORPUS])
def test_corpus_input_runs_clean(path: Path) -> None:
    data = path.read_bytes()
    replies = RUN_ONE(data)  # raises on any crash of the core: that is the regression caught
    # a complete command line always gets a reply: at least one when any CRLF came first
    if b"\r\n" in data.split(b"\xff", 1)[0][:512]:
        assert replies >= 1
