"""scrypt password hashes: format, verification, and `mailwright passwd`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mailwright.passwords import (
    DEFAULT_LOG2_N,
    HASH_BYTES,
    SALT_BYTES,
    hash_password,
    parse_hash,
    verify_password,
)

FAST = {"log2_n": 10}  # the smallest cost a configuration accepts: quick tests


def test_a_hash_records_its_parameters_salt_and_digest() -> None:
    text = hash_password("correct horse", **FAST)
    assert text.startswith("$scrypt$ln=10,r=8,p=1$")
    parsed = parse_hash(text)
    assert (parsed.log2_n, parsed.r, parsed.p) == (10, 8, 1)
    assert len(parsed.salt) == SALT_BYTES and len(parsed.digest) == HASH_BYTES
    assert parsed.format() == text


def test_the_default_cost_is_memory_hard() -> None:
    assert parse_hash(hash_password("x")).log2_n == DEFAULT_LOG2_N == 15


def test_each_hash_has_its_own_salt() -> None:
    assert hash_password("same", **FAST) != hash_password("same", **FAST)


def test_verify_accepts_the_password_and_nothing_else() -> None:
    text = hash_password("pässwörd", **FAST)
    assert verify_password("pässwörd", text)
    assert not verify_password("passwörd", text)
    assert not verify_password("", text)
    assert not verify_password("pässwörd ", text)


def test_a_known_hash_verifies() -> None:
    """The format is stable: a hash made once keeps working."""
    text = (
        "$scrypt$ln=10,r=8,p=1$MDEyMzQ1Njc4OWFiY2RlZg$S7FwBvpu+z8K0PUVUagFRTUAB2dAxIZpzVHvLZir+98"
    )
    assert verify_password("secret", text)
    assert hash_password("secret", log2_n=10, salt=b"0123456789abcdef") == text


def test_an_unknown_user_never_verifies() -> None:
    assert not verify_password("anything", None)


def test_the_repr_of_a_parsed_hash_shows_no_digest() -> None:
    parsed = parse_hash(hash_password("x", **FAST))
    assert repr(parsed) == "ScryptHash(ln=10, r=8, p=1)"


@pytest.mark.parametrize(
    "text",
    [
        "secret",
        "$scrypt$",
        "$scrypt$ln=10,r=8,p=1$$",
        "$scrypt$ln=9,r=8,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + "A" * 43,
    ],
)
def test_malformed_hashes_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_hash(text)


def run_passwd(stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailwright", "passwd"],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_passwd_reads_one_line_from_stdin_and_prints_a_hash() -> None:
    result = run_passwd("hunter2\nignored\n")
    assert result.returncode == 0, result.stderr
    text = result.stdout.strip()
    assert verify_password("hunter2", text)
    assert "hunter2" not in result.stdout + result.stderr


def test_passwd_refuses_an_empty_password() -> None:
    result = run_passwd("\n")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "empty password" in result.stderr


def run_passwd_on_a_terminal(*answers: str) -> tuple[int, str]:
    """Run ``mailwright passwd`` on a pseudo-terminal, answering each prompt in turn."""
    import os
    import pty
    import select
    import signal

    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execv(sys.executable, [sys.executable, "-m", "mailwright", "passwd"])
    output = b""
    answered = 0
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], 30)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"passwd stopped answering: {output!r}")
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
            prompts = output.count(b"Password")
            if answered < len(answers) and prompts > answered and output.endswith(b": "):
                os.write(fd, answers[answered].encode() + b"\n")
                answered += 1
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), output.decode(errors="replace")


def test_passwd_on_a_terminal_asks_twice_without_echo() -> None:
    code, output = run_passwd_on_a_terminal("s3cret", "s3cret")
    assert code == 0, output
    assert "Password:" in output and "Password again:" in output
    assert "s3cret" not in output
    hash_line = next(line for line in output.splitlines() if line.startswith("$scrypt$"))
    assert verify_password("s3cret", hash_line.strip())


def test_passwd_on_a_terminal_refuses_two_different_passwords() -> None:
    code, output = run_passwd_on_a_terminal("s3cret", "s3cre7")
    assert code == 1
    assert "the passwords differ" in output
    assert "$scrypt$" not in output
