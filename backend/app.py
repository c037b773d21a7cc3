"""The app factory. Everything a node holds is built in `lifespan`, none at import."""

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from fastapi.telemetry import TelemetryConfig
from fastapi_offline import FastAPIOffline

from backend import handlers, logs, openapi, signals
from backend.deps import authorize
from backend.guards import BodyLimit, DashboardHeaders
from backend.lanes import SocketLane
from backend.node import Node, State
from backend.notify.storage import open_receipts
from backend.order_lane import OrderLane
from backend.reads import CachedReads
from backend.routers import (
    admin,
    health,
    keys,
    live,
    metrics,
    orders,
    payments,
    products,
    receipts,
    refunds,
    webhooks,
)
from backend.settings import Settings
from database import Database, PostgresDatabase, SupabaseDatabase

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from backend.tracing import Tracing

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
_NO_TELEMETRY: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "auto_configure": False,
}


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


def open_tracing(settings: Settings, exporter: "SpanExporter | None" = None) -> "Tracing | None":
    """The node's traces when OTEL_EXPORTER_OTLP_ENDPOINT (or a test's exporter) asks for
    them; else None, and the OpenTelemetry SDK is never even imported."""
    if exporter is None and not _traces_wanted():
        return None
    from backend.tracing import Tracing

    return Tracing(settings.node_id, exporter)


def _traces_wanted() -> bool:
    from_env = os.environ.get
    if from_env("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return (
        bool(
            from_env("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
            or from_env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        )
        and from_env("OTEL_TRACES_EXPORTER", "otlp").strip().lower() != "none"
    )


def create_app(settings: Settings, *, span_exporter: "SpanExporter | None" = None) -> FastAPI:
    """The node's app; `span_exporter` turns traces on with it (tests read their spans)."""
    if problem := settings.node_problem():
        raise RuntimeError(problem)
    _warn_about_the_key(settings)
    tracing = open_tracing(settings, span_exporter)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        db = open_database(settings)
        node = Node(settings, db if tracing is None else tracing.database(db))
        if tracing is not None:
            tracing.instrument(node)
            tracing.start()
        app.state.node = node  # for tests: the bus's fault hook, the hub's mailboxes
        app.state.receipts = open_receipts(settings)  # GET /orders/{id}/receipt reads them
        try:
            async with node.running() as state, contextlib.aclosing(app.state.receipts):
                with signals.drain_first(node.drain):
                    yield state
        finally:
            if tracing is not None:
                await tracing.stop()

    app = FastAPIOffline(  # Swagger UI and ReDoc served from the package, not a CDN
        title="OrderFlow",
        version="0.1.0",
        summary="Real-time, multi-node inventory sync server",
        lifespan=lifespan,
        dependencies=[Depends(authorize)],  # every route's rule: backend.auth.policy
        # Request spans are FastAPI's own, on only with traces: off, it looks at nothing.
        telemetry=_NO_TELEMETRY if tracing is None else tracing.telemetry(),
    )
    app.state.settings = settings
    app.state.tracing = tracing
    app.add_middleware(OrderLane)  # innermost, as the cached reads: before the route
    app.add_middleware(CachedReads)  # innermost: in front of the route it answers for
    handlers.install(app)  # next: an unexpected error becomes the one error shape
    app.add_middleware(DashboardHeaders, connect_to=[u for u in [settings.supabase_url] if u])
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if settings.origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Idempotent-Replayed", "Retry-After"],
            max_age=600,
        )
    app.add_middleware(SocketLane, path="/ws", endpoint=live.live)  # sockets skip the rest
    app.add_middleware(logs.RequestIdMiddleware)  # outermost: every log line has the id
    routers = (
        products,
        orders,
        refunds,
        receipts,
        payments,
        webhooks,
        admin,
        keys,
        live,
        health,
        metrics,
    )
    for module in routers:
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_api_route("/", _dashboard, include_in_schema=False)
    openapi.install(app, settings)
    return app


def _warn_about_the_key(settings: Settings) -> None:
    """A node needs the service role; with the anon key every database call is refused,
    which looks like a broken database unless said at start-up (the key is never shown)."""
    role = settings.supabase_key_role
    if settings.supabase_url and role is not None and role != "service_role":
        log.warning(
            "the Supabase key (SUPABASE_SERVICE_ROLE_KEY or SUPABASE_KEY) has the role %r:"
            " a node needs the project's service_role key, and the database functions"
            " refuse %s",
            role,
            role,
        )


async def _dashboard() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html")
