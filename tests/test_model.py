"""Address formatting: a local part is written as a Dot-string when it is one, else quoted."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailwright.model import Address

ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"


def is_dot_string(local: str) -> bool:
    """RFC 5321 4.1.2 Dot-string, with non-ASCII as atext (RFC 6531), spelled out plainly."""
    atoms = local.split(".")
    return all(atoms) and all(c in ATEXT or ord(c) > 127 for atom in atoms for c in atom)


@pytest.mark.parametrize(
    ("local", "written"),
    [
        ("alice", "alice@example.test"),
        ("first.last", "first.last@example.test"),
        ("o'neil+tag", "o'neil+tag@example.test"),
        ("jöran", "jöran@example.test"),
        ("two words", '"two words"@example.test'),
        (".lead", '".lead"@example.test'),
        ("trail.", '"trail."@example.test'),
        ("a..b", '"a..b"@example.test'),
        ('say "hi"', '"say \\"hi\\""@example.test'),
        ("back\\slash", '"back\\\\slash"@example.test'),
        ("", '""@example.test'),
    ],
)
def test_local_part_is_quoted_only_when_it_must_be(local: str, written: str) -> None:
    assert str(Address(local, "example.test")) == written


@given(st.text(alphabet=ATEXT + ' ."\\@\x7f\u00e9\u4e2d\U0001f600', max_size=12))
def test_quoting_matches_the_dot_string_grammar(local: str) -> None:
    text = str(Address(local, "example.test"))
    assert text.endswith("@example.test")
    assert text.startswith('"') != is_dot_string(local)
