"""Figures the admin listener works out itself: the queue's gauges, and replies per hour.

The queue's gauges are read from the store when scraped (``refresh`` first, then
the collector yields what it read), so they are exact and cost one query per
scrape, never a timer.  The replies of the last hour are the difference between
the reply counters now and a sample taken (once a minute) an hour ago, or at
start when the server is younger than that.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mailwright.queue.base import QueueStats, QueueStore

#: Seconds between samples of the reply counters, and how far back the page looks.
SAMPLE_INTERVAL = 60.0
WINDOW = 3600.0
REPLIES_METRIC = "mailwright_smtp_replies"


class QueueCollector(Collector):
    """``mailwright_queue_messages{state}`` and ``mailwright_queue_oldest_seconds``."""

    def __init__(self, store: QueueStore) -> None:
        self._store = store
        self._stats = QueueStats(
            messages={"queued": 0, "deferred": 0, "held": 0}, oldest_received_at=None
        )

    async def refresh(self) -> None:
        self._stats = await self._store.stats()

    def collect(self) -> Iterator[Metric]:
        messages = GaugeMetricFamily(
            "mailwright_queue_messages",
            "Messages in the queue, by state (held, else deferred, else queued)",
            labels=["state"],
        )
        for state, count in sorted(self._stats.messages.items()):
            messages.add_metric([state], count)
        yield messages
        oldest = self._stats.oldest_received_at
        yield GaugeMetricFamily(
            "mailwright_queue_oldest_seconds",
            "Age of the oldest message in the queue, 0 when it is empty",
            value=max(0.0, time.time() - oldest) if oldest is not None else 0.0,
        )


def reply_totals(registry: CollectorRegistry) -> dict[str, float]:
    """The reply counters summed by code (over commands), as the registry shows them now."""
    totals: dict[str, float] = {}
    for family in registry.collect():
        if family.name != REPLIES_METRIC:
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                code = sample.labels["code"]
                totals[code] = totals.get(code, 0.0) + sample.value
    return totals


class ReplyHistory:
    """Samples of the reply counters, one a minute, for the last hour's replies by code."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._samples: deque[tuple[float, dict[str, float]]] = deque(
            maxlen=int(WINDOW / SAMPLE_INTERVAL) + 1
        )
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._samples.append((time.time(), {}))  # the counters start at nought
        self._task = asyncio.get_running_loop().create_task(self._sample())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _sample(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL)
            self._samples.append((time.time(), reply_totals(self._registry)))

    def last_hour(self) -> tuple[float, dict[str, int]]:
        """(seconds covered, replies by code) since the oldest sample within the hour."""
        now = time.time()
        since, before = next(
            ((at, totals) for at, totals in self._samples if at >= now - WINDOW - 1),
            (now, {}),
        )
        current = reply_totals(self._registry)
        counts = {
            code: int(value - before.get(code, 0.0))
            for code, value in sorted(current.items())
            if value - before.get(code, 0.0) > 0
        }
        return now - since, counts
