"""``mailwright dkim keygen``: a private key only its owner reads, and a record dkimpy verifies."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import dkim
import pytest

from mailwright.cli import main
from mailwright.mailauth.dkim import load_signing_key, signature_header
from tests.dns_server import LoopbackDns
from tests.mailauth.dkimdns import dkim_dnsfunc

MESSAGE = (
    b"From: Alice <alice@example.test>\r\n"
    b"To: bob@elsewhere.test\r\n"
    b"Subject: hello\r\n"
    b"\r\n"
    b"Signed by a key keygen made.\r\n"
)


def keygen(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    os.chdir(tmp_path)
    status = main(["dkim", "keygen", *args])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(autouse=True)
def _keep_cwd():
    cwd = os.getcwd()
    yield
    os.chdir(cwd)


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_keygen_key_is_0600_and_its_record_verifies_a_signature(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], algorithm: str
) -> None:
    status, out, _ = keygen(tmp_path, capsys, "example.test", "s1", "--algorithm", algorithm)
    assert status == 0
    key_file = tmp_path / "example.test.s1.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    [line] = out.splitlines()
    assert line.startswith(f's1._domainkey.example.test. IN TXT "v=DKIM1; k={algorithm}; p=')
    assert all(len(piece) <= 255 for piece in line.split('"')[1::2])
    key = load_signing_key("example.test", "s1", key_file)
    signed = signature_header(MESSAGE, key) + MESSAGE
    dns = LoopbackDns(line)
    try:
        assert dkim.verify(signed, dnsfunc=dkim_dnsfunc(dns))
        assert not dkim.verify(signed.replace(b"hello", b"hullo"), dnsfunc=dkim_dnsfunc(dns))
    finally:
        dns.stop()


def test_rsa_record_of_2048_bits_is_split_into_255_octet_strings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = keygen(tmp_path, capsys, "example.test", "big", "--bits", "2048")
    assert status == 0
    pieces = out.strip().split('"')[1::2]
    assert len(pieces) == 2 and len(pieces[0]) == 255


def test_keygen_never_overwrites_a_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    existing = tmp_path / "mine.key"
    existing.write_bytes(b"published key")
    status, out, err = keygen(tmp_path, capsys, "example.test", "s1", "--out", "mine.key")
    assert status == 1
    assert out == ""
    assert "exists; not overwritten" in err
    assert existing.read_bytes() == b"published key"


def test_keygen_refuses_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert keygen(tmp_path, capsys, "not a domain", "s1")[0] == 2
    assert keygen(tmp_path, capsys, "example.test", "s1", "--bits", "512")[0] == 2
    status, _, err = keygen(
        tmp_path, capsys, "example.test", "s1", "--algorithm", "ed25519", "--bits", "2048"
    )
    assert status == 2 and "--bits is for RSA" in err
    assert list(tmp_path.iterdir()) == []


def test_keygen_key_is_private_even_with_an_open_umask(tmp_path: Path) -> None:
    """A separate process with umask 000: the mode comes from open(), not from the umask."""
    env = dict(os.environ)
    code = (
        "import os, sys; os.umask(0); from mailwright.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "dkim",
            "keygen",
            "example.test",
            "s9",
            "--algorithm",
            "ed25519",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert stat.S_IMODE((tmp_path / "example.test.s9.key").stat().st_mode) == 0o600
