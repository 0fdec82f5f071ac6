"""The one grammar of addresses, domains and host:port that protocol, config and tools share."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailwright.syntax import (
    address_literal_key,
    is_domain_name,
    is_dot_string,
    is_safe_local_part,
    is_valid_address_literal,
    is_valid_domain,
    split_host_port,
)

NAME_CHARS = "abcAZ09-._\n é"


@given(st.text(alphabet=NAME_CHARS, max_size=20))
def test_every_name_configuration_accepts_the_protocol_accepts(text: str) -> None:
    """A configured domain that a client could not name in RCPT TO would be unreachable."""
    if is_domain_name(text):
        assert is_valid_domain(text)
        assert is_valid_domain(text.upper())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example.test", True),
        ("xn--bcher-kva.example", True),
        ("Example.test", False),  # configuration stores the lower-case form
        ("example.test.", False),
        ("a..test", False),
        ("-a.test", False),
        ("exa_mple.test", False),
        ("bücher.example", False),
        ("example.test\n", False),
        ("a" * 64 + ".test", False),
        ("", False),
    ],
)
def test_domain_names_are_lower_case_ldh_labels(text: str, expected: bool) -> None:
    assert is_domain_name(text) is expected


@pytest.mark.parametrize(
    ("text", "helo", "expected"),
    [("Mail_Host.example.", True, True), ("Mail_Host.example.", False, False)],
)
def test_helo_names_may_carry_an_underscore_and_a_trailing_dot(
    text: str, helo: bool, expected: bool
) -> None:
    assert is_valid_domain(text, helo=helo) is expected


def test_one_ipv6_literal_has_one_key_however_it_is_spelled() -> None:
    spellings = ["[IPv6:2001:DB8::1]", "[ipv6:2001:db8:0::1]", "[IPV6:2001:0db8::0001]"]
    assert all(is_valid_address_literal(s) for s in spellings)
    assert {address_literal_key(s) for s in spellings} == {"[ipv6:2001:db8::1]"}
    assert address_literal_key("[192.0.2.1]") == "[192.0.2.1]"


@pytest.mark.parametrize(
    "literal", ["[]", "[example.test]", "[IPv6:192.0.2.1]", "[1.2.3]", "1.2.3.4"]
)
def test_malformed_address_literals_are_refused(literal: str) -> None:
    assert not is_valid_address_literal(literal)


def test_non_ascii_local_parts_are_dot_strings_only_with_utf8() -> None:
    assert is_dot_string("jöran")
    assert not is_dot_string("jöran", utf8=False)
    assert is_dot_string("o'neil+tag", utf8=False)
    assert not is_dot_string("a..b")


@pytest.mark.parametrize(
    ("local_part", "safe"),
    [
        ("first.last", True),
        ("ünï", True),
        ("..", False),
        ("a/b", False),
        (".a", False),
        ("a\x00", False),
    ],
)
def test_safe_local_parts_cannot_leave_their_directory(local_part: str, safe: bool) -> None:
    assert is_safe_local_part(local_part) is safe


def test_host_port_refuses_a_host_with_a_line_break() -> None:
    with pytest.raises(ValueError, match="not a host name or IP address"):
        split_host_port("relay.test\n", default_port=25)
