"""config/reload.py: which keys a running server takes from its file read again."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from mailwright.config import load_config
from mailwright.config.reload import RESTART_KEYS, merge, reread, value_at
from mailwright.config.schema import DEFAULTS
from mailwright.errors import ConfigError
from tests.helpers import BASE_CONFIG, make_config

WITH_ERIN = BASE_CONFIG.replace(
    '"dave@example.test" = {}', '"dave@example.test" = {}\n"erin@example.test" = {}'
)


def test_keys_that_need_a_restart_keep_their_running_values_and_are_named(
    tmp_path: Path,
) -> None:
    running = make_config(tmp_path)
    changed = WITH_ERIN.replace('data_dir = "data"', 'data_dir = "elsewhere"').replace(
        '"127.0.0.1:0"', '"127.0.0.1:2526"'
    )
    new = make_config(tmp_path, "[queue]\nretry = [5]\nmin_free_space = 0\n", base=changed)
    result = merge(running, new)
    assert result.needs_restart == ("data_dir", "smtp.listen", "queue.retry")
    config = result.config
    assert config.data_dir == running.data_dir and config.smtp.listen == running.smtp.listen
    assert config.queue.retry == running.queue.retry
    # What a running server can apply comes from the new file.
    assert "erin@example.test" in config.mailboxes
    assert config.queue.min_free_space.off


def test_an_unchanged_file_needs_no_restart(tmp_path: Path) -> None:
    assert merge(make_config(tmp_path), make_config(tmp_path)).needs_restart == ()


def test_running_values_that_no_longer_fit_the_file_are_refused(tmp_path: Path) -> None:
    """A running submission listener needs [tls]: a file without it does not check."""
    base = make_config(tmp_path)
    listening = replace(base, submission=replace(base.submission, listen=("127.0.0.1:0",)))
    with pytest.raises(ConfigError) as caught:
        merge(listening, base)
    assert caught.value.key == "submission.listen"


def test_reread_reads_the_file_the_running_configuration_came_from(tmp_path: Path) -> None:
    path = tmp_path / "mailwright.toml"
    path.write_text(BASE_CONFIG)
    running = load_config(path)
    path.write_text(WITH_ERIN)
    assert "erin@example.test" in reread(running).config.mailboxes
    path.write_text(BASE_CONFIG + "\n[smtp.nonsense]\n")
    with pytest.raises(ConfigError):
        reread(running)


def test_every_restart_key_names_a_setting() -> None:
    for key in RESTART_KEYS:
        value_at(DEFAULTS, key)  # AttributeError for a key the schema does not have


def test_a_changed_admin_listener_or_token_file_needs_a_restart(tmp_path: Path) -> None:
    """The admin listener ([http]) is bound, and its token read, once at start: a reload
    that changed them must say so, not report the file applied while the old token still
    opens the API."""
    old_token, new_token = tmp_path / "old-token", tmp_path / "new-token"
    old_token.write_text("old\n")
    new_token.write_text("new\n")
    running = make_config(
        tmp_path, f'[http]\nlisten = "127.0.0.1:8025"\ntoken_file = "{old_token}"\n'
    )
    new = make_config(tmp_path, f'[http]\nlisten = "127.0.0.1:8026"\ntoken_file = "{new_token}"\n')
    result = merge(running, new)
    assert result.needs_restart == ("http",)
    assert result.config.http == running.http


def test_a_changed_queue_database_or_node_name_needs_a_restart(tmp_path: Path) -> None:
    """The queue store (its database, the node's name in leases) is built once at start."""
    running = make_config(
        tmp_path, '[queue]\nbackend = "postgresql"\nurl = "postgresql://mail@db1/q"\nnode = "a"\n'
    )
    new = make_config(
        tmp_path, '[queue]\nbackend = "postgresql"\nurl = "postgresql://mail@db2/q"\nnode = "b"\n'
    )
    result = merge(running, new)
    assert result.needs_restart == ("queue.url", "queue.node")
    assert result.config.queue == running.queue
