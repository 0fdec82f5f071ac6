"""Which reports fall due after an attempt: pure decisions on the sender's NOTIFY.

RFC 3461 4.1: each recipient's NOTIFY says which reports its sender wants:
NEVER (none of any kind), or any of SUCCESS, FAILURE and DELAY; a recipient
without NOTIFY gets FAILURE,DELAY (``model.DEFAULT_NOTIFY``).  Nothing here
reads the clock or touches storage: delivery/results.py passes what it knows.

The rules:

- ``failed`` when FAILURE is wanted; ``delayed`` when DELAY is wanted, once,
  at the first deferral after ``[queue] delay_warning`` seconds in the queue;
- on success with SUCCESS wanted: ``delivered`` for a Maildir, ``relayed``
  for a next hop that did not take the DSN parameters (one that did reports
  from here on, RFC 3461 5.2.2), nothing else;
- an alias with several targets (``expansions``) is reported once, as
  ``expanded``, for the alias, when the first of its targets is delivered;
  its targets then give no success report of their own (Postfix does the
  same); their failures and delays are reported as usual.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from mailwright.delivery.dsn import Action
from mailwright.delivery.outcome import Outcome
from mailwright.model import Target
from mailwright.queue.base import QueuedMessage, QueuedRecipient

__all__ = ["delay_warning_due", "expansions", "success_action", "wants_success"]


def wants_success(target: Target) -> bool:
    return target.notify.wants("SUCCESS")


def success_action(target: Target, outcome: Outcome) -> Action | None:
    """The report for a recipient just delivered, None when none is due."""
    if not wants_success(target):
        return None
    if target.local:
        return Action.DELIVERED
    if outcome.passed_dsn_on:
        return None  # the next hop reports (RFC 3461 5.2.2)
    return Action.RELAYED


def delay_warning_due(
    message: QueuedMessage, rcpt: QueuedRecipient, now: float, delay_warning: float
) -> bool:
    """Whether a recipient just deferred gets its one ``delayed`` report now.

    ``delay_warning`` 0 turns delay reports off.  The moment is counted from
    the message's arrival, as sendmail's and Postfix's ``delay_warning_time``.
    """
    return (
        delay_warning > 0
        and message.sender is not None
        and not rcpt.delay_reported
        and rcpt.target.notify.wants("DELAY")
        and now - message.received_at >= delay_warning
    )


def is_expanded(target: Target) -> bool:
    """A target an alias, a forward or an SRS reversal led to (not the RCPT address itself)."""
    return target.original.key != target.address.key


def expansions(recipients: Iterable[QueuedRecipient]) -> dict[str, list[QueuedRecipient]]:
    """The targets of each alias that has several among ``recipients``, by the alias's key.

    ``recipients`` should be every recipient of the message (``QueueStore.get``):
    a claim holds only those still pending.
    """
    groups: defaultdict[str, list[QueuedRecipient]] = defaultdict(list)
    for rcpt in recipients:
        if is_expanded(rcpt.target):
            groups[rcpt.target.original.key].append(rcpt)
    return {key: members for key, members in groups.items() if len(members) > 1}
