"""The app factory. Everything a node holds is built in `lifespan`, none at import."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypedDict

from fastapi import FastAPI

from backend import errors, logs
from backend.cache import StockCache
from backend.routers import health, orders, products
from backend.settings import Settings
from backend.store import Store
from backend.sweeper import sweep
from backend.sync import Sync
from database import Database, PostgresDatabase

log = logging.getLogger(__name__)


class State(TypedDict):
    db: Database
    cache: StockCache
    store: Store


def open_database(settings: Settings) -> Database:
    if settings.database_url is None:
        raise RuntimeError("DATABASE_URL is not set (scripts/run sets it for the embedded cluster)")
    return PostgresDatabase(
        settings.database_url.get_secret_value(),
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        statement_cache_size=settings.statement_cache_size,
        command_timeout=settings.db_command_timeout,
        application_name=f"orderflow:{settings.node_id}",
    )


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
            cache = StockCache()
            sync = Sync(db, cache)
            store = Store(db, sync, settings)
            await sync.resync()
            log.info("node %s serving %d products (%s mode)", settings.node_id, len(cache), db.mode)
            async with background(
                sync.run(settings.catchup_interval_seconds),
                sweep(store, settings.sweep_interval_seconds),
            ):
                yield {"db": db, "cache": cache, "store": store}
        finally:
            await db.close()

    app = FastAPI(
        title="OrderFlow",
        version="0.1.0",
        summary="Real-time, multi-node inventory sync server",
        lifespan=lifespan,
    )
    app.state.settings = settings
    errors.install(app)
    app.add_middleware(logs.RequestIdMiddleware)
    for router in (products.router, orders.router, health.router):
        app.include_router(router)
    return app
