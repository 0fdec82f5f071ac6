"""The outcome of one delivery attempt, shared by the local and remote transports."""

from __future__ import annotations

__all__ = ["Attempt"]


class Attempt:
    """The outcome of delivering to one recipient, before scheduling."""

    __slots__ = ("permanent", "relay", "reply", "success")

    def __init__(self, *, success: bool, permanent: bool, reply: str, relay: str = "") -> None:
        self.success = success
        self.permanent = permanent
        self.reply = reply
        self.relay = relay
