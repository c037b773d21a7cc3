"""One store node: what it holds, how it starts, how it stops, and whether it is ready.

A node starts before its database and Redis answer: `/health` says the process
is up at once, `/ready` says 503 with the reason, and a start-up step retries
with backoff until the catalog is loaded; only then do the catch-up, the
sweeper and the bus listener run. Every loop is supervised (`Supervisor`).
Stopping runs the other way: not ready, WebSocket clients told to reconnect,
loops stopped, the bus outbox flushed, connections closed.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, TypedDict

from backend.auth.gate import Gate
from backend.bus import RedisBus
from backend.cache import StockCache
from backend.documents import Change
from backend.errors import AppError
from backend.events.lifecycle import Lifecycle
from backend.events.tail import Tail
from backend.hub import Hub
from backend.metrics import Metrics
from backend.migrate import load_migrations
from backend.ratelimit import RateLimiter
from backend.settings import Settings
from backend.store import Store
from backend.supervisor import Supervisor
from backend.sweeper import sweep
from backend.sync import Sync
from database import Database

log = logging.getLogger(__name__)

_FLUSH_SECONDS = 5.0


class State(TypedDict):
    """What the lifespan hands to every request (`request.state`)."""

    node: "Node"
    db: Database
    cache: StockCache
    store: Store
    hub: Hub
    bus: RedisBus | None
    metrics: Metrics


class Node:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.cache = StockCache()
        self.sync = Sync(db, self.cache)
        self.store = Store(db, self.sync, settings)
        self.hub = Hub(settings.node_id, self.cache, db.get_order, settings.ws_max_pending)
        self.metrics = Metrics()
        self.gate = Gate(settings, db)
        self.supervisor = Supervisor()
        self.bus = self._bus()
        self.limiter = self._limiter()
        self.loaded = False  # the first full catalog load is done: reads are served
        self.draining = False
        self.sync.listen(self.metrics.on_change)
        self.sync.listen(self.hub.on_change)
        self.sync.watch_orders(self.hub.follows)
        self.sync.on_resync(self.hub.resync_all)
        self.events = Lifecycle(self)  # after the bus and metrics it uses
        if self.bus is not None:
            self.store.publish = self._publish
        self.metrics.watch(
            self.store.counts,
            self.store.orders.stats,
            self.sync,
            self.bus,
            self.hub,
            self.supervisor,
        )
        self.metrics.watch_events(self.events)

    def _publish(self, changes: Sequence[Change]) -> None:
        """After a commit: the changes to the bus, and the relay woken (the commit may
        have written order events)."""
        assert self.bus is not None
        self.bus.publish(changes)
        self.events.wake()

    @property
    def state(self) -> State:
        return {
            "node": self,
            "db": self.db,
            "cache": self.cache,
            "store": self.store,
            "hub": self.hub,
            "bus": self.bus,
            "metrics": self.metrics,
        }

    def _bus(self) -> RedisBus | None:
        """The Redis bus, delivering into `sync`; None without REDIS_URL (ledger catch-up only).

        The first subscription catches up on what was committed since the
        catalog was loaded; every later one means messages may have been lost
        meanwhile: a full resync.
        """
        settings = self.settings
        if not settings.redis_url or settings.bus_key is None:
            return None  # Settings refuse a Redis URL without a bus key
        return RedisBus(
            settings.redis_url,
            settings.node_id,
            key=settings.bus_key.get_secret_value().encode(),
            prefix=settings.channel_prefix,
            outbox_size=settings.bus_outbox_size,
            on_message=lambda change: self.sync.apply([change], "bus"),
            on_subscribed=lambda count: self.sync.resync() if count > 1 else self.sync.catch_up(),
        )

    def _limiter(self) -> RateLimiter | None:
        """Writes per caller, counted in the bus's Redis; none without Redis or a limit."""
        per_minute = self.settings.rate_limit_writes_per_minute
        if self.bus is None or per_minute == 0:
            return None
        return RateLimiter(self.bus.redis, per_minute, self.settings.channel_prefix)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[State]:
        """Run the node's loops for as long as the block lasts, then stop it cleanly."""
        try:
            async with self.supervisor:
                if self.bus is not None:
                    self.supervisor.start("bus-publisher", self.bus.run_publisher)
                self.supervisor.start("startup", self._start, once=True, backoff_most=5.0)
                yield self.state
                await self._stop()
        finally:
            await self.events.aclose()
            if self.bus is not None:
                await self.bus.close()
            await self.gate.aclose()
            await self.db.close()

    async def _start(self) -> None:
        """Connect, load the catalog, then start the loops that need it. Retried until done."""
        await self.db.connect()
        await self._require_migrations()
        await self.gate.warm()
        await self.sync.resync()
        self.loaded = True
        settings = self.settings
        stall = 30.0
        self.supervisor.start(
            "catch-up",
            lambda: self.sync.run(settings.catchup_interval_seconds, self._beat("catch-up")),
            stall_after=stall + settings.catchup_interval_seconds,
            backoff_most=2.0,
        )
        self.supervisor.start(
            "sweeper",
            lambda: sweep(self.store, settings.sweep_interval_seconds, self._beat("sweeper")),
            stall_after=stall + settings.sweep_interval_seconds,
            backoff_most=5.0,
        )
        if self.bus is not None:
            self.supervisor.start("bus-listener", self.bus.run_listener)
        self.events.start(self.supervisor)
        if (stream := self.events.stream) is not None:
            tail = Tail(stream, self.hub.order_event, self.hub.follows)
            self.supervisor.start(
                "events-tail", lambda: tail.run(self._beat("events-tail")), stall_after=stall
            )
        log.info(
            "node %s serving %d products (%s mode, %s)",
            settings.node_id,
            len(self.cache),
            self.db.mode,
            f"bus {self.bus.channel}" if self.bus else "no bus: ledger catch-up only",
        )

    async def _require_migrations(self) -> None:
        """A database without every migration this node knows answers in shapes the
        node does not expect: wait for them (a migration job may be running now)."""
        applied = set(await self.db.schema_versions())
        if missing := [m.version for m in load_migrations() if m.version not in applied]:
            raise AppError(
                503, "SCHEMA_OUT_OF_DATE", f"migrations not applied yet: {', '.join(missing)}"
            )

    def _beat(self, name: str) -> Any:
        return lambda: self.supervisor.beat(name)

    async def drain(self) -> None:
        """On SIGTERM, before the server stops: not ready, then clients sent elsewhere.

        The delay lets a load balancer see `/ready` fail before connections close.
        """
        self.draining = True
        await asyncio.sleep(self.settings.shutdown_delay_seconds)
        await self.hub.shutdown(self.settings.shutdown_timeout_seconds)

    async def _stop(self) -> None:
        """After the last request: what was committed is published before the bus closes."""
        self.draining = True
        await self.hub.shutdown(self.settings.shutdown_timeout_seconds)
        if self.bus is not None:
            await self.bus.flush(_FLUSH_SECONDS)

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether a load balancer should send this node traffic, and every reason not."""
        problems = self.supervisor.problems()
        if self.draining:
            problems.insert(0, "shutting down")
        if not self.loaded and not problems:
            problems.append("loading the catalog")
        missing: list[str] = []
        if self.loaded:
            try:
                applied = set(await self.db.schema_versions())
                missing = [m.version for m in load_migrations() if m.version not in applied]
            except AppError as exc:
                problems.append(f"database: {exc.message}")
        if missing:
            problems.append(f"migrations missing: {', '.join(missing)}")
        bus = self._bus_status()
        if self.bus is not None and self.bus.stats.subscriptions == 0:
            problems.append(f"bus: {bus}")
        body = {
            "ready": not problems,
            "node": self.settings.node_id,
            "mode": self.db.mode,
            "products": len(self.cache),
            "problems": problems,
            "missing_migrations": missing,
            "bus": bus,
            "loops": {
                loop.name: {"state": loop.state, "restarts": loop.restarts, "error": loop.error}
                for loop in self.supervisor.loops.values()
            },
        }
        return not problems, body

    def _bus_status(self) -> str:
        if self.bus is None:
            return "none: ledger catch-up only"
        stats = self.bus.stats
        if stats.subscribed:
            return "subscribed"
        return stats.problem or "connecting to Redis"
