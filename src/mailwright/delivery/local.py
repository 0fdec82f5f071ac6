"""Local delivery: Maildir writes handed to a few low-priority threads, in batches.

Why batches: on a disk that creates files quickly, the Maildir write itself
(create, write, fsync, rename) costs the kernel about 0.2 ms, while handing
each message to a thread and its result back to the event loop cost more than
that: a futex wake-up each way, the GIL passed back and forth, a directory
fsync of its own.  Deliveries asked for in the same turn of the event loop (a
claimed batch of messages arrives at once) therefore go to a thread together.
The thread writes them one after the other, syncs each new/ directory once for
all of them, and reports back in one call.  Under a light load a batch is a
single message and nothing waits: a batch leaves on the next turn of the loop.

These threads are local delivery's own: a Maildir write never waits for a
delivery slot that SMTP deliveries hold (delivery/remote.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from mailwright.delivery.maildir import (
    link_into_maildir,
    linked_name,
    mailbox_in,
    mark_maildir_folder,
    sync_new_messages,
    write_to_maildir,
)
from mailwright.delivery.outcome import (
    DELIVERED_TO_MAILDIR,
    NO_WRITER_IN_TIME,
    Outcome,
    bad_mailbox,
    maildir_failed,
)
from mailwright.durable import DirectorySyncer
from mailwright.errors import StorageError
from mailwright.model import Address
from mailwright.queue.base import QueuedMessage, QueuedRecipient, QueueStore, local_copy_prefix

__all__ = ["MAILDIR_THREAD_NICENESS", "MAX_BATCH", "LocalDelivery"]

#: Niceness of the threads that write Maildirs (Linux: per thread).  Making a
#: file can cost the kernel more CPU than receiving a message (up to a
#: millisecond per new inode on ext4 without a journal, after many deletions,
#: see docs/performance.md): at equal priority a burst
#: of local mail is received at the pace it is delivered.  Lower priority lets
#: the server take the burst first (each message already safe in the queue) and
#: deliver it as soon as the CPU is free; idle CPU is used all the same.
MAILDIR_THREAD_NICENESS = 10  # added to the process's own

#: Most deliveries one thread takes at once: bounds how long the first of a
#: batch waits for the directory fsync that makes it final.
MAX_BATCH = 32

#: Mailboxes whose path and directories are remembered (then forgotten all at once).
MAILBOX_CACHE_SIZE = 10_000


DELIVERED = Outcome(DELIVERED_TO_MAILDIR)
NOT_BEGUN_IN_TIME = Outcome(NO_WRITER_IN_TIME)

_Job = tuple[QueuedMessage, QueuedRecipient]
_Pending = tuple[QueuedMessage, QueuedRecipient, "asyncio.Future[Outcome]", float]


def _yield_to_receiving() -> None:
    """Thread initializer: this thread's niceness + MAILDIR_THREAD_NICENESS (at most 19)."""
    with contextlib.suppress(OSError, AttributeError):
        thread = threading.get_native_id()
        niceness = os.getpriority(os.PRIO_PROCESS, thread) + MAILDIR_THREAD_NICENESS
        os.setpriority(os.PRIO_PROCESS, thread, min(niceness, 19))


