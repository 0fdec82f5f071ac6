"""What every session of a listener shares, built once by app.py, and the kinds of listener."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from mailwright.config import Config
from mailwright.mailauth import srs
from mailwright.mailauth.dkim import MessageSigner, SigningKey
from mailwright.mailauth.dns import Resolver
from mailwright.metrics import Metrics
from mailwright.policy.auth import Authenticator
from mailwright.policy.relay import RelayPolicy
from mailwright.policy.routing import Router
from mailwright.protocol.auth import MECHANISMS
from mailwright.protocol.server import ProtocolConfig
from mailwright.queue.base import QueueStore
from mailwright.queue.space import SpaceGuard
from mailwright.server.transaction import ReceivedStamp

if TYPE_CHECKING:
    from mailwright.server.tls import ServerTls


class ListenerKind(enum.Enum):
    """What a listening socket is for; it decides TLS and AUTH for its sessions."""

    SMTP = "smtp"  # mail from other servers (port 25): STARTTLS offered, AUTH optional
    SUBMISSION = "submission"  # RFC 6409 (port 587): STARTTLS, then AUTH before MAIL
    IMPLICIT_TLS = "implicit_tls"  # RFC 8314 (port 465): TLS from the first byte, then AUTH


@dataclass
class SessionServices:
    """What every session of a listener reads its configuration through; built by app.py.

    ``tls`` None means no certificate: no STARTTLS, no AUTH, no submission.
    ``auth`` (failure counts, lockouts) and ``space`` (the free-space reserve)
    are shared by every session of this process.

    Never changed once built, so that what a session decides with it fits
    together: a reload (SIGHUP) builds a new one from the new Config
    (``reloaded``) and the listener swaps it in with one assignment.  A session
    starts with the one current at its accept (its limits, its greeting), and
    its handler takes the current one again at each command outside a mail
    transaction, and keeps it from MAIL to the end of the message
    (server/handler.py): a transaction in progress finishes with the routing,
    relay networks, DKIM keys and verdicts it started with, and the session's
    next one gets the new ones, without the connection being dropped.  Mutating
    the parts one by one instead would let a transaction route a recipient by the
    new mailboxes and sign with the old keys, or read a half-applied reload.
    """

    config: Config
    router: Router
    relay: RelayPolicy
    store: QueueStore
    on_enqueued: Callable[[str], None] = lambda queue_id: None
    tls: ServerTls | None = None
    #: The one DNS resolver (app.py), for the verdicts on inbound mail (``[verify]``).
    resolver: Resolver | None = None
    #: What sessions count (connections, replies, messages); app.py's, shared with /metrics.
    metrics: Metrics = field(default_factory=Metrics)
    protocol_configs: dict[ListenerKind, ProtocolConfig] = field(init=False)
    auth: Authenticator = field(init=False)
    space: SpaceGuard = field(init=False)
    received_stamp: ReceivedStamp = field(init=False)
    #: The ``[[dkim.keys]]``; false when there are none.  checks.py loaded each once already.
    dkim: MessageSigner = field(init=False)
    #: The key that signs forwarded mail: the SRS domain's own; None when SRS is off or
    #: that domain has no key.
    forwarder_key: SigningKey | None = field(init=False)
    #: ``[arc] seal``: the forwarder's key seals forwarded mail too; None when off.
    arc_seal_key: SigningKey | None = field(init=False)

    def reloaded(self, config: Config) -> SessionServices:
        """The services of ``config``, sharing this process's queue, resolver, wake-up
        and AUTH failure counts; the TLS files and DKIM keys are read again.

        Raises what reading those files raises (OSError, ssl.SSLError, DkimKeyError):
        then nothing was swapped and this one stays in force.
        """
        from mailwright.server.tls import ServerTls

        services = SessionServices(
            config=config,
            router=Router(config),
            relay=RelayPolicy(config),
            store=self.store,
            on_enqueued=self.on_enqueued,
            tls=ServerTls(config.tls) if config.tls is not None else None,
            resolver=self.resolver,
            metrics=self.metrics,
        )
        services.auth = self.auth.reloaded(config)
        services.received_stamp = self.received_stamp
        return services

    def __post_init__(self) -> None:
        smtp = self.config.smtp
        with_tls = self.tls is not None
        base = ProtocolConfig(
            max_line=smtp.max_line_length,
            max_message_size=smtp.max_message_size,
            max_recipients=smtp.max_recipients,
            max_errors=smtp.max_errors,
            max_refused_recipients=smtp.max_refused_recipients,
            max_body_line=smtp.max_body_line_length,
            starttls=with_tls,
            auth_mechanisms=tuple(MECHANISMS) if with_tls else (),
        )
        self.protocol_configs = {
            ListenerKind.SMTP: base,
            ListenerKind.SUBMISSION: replace(base, auth_required=True),
            ListenerKind.IMPLICIT_TLS: replace(base, auth_required=True),
        }
        self.auth = Authenticator(self.config)
        self.space = SpaceGuard(self.config.data_dir, self.config.queue.min_free_space)
        self.received_stamp = ReceivedStamp()
        self.dkim = MessageSigner.from_entries(
            [(entry.domain, entry.selector, entry.key) for entry in self.config.dkim.keys]
        )
        rewriting = srs.from_config(self.config)
        self.forwarder_key = self.dkim.key_of(rewriting.domain) if rewriting else None
        self.arc_seal_key = self.forwarder_key if self.config.arc.seal else None
