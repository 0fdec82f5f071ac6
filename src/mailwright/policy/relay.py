"""Who may relay, and which senders a client may use.

Relaying (accepting mail for a domain that is not ours) is the one decision an
open mail server gets wrong at everyone's expense, so it is made here and
nowhere else: a client may relay when it connects from a configured network
(``relay.networks``) or has authenticated.
"""

from __future__ import annotations

import ipaddress

from mailwright.config import Config
from mailwright.model import Address


class RelayPolicy:
    """Relay permission and sender ownership, from a Config; pure and immutable."""

    def __init__(self, config: Config) -> None:
        self._networks = tuple(config.relay_networks)
        self._send_as = {user: frozenset(box.send_as) for user, box in config.mailboxes.items()}

    def may_relay(self, peer_ip: str, authenticated_user: str | None) -> bool:
        """True when the session authenticated or ``peer_ip`` is in a relay network.

        An IPv4 peer seen through an IPv6 socket (``::ffff:192.0.2.1``) is
        matched as IPv4; a peer that is not an IP address at all (a Unix socket,
        a typo) is never in a network.
        """
        if authenticated_user:
            return True
        if not self._networks:
            return False
        try:
            ip = ipaddress.ip_address(peer_ip)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self._networks)

    def sender_allowed(self, user: str | None, sender: Address | None) -> bool:
        """Whether a session authenticated as ``user`` may send as ``sender``.

        A user owns its own address (keys compared, so case does not matter)
        and what its mailbox lists in ``send_as``: other addresses, and whole
        domains written ``@domain``.  The null sender ``<>`` cannot
        impersonate anyone and is allowed (RFC 5321 4.5.5: notifications use
        it).  Without authentication there is no identity to check, so the
        sender is judged by the recipients instead: allowed here.
        """
        if user is None or sender is None:
            return True
        try:
            user_key = Address.from_text(user).key
        except ValueError:
            return False
        if user_key == sender.key:
            return True
        allowed = self._send_as.get(user_key, frozenset())
        return sender.key in allowed or f"@{sender.domain_key}" in allowed
