"""Relay permission: networks and authentication; sender ownership."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailwright.config import parse_config
from mailwright.model import Address
from mailwright.policy import RelayPolicy


@pytest.fixture(scope="module")
def policy() -> RelayPolicy:
    config = parse_config(
        '[relay]\nnetworks = ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]\n',
        source="test",
        base_dir=Path("/srv"),
    )
    return RelayPolicy(config)


@pytest.mark.parametrize(
    "peer", ["10.1.2.3", "192.0.2.7", "2001:db8::1", "::ffff:10.9.9.9", "2001:DB8::abcd"]
)
def test_peers_in_relay_networks_may_relay(policy, peer):
    assert policy.may_relay(peer, None)


@pytest.mark.parametrize(
    "peer", ["11.0.0.1", "192.0.2.8", "2001:db9::1", "::ffff:11.0.0.1", "::a00:1", "", "unix"]
)
def test_peers_outside_relay_networks_may_not_relay(policy, peer):
    assert not policy.may_relay(peer, None)


def test_an_ipv4_network_does_not_match_an_ipv6_peer_with_the_same_bits():
    # ::a00:1 holds the bits of 10.0.0.1 but is not an IPv4-mapped address.
    policy = RelayPolicy(
        parse_config('[relay]\nnetworks = ["0.0.0.0/0"]\n', source="t", base_dir=Path("/"))
    )
    assert policy.may_relay("10.0.0.1", None)
    assert not policy.may_relay("::a00:1", None)


def test_authenticated_clients_may_relay_from_anywhere(policy):
    assert policy.may_relay("203.0.113.5", "alice@example.test")


def test_without_networks_only_authentication_allows_relaying():
    policy = RelayPolicy(parse_config("", source="t", base_dir=Path("/")))
    assert not policy.may_relay("127.0.0.1", None)
    assert not policy.may_relay("127.0.0.1", "")
    assert policy.may_relay("127.0.0.1", "alice@localhost")


def test_a_user_owns_its_own_address_in_any_case(policy):
    assert policy.sender_allowed("alice@example.test", Address("Alice", "EXAMPLE.test"))


def test_a_user_may_not_send_as_someone_else(policy):
    assert not policy.sender_allowed("alice@example.test", Address("bob", "example.test"))
    assert not policy.sender_allowed("alice@example.test", Address("alice", "example.org"))
    assert not policy.sender_allowed("alice", Address("alice", "example.test"))


def test_the_null_sender_and_unauthenticated_sessions_are_allowed(policy):
    assert policy.sender_allowed("alice@example.test", None)
    assert policy.sender_allowed(None, Address("anyone", "example.test"))


def test_send_as_grants_listed_addresses_and_whole_domains():
    config = parse_config(
        '[domains]\nlocal = ["example.test"]\n[mailboxes]\n'
        '"alice@example.test" = { send_as = ["sales@example.test", "@example.org"] }\n'
        '"dave@example.test" = {}\n',
        source="t",
        base_dir=Path("/"),
    )
    policy = RelayPolicy(config)
    assert policy.sender_allowed("alice@example.test", Address("Sales", "example.test"))
    assert policy.sender_allowed("alice@example.test", Address("anyone", "Example.ORG"))
    assert policy.sender_allowed("Alice@Example.test", Address("anyone", "example.org."))
    assert not policy.sender_allowed("alice@example.test", Address("anyone", "sub.example.org"))
    assert not policy.sender_allowed("alice@example.test", Address("dave", "example.test"))
    assert not policy.sender_allowed("dave@example.test", Address("sales", "example.test"))
