"""Taking mail out of the queue: into a Maildir, or to another server.

schedule.py decides when (pure functions), maildir.py writes local mail; the
worker, remote delivery and delivery reports (DSN) live in the modules beside them.
"""

from mailwright.delivery.maildir import deliver_to_maildir
from mailwright.delivery.schedule import expires_at, next_attempt, retry_delay

__all__ = ["deliver_to_maildir", "expires_at", "next_attempt", "retry_delay"]
