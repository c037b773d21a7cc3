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
from backend.events.lifecycle import Lifecycle
from backend.hub import Hub
from backend.supervisor import Supervisor
from backend.sync import Sync

LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
WORKER_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


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
        self.worker_seconds = Histogram(
            "orderflow_worker_seconds",
            "Time a consumer took to handle one event on this node",
            ["consumer"],
            buckets=WORKER_BUCKETS,
            registry=self.registry,
        )
        self.worker_events = PromCounter(
            "orderflow_worker_events",
            "Events a consumer handled on this node: ok, retried (failed, to be tried"
            " again), dead (failed its last attempt), rejected (bad seal)",
            ["consumer", "outcome"],
            registry=self.registry,
        )

    def on_worker(self, consumer: str, outcome: str, seconds: float) -> None:
        self.worker_events.labels(consumer, outcome).inc()
        if outcome != "rejected":
            self.worker_seconds.labels(consumer).observe(seconds)

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

    def watch_events(self, lifecycle: Lifecycle) -> None:
        self.registry.register(_EventReadings(lifecycle))


@dataclass(eq=False)
class _EventReadings(Collector):
    """The outbox, the stream and the groups as last read (every few seconds: a scrape
    cannot wait on Redis and Postgres), and what this node relayed."""

    _lifecycle: Lifecycle

    def collect(self) -> Iterator[Metric]:
        if (relay := self._lifecycle.relay) is not None:
            yield CounterMetricFamily(
                "orderflow_events_relayed",
                "Outbox events this node added to the stream",
                value=relay.stats.relayed,
            )
        status = self._lifecycle.status.latest
        if status is None:
            return
        for name, what, value in (
            ("outbox_pending", "Events committed and not yet on the stream", status.outbox_pending),
            (
                "outbox_oldest_seconds",
                "Age of the oldest event not yet on the stream",
                status.outbox_oldest_seconds,
            ),
            ("dead_letters", "Dead letters waiting for a replay", status.dead_letters),
        ):
            yield GaugeMetricFamily(f"orderflow_{name}", what, value=value)
        if status.stream_length is not None:
            yield GaugeMetricFamily(
                "orderflow_stream_length",
                "Entries on the events stream",
                value=status.stream_length,
            )
        lag = GaugeMetricFamily(
            "orderflow_stream_lag",
            "Entries not yet delivered to a consumer group (counted up to 1000)",
            labels=["group"],
        )
        pending = GaugeMetricFamily(
            "orderflow_stream_pending",
            "Entries delivered to a consumer group and not yet acked",
            labels=["group"],
        )
        for group in status.groups:
            lag.add_metric([group.name], group.lag)
            pending.add_metric([group.name], group.pending)
        yield lag
        yield pending


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
