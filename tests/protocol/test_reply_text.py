"""Reply text that came from a peer: cleaned before it is kept, escaped when quoted (core)."""

from __future__ import annotations

import pytest

from mailwright.protocol.reply import ERROR_EXCERPT, excerpt, printable_text


@pytest.mark.parametrize(
    ("text", "cleaned"),
    [
        ("250 2.0.0 Ok: queued as 4Xy", "250 2.0.0 Ok: queued as 4Xy"),
        ("red\x1b[31malert", "red[31malert"),  # ESC: a terminal escape loses its teeth
        ("nul\x00byte, bell\x07, del\x7f", "nulbyte, bell, del"),
        ("c1 \x9b2J csi", "c1 2J csi"),  # the one-octet CSI of C1
        ("one\x85two", "one two"),  # NEL
        ("one\u2028two\u2029three", "one two three"),  # line and paragraph separators
        ("tab\there\x0bvt\x0cff", "tab here vt ff"),
        ("abc\u202edcba", "abcdcba"),  # a right-to-left override
        ("Grüße, 你好", "Grüße, 你好"),  # printable non-ASCII stays
        ("no\u00a0break", "no break"),
    ],
)
def test_printable_text_takes_out_what_a_terminal_or_a_line_splitter_obeys(
    text: str, cleaned: str
) -> None:
    assert printable_text(text) == cleaned
    assert printable_text(text).isprintable()
    assert len(printable_text(text).splitlines()) == 1


def test_excerpt_is_escaped_and_bounded() -> None:
    assert excerpt(b"\x1b[2Jhi\r\n") == "b'\\x1b[2Jhi\\r\\n'"
    assert excerpt("a\u2028b") == "'a\\u2028b'"
    long = excerpt(b"x" * 10_000)
    assert long == repr(b"x" * ERROR_EXCERPT) + "..."
