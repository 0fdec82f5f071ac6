"""client_key: one key per IPv4 address, per IPv6 /64, for every per-client limit."""

from __future__ import annotations

import pytest

from mailwright.policy.clientkey import client_key


@pytest.mark.parametrize(
    ("ip", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),  # IPv4 seen through an IPv6 socket
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::1", "::/64"),
        ("?", "?"),  # not an IP address: still one client, never an error
    ],
)
def test_client_key(ip: str, key: str) -> None:
    assert client_key(ip) == key


def test_addresses_of_one_ipv6_64_are_one_client_and_the_next_64_another() -> None:
    assert client_key("2001:db8:0:7::1") == client_key("2001:db8:0:7:a:b:c:d")
    assert client_key("2001:db8:0:7::1") != client_key("2001:db8:0:8::1")
    assert client_key("192.0.2.1") != client_key("192.0.2.2")
