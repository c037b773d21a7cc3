"""The app factory. Everything a node holds is built in `lifespan`, none at import."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, TypedDict

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from backend import handlers, logs
from backend.bus import RedisBus
from backend.cache import StockCache
from backend.hub import Hub
from backend.metrics import Metrics
from backend.routers import health, live, metrics, orders, products
from backend.settings import Settings
from backend.store import Store
from backend.sweeper import sweep
from backend.sync import Sync
from database import Database, PostgresDatabase, SupabaseDatabase

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"


class State(TypedDict):
    db: Database
    cache: StockCache
    store: Store
    hub: Hub
    bus: RedisBus | None
    metrics: Metrics


def open_database(settings: Settings) -> Database:
    """The adapter the settings choose: Supabase's API, else Postgres directly."""
    db: Database
    name = f"orderflow:{settings.node_id}"
    key = settings.supabase_service_role_key
    if settings.supabase_url and key:
        if settings.database_url:
            log.warning("SUPABASE_URL and DATABASE_URL are both set: using the Supabase API")
        db = SupabaseDatabase(
            settings.supabase_url,
            key.get_secret_value(),
            timeout=settings.supabase_timeout,
            max_connections=settings.db_pool_max,
            application_name=name,
        )
    elif settings.database_url:
        db = PostgresDatabase(
            settings.database_url.get_secret_value(),
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
            statement_cache_size=settings.statement_cache_size,
            command_timeout=settings.db_command_timeout,
            application_name=name,
        )
    else:
        raise RuntimeError(
            "no database: set SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY, or DATABASE_URL"
            " (scripts/run starts an embedded Postgres and sets it)"
        )
    log.info("database: %s mode, %s", db.mode, db.target)
    return db


@contextlib.asynccontextmanager
async def background(*jobs: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(job) for job in jobs]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def create_app(settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        db = open_database(settings)
        await db.connect()
        try:
            async with _node(app, settings, db) as state:
                yield state
        finally:
            await db.close()

    app = FastAPIOffline(  # Swagger UI and ReDoc served from the package, not a CDN
        title="OrderFlow",
        version="0.1.0",
        summary="Real-time, multi-node inventory sync server",
        lifespan=lifespan,
    )
    app.state.settings = settings
    handlers.install(app)
    app.add_middleware(logs.RequestIdMiddleware)
    for router in (products.router, orders.router, live.router, health.router, metrics.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_api_route("/", _dashboard, include_in_schema=False)
    return app


async def _dashboard() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html")


@contextlib.asynccontextmanager
async def _node(app: FastAPI, settings: Settings, db: Database) -> AsyncIterator[State]:
    """Wire one node: cache, sync, store, hub, bus and metrics, and run its tasks."""
    cache = StockCache()
    sync = Sync(db, cache)
    store = Store(db, sync, settings)
    hub = Hub(settings.node_id, cache, db.get_order, settings.ws_max_pending)
    node_metrics = Metrics()
    sync.listen(node_metrics.on_change)
    sync.listen(hub.on_change)
    sync.on_resync(hub.resync_all)
    jobs = [
        sync.run(settings.catchup_interval_seconds),
        sweep(store, settings.sweep_interval_seconds),
    ]
    bus = _bus(settings, sync)
    if bus is not None:
        store.publish = bus.publish
        jobs += [bus.run_listener(), bus.run_publisher()]
    node_metrics.watch(store.counts, sync, bus, hub)

    await sync.resync()
    log.info(
        "node %s serving %d products (%s mode, %s)",
        settings.node_id,
        len(cache),
        db.mode,
        f"bus {bus.channel}" if bus else "no bus: ledger catch-up only",
    )
    try:
        async with background(*jobs):
            state: State = {
                "db": db,
                "cache": cache,
                "store": store,
                "hub": hub,
                "bus": bus,
                "metrics": node_metrics,
            }
            app.state.node = state  # for tests: the bus's fault hook, the hub's mailboxes
            yield state
    finally:
        if bus is not None:
            await bus.close()


def _bus(settings: Settings, sync: Sync) -> RedisBus | None:
    """The Redis bus, delivering into `sync`; None without REDIS_URL (ledger catch-up only).

    The first subscription catches up on what was committed since start-up;
    every later one means messages may have been lost meanwhile: a full resync.
    """
    if not settings.redis_url:
        return None
    return RedisBus(
        settings.redis_url,
        settings.node_id,
        prefix=settings.channel_prefix,
        outbox_size=settings.bus_outbox_size,
        on_message=lambda change: sync.apply([change], "bus"),
        on_subscribed=lambda count: sync.resync() if count > 1 else sync.catch_up(),
    )
