"""Per-client limits count an IPv4 address alone and an IPv6 client by its /64."""

from __future__ import annotations

import pytest

from mailwright.policy.clientkey import client_key


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),  # a v4 client on a dual-stack socket
        ("fe80::1%eth0", "fe80::/64"),
        ("?", "?"),
    ],
)
def test_client_key(host: str, key: str) -> None:
    assert client_key(host) == key
