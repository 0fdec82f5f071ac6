"""``[http]``: off by default, a token file required beyond loopback (one line at start-up)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mailwright.config import parse_config
from mailwright.errors import ConfigError


def test_http_is_off_unless_listen_is_set(tmp_path: Path) -> None:
    config = parse_config("", source="test", base_dir=tmp_path)
    assert config.http.listen is None and config.http.token_file is None


@pytest.mark.parametrize("listen", ["0.0.0.0:8025", "[::]:8025", "192.0.2.1:8025", "mx.test:80"])
def test_listening_beyond_loopback_needs_a_token_file(tmp_path: Path, listen: str) -> None:
    with pytest.raises(ConfigError, match=r"not loopback: set http\.token_file"):
        parse_config(f'[http]\nlisten = "{listen}"\n', source="test", base_dir=tmp_path)
    (tmp_path / "token").write_text("t0ken\n")
    config = parse_config(
        f'[http]\nlisten = "{listen}"\ntoken_file = "token"\n', source="test", base_dir=tmp_path
    )
    assert config.http.token_file == tmp_path / "token"


@pytest.mark.parametrize("listen", ["127.0.0.1:8025", "[::1]:8025", "localhost:8025"])
def test_loopback_needs_no_token(tmp_path: Path, listen: str) -> None:
    config = parse_config(f'[http]\nlisten = "{listen}"\n', source="test", base_dir=tmp_path)
    assert config.http.listen == listen


def serve_once(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    """``mailwright serve`` on ``text``, for a configuration it must refuse (it exits)."""
    config = tmp_path / "mailwright.toml"
    config.write_text('data_dir = "data"\n' + text)
    return subprocess.run(
        [sys.executable, "-m", "mailwright", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_refuses_with_one_line(tmp_path: Path) -> None:
    run = serve_once(tmp_path, '[http]\nlisten = "0.0.0.0:0"\n')
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0
    assert "http.listen" in run.stderr and "token_file" in run.stderr


def test_an_empty_token_file_stops_the_start_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("\n")
    run = serve_once(tmp_path, '[http]\nlisten = "127.0.0.1:0"\ntoken_file = "token"\n')
    assert run.returncode == 1
    assert "mailwright: cannot start:" in run.stderr and "holds no token" in run.stderr
