"""Prometheus metrics of one node, on a registry of its own (nothing global).

Modules keep plain counters (`Store.counts`, `RedisBus.stats`, the hub's
mailboxes); a collector reads them at scrape time. Only what is observed as
it happens (applied changes, sync lag) is counted here.
"""

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from backend.batches import BatchStats
from backend.bus import RedisBus
from backend.cache import Outcome
from backend.documents import Change
from backend.hub import Hub
from backend.supervisor import Supervisor
from backend.sync import Sync

LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.changes = PromCounter(
            "orderflow_sync_changes",
            "Changes offered to this node's cache, by where they came from and what became of them",
            ["source", "outcome"],
            registry=self.registry,
        )
        self.lag = Histogram(
            "orderflow_sync_lag_seconds",
            "Commit time to applied on this node",
            ["source"],
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )

    def on_change(self, change: Change, outcome: Outcome, source: str) -> None:
        self.changes.labels(source, outcome.value).inc()
        if outcome is not Outcome.STALE:
            committed = datetime.fromisoformat(change["committed_at"]).timestamp()
            self.lag.labels(source).observe(max(0.0, time.time() - committed))

    def watch(
        self,
        counts: Counter[str],
        batches: BatchStats,
        sync: Sync,
        bus: RedisBus | None,
        hub: Hub,
        supervisor: Supervisor,
    ) -> None:
        self.registry.register(_Readings(counts, batches, sync, bus, hub, supervisor))


@dataclass(eq=False)  # the registry keys collectors by identity
class _Readings(Collector):
    _counts: Counter[str]
    _batches: BatchStats
    _sync: Sync
    _bus: RedisBus | None
    _hub: Hub
    _supervisor: Supervisor

    def collect(self) -> Iterator[Metric]:
        orders = CounterMetricFamily(
            "orderflow_orders", "Order requests by outcome", labels=["outcome"]
        )
        stock = CounterMetricFamily(
            "orderflow_stock_changes", "Stock changes this node committed", labels=["reason"]
        )
        for key, value in sorted(self._counts.items()):
            kind, _, label = key.partition(":")
            (orders if kind == "order" else stock).add_metric([label], value)
        yield orders
        yield stock
        yield CounterMetricFamily(
            "orderflow_order_batches",
            "Calls that placed a batch of orders (group commit)",
            value=self._batches.calls,
        )
        yield CounterMetricFamily(
            "orderflow_order_batch_orders",
            "Orders sent in those calls: divided by the calls, the mean batch size",
            value=self._batches.requests,
        )
        restarts = CounterMetricFamily(
            "orderflow_loop_restarts",
            "Times a background loop failed and was started again",
            labels=["loop"],
        )
        healthy = GaugeMetricFamily(
            "orderflow_loop_healthy",
            "1 while a background loop is neither failing nor stalled",
            labels=["loop"],
        )
        now = time.monotonic()
        for loop in self._supervisor.loops.values():
            restarts.add_metric([loop.name], loop.restarts)
            healthy.add_metric([loop.name], 0 if loop.problem(now) else 1)
        yield restarts
        yield healthy
        yield CounterMetricFamily(
            "orderflow_resyncs", "Full catalog reloads", value=self._sync.resyncs
        )
        yield CounterMetricFamily(
            "orderflow_gap_rereads",
            "Products re-read because a version was skipped",
            value=self._sync.rereads,
        )
        yield CounterMetricFamily(
            "orderflow_sync_held",
            "Bus changes that arrived before an earlier version and waited for it",
            value=self._sync.held,
        )
        yield CounterMetricFamily(
            "orderflow_bus_doubted",
            "Bus changes so far ahead of this node that the database was asked instead",
            value=self._sync.doubted,
        )
        if self._bus is not None:
            stats = self._bus.stats
            yield CounterMetricFamily(
                "orderflow_publishes", "Changes published on the bus", value=stats.published
            )
            yield CounterMetricFamily(
                "orderflow_publish_failures",
                "Changes whose publish failed",
                value=stats.publish_failures + stats.outbox_dropped,
            )
            yield CounterMetricFamily(
                "orderflow_bus_rejected",
                "Bus messages dropped because their seal was missing or wrong",
                value=stats.rejected,
            )
            yield CounterMetricFamily(
                "orderflow_bus_subscriptions",
                "Times the bus subscription was (re)established",
                value=stats.subscriptions,
            )
        yield GaugeMetricFamily(
            "orderflow_websocket_clients",
            "WebSocket clients connected to this node",
            value=len(self._hub.mailboxes),
        )
        yield CounterMetricFamily(
            "orderflow_websocket_coalesced",
            "Updates replaced by a newer one before a slow client read them",
            value=self._hub.coalesced,
        )