class LocalDelivery:
    """Delivers one recipient of a queued message into its Maildir; used from one event loop."""

    def __init__(
        self,
        *,
        data_dir: Path,
        hostname: str,
        store: QueueStore,
        threads: int,
        mailboxes_dir: Path | None = None,
    ) -> None:
        """``mailboxes_dir``: ``[delivery] mailboxes_dir``; None: data_dir/mailboxes."""
        self._mailboxes_dir = data_dir / "mailboxes" if mailboxes_dir is None else mailboxes_dir
        self._hostname = hostname
        self._store = store
        self._threads = max(1, threads)
        self._idle = self._threads
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self._threads,
            thread_name_prefix="mailwright-maildir",
            initializer=_yield_to_receiving,
        )
        self._syncer = DirectorySyncer()  # threads writing into one new/ share its fsyncs
        self._pending: list[_Pending] = []
        # Per address and folder its Maildir (checked once: mailbox_in validates every part),
        # and the Maildirs known to have tmp/, new/ and cur/.  Shared by the threads:
        # a dict and a set are safe to use from several threads under the GIL.
        self._mailboxes: dict[tuple[Address, str | None], str] = {}
        self._made: set[str] = set()
        self._flush_scheduled = False

    async def deliver(
        self, message: QueuedMessage, rcpt: QueuedRecipient, *, start_by: float = math.inf
    ) -> Outcome:
        """Write one copy.  One not begun by ``start_by`` (``loop.time()``) is not begun at all:
        a temporary failure, so that an attempt ends before its claim on the queue lapses.
        A write once begun always finishes (its file would otherwise be delivered twice)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._pending.append((message, rcpt, future, start_by))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await future

    def shutdown(self) -> None:
        """No new batches; one running goes on in its thread (its claim lapses if unrecorded)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _flush(self) -> None:
        """Share what waits among the idle threads; the rest waits for a thread to finish."""
        self._flush_scheduled = False
        loop = asyncio.get_running_loop()
        if self._pending and self._idle:
            now = loop.time()
            for _, _, future, start_by in self._pending:
                if start_by <= now and not future.done():
                    future.set_result(NOT_BEGUN_IN_TIME)
        self._pending = [job for job in self._pending if not job[2].done()]  # cancelled, late
        while self._pending and self._idle:
            size = min(MAX_BATCH, -(-len(self._pending) // self._idle))
            batch, self._pending = self._pending[:size], self._pending[size:]
            self._idle -= 1
            try:
                done = loop.run_in_executor(
                    self._executor, self._deliver_batch, [(m, r) for m, r, _, _ in batch]
                )
            except RuntimeError as exc:  # shut down
                self._idle += 1
                for _, _, future, _ in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            done.add_done_callback(functools.partial(self._batch_done, batch))

    def _batch_done(self, batch: list[_Pending], done: asyncio.Future[list[Outcome]]) -> None:
        self._idle += 1
        for position, (_, _, future, _) in enumerate(batch):
            if future.done():
                continue
            if done.cancelled():  # the executor was shut down before the batch ran
                future.cancel()
            elif (error := done.exception()) is not None:
                future.set_exception(error)
            else:
                future.set_result(done.result()[position])
        if self._pending:
            self._flush()

    # ------------------------------------------------------------ in a thread

    def _deliver_batch(self, jobs: Sequence[_Job]) -> list[Outcome]:
        """Write every message, then sync each new/ once: only then is any of them delivered."""
        outcomes: dict[int, Outcome] = {}
        written: dict[str, list[tuple[int, str]]] = {}
        for position, (message, rcpt) in enumerate(jobs):
            outcome_or_path = self._write(message, rcpt)
            if isinstance(outcome_or_path, Outcome):
                outcomes[position] = outcome_or_path
            else:
                new_dir = os.path.dirname(outcome_or_path)
                written.setdefault(new_dir, []).append((position, outcome_or_path))
        for new_dir, entries in written.items():
            try:
                sync_new_messages(new_dir, [path for _, path in entries], self._syncer)
            except StorageError as exc:
                self._made.discard(os.path.dirname(new_dir))
                failed = _temporary_failure(exc)
                for position, _ in entries:
                    outcomes[position] = failed
            else:
                for position, _ in entries:
                    outcomes[position] = DELIVERED
        return [outcomes[position] for position in range(len(jobs))]

    def _write(self, message: QueuedMessage, rcpt: QueuedRecipient) -> Outcome | str:
        address, folder = rcpt.target.address, rcpt.target.folder
        mailbox = self._mailboxes.get((address, folder))
        if mailbox is None:
            try:
                mailbox = os.fspath(mailbox_in(self._mailboxes_dir, address, folder))
            except ValueError as exc:
                return Outcome(bad_mailbox(exc))
            if len(self._mailboxes) >= MAILBOX_CACHE_SIZE:
                self._mailboxes.clear()
            self._mailboxes[(address, folder)] = mailbox
        try:
            if folder is not None and mailbox not in self._made:
                mark_maildir_folder(mailbox)  # before the message: a failure leaves no copy
            path = None
            if message.local_copy is not None and rcpt.index == 0:
                path = link_into_maildir(
                    mailbox,
                    message.local_copy,
                    linked_name(message.queue_id, message.received_at, self._hostname),
                    directories_exist=mailbox in self._made,
                )
            if path is None:
                with self._store.open_body(message.queue_id) as body:
                    path = write_to_maildir(
                        mailbox,
                        body,
                        prefix=local_copy_prefix(message.sender, address),
                        hostname=self._hostname,
                        directories_exist=mailbox in self._made,
                    )
        except (StorageError, OSError) as exc:
            self._made.discard(mailbox)
            return _temporary_failure(exc)
        if len(self._made) >= MAILBOX_CACHE_SIZE:
            self._made.clear()
        self._made.add(mailbox)
        return path


def _temporary_failure(exc: BaseException) -> Outcome:
    return Outcome(maildir_failed(exc))
