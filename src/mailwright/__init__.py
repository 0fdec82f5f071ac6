"""mailwright: a strict, durable, explainable ESMTP server.

The public API, re-exported.  The protocol core (``mailwright.protocol``) is
sans-I/O and can be used on its own; ``App`` runs a whole server.
"""

from mailwright.config import Config, load_config, parse_config
from mailwright.errors import (
    ConfigError,
    DeliveryError,
    LocalProtocolError,
    MailwrightError,
    ProtocolError,
    RemoteProtocolError,
    StorageError,
)
from mailwright.model import Address, SessionInfo, Target
from mailwright.protocol.reply import Reply
from mailwright.protocol.server import ProtocolConfig, ServerConnection

__all__ = [
    "Address",
    "Config",
    "ConfigError",
    "DeliveryError",
    "LocalProtocolError",
    "MailwrightError",
    "ProtocolConfig",
    "ProtocolError",
    "RemoteProtocolError",
    "Reply",
    "ServerConnection",
    "SessionInfo",
    "StorageError",
    "Target",
    "load_config",
    "parse_config",
]
__version__ = "0.1.0"
