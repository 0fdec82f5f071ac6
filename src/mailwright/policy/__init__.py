"""Who may send what to whom: recipient routing and relay permission.

Pure decisions made from the Config; the session asks, this package answers
with a Reply (and, for an accepted recipient, the targets to queue).
"""

from mailwright.policy.relay import RelayPolicy
from mailwright.policy.routing import (
    NO_SUCH_USER,
    RELAYING_DENIED,
    RecipientDecision,
    Router,
    unique_targets,
)

__all__ = [
    "NO_SUCH_USER",
    "RELAYING_DENIED",
    "RecipientDecision",
    "RelayPolicy",
    "Router",
    "unique_targets",
]
