"""A node's life: it starts before its servers, its loops survive failures, an
unexpected error is one logged 500, and it stops without losing a thing."""

import logging
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from backend.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from backend.migrate import load_migrations
from tests.proxy import forward
from tests.support import eventually, node_settings, run_node, until


async def ready(client: httpx.AsyncClient) -> tuple[int, list[str]]:
    response = await client.get("/ready")
    return response.status_code, response.json()["problems"]


async def until_ready(client: httpx.AsyncClient, within: float) -> None:
    async def is_ready() -> bool:
        return (await ready(client))[0] == 200

    await until(is_ready, within, "the node is ready")


def url_on_port(url: str, old: int, new: int) -> str:
    return url.replace(f":{old}/", f":{new}/")


async def test_a_node_starts_before_its_database_and_serves_once_it_answers(
    database_url: str, pg_server: EmbeddedPostgres
) -> None:
    port = free_port()  # nothing listens here yet
    settings = node_settings(url_on_port(database_url, pg_server.port, port))
    async with run_node(settings, wait_loaded=False) as node:
        assert (await node.client.get("/health")).status_code == 200
        status, problems = await ready(node.client)
        assert status == 503
        assert any("DATABASE_UNAVAILABLE" in p or "database" in p for p in problems), problems
        products = await node.client.get("/products")
        assert (products.status_code, products.json()["code"]) == (503, "NOT_READY")
        orders = await node.client.post("/orders", json={"items": [{"sku": "A", "quantity": 1}]})
        assert (orders.status_code, orders.json()["code"]) == (503, "DATABASE_UNAVAILABLE")

        async with forward(port, pg_server.port):
            await until_ready(node.client, within=15)
            body = {"sku": "LATE-1", "name": "Late", "price_cents": 1, "on_hand": 3}
            assert (await node.client.post("/products", json=body)).status_code == 201
            assert (await node.client.get("/products/LATE-1")).json()["on_hand"] == 3


async def test_a_node_starts_before_redis_and_is_ready_once_it_answers(
    database_url: str, redis_server: EmbeddedRedis
) -> None:
    port = free_port()
    settings = node_settings(database_url, redis_url=f"redis://127.0.0.1:{port}/0")
    async with run_node(settings) as node:
        assert (await node.client.get("/health")).status_code == 200
        await eventually(lambda: node.state["node"].loaded, 10, "the catalog loaded")
        status, problems = await ready(node.client)
        assert status == 503
        assert any(p.startswith("bus:") for p in problems), problems
        async with forward(port, redis_server.port):
            await until_ready(node.client, within=15)


@pytest.fixture
async def owner(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


async def break_function(conn: asyncpg.Connection, signature: str, body: str) -> None:
    """Swap a SQL function for one answering `body`: a fault the Python code did not expect."""
    name = signature.split("(")[0]
    await conn.execute(f"alter function public.{signature} rename to {name}_real")
    arguments = await conn.fetchval(
        "select pg_get_function_arguments($1::regproc)", f"public.{name}_real"
    )
    await conn.execute(
        f"create function public.{name}({arguments}) returns jsonb language sql"
        f" as $$ select '{body}'::jsonb $$"
    )


async def mend_function(conn: asyncpg.Connection, signature: str) -> None:
    name = signature.split("(")[0]
    await conn.execute(f"drop function public.{signature}")
    await conn.execute(
        f"alter function public.{name}_real({signature.split('(', 1)[1]} rename to {name}"
    )


async def test_a_failing_loop_is_restarted_named_by_ready_and_counted(
    database_url: str, owner: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    async with run_node(node_settings(database_url)) as node:
        await until_ready(node.client, within=10)
        signature = "stock_events_since(p_cursor text, p_limit integer, p_compact boolean)"
        await break_function(owner, signature, '{"events": 5}')
        try:
            supervisor = node.state["node"].supervisor
            await eventually(lambda: supervisor.loops["catch-up"].restarts >= 2, 10, "restarts")
            status, problems = await ready(node.client)
            assert status == 503
            assert any(p.startswith("catch-up is failing: TypeError") for p in problems)
            metrics = (await node.client.get("/metrics")).text
            assert 'orderflow_loop_restarts_total{loop="catch-up"}' in metrics
            assert 'orderflow_loop_healthy{loop="catch-up"} 0.0' in metrics
        finally:
            await mend_function(owner, signature)
        await until_ready(node.client, within=10)
        assert supervisor.loops["catch-up"].state == "running"
    failures = [r for r in caplog.records if "background loop catch-up failed" in r.message]
    assert failures
    assert all(r.exc_info is not None for r in failures)


async def test_an_unexpected_error_is_one_logged_500_in_the_error_shape(
    database_url: str, owner: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    async with run_node(node_settings(database_url)) as node:
        await until_ready(node.client, within=10)
        await break_function(
            owner, "get_order(p_order_id uuid, p_customer_id text)", '"not an order"'
        )
        caplog.clear()
        response = await node.client.get(
            "/orders/00000000-0000-0000-0000-000000000001", headers={"X-Request-ID": "trace-me"}
        )
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "code": "INTERNAL",
        "message": "an unexpected error occurred",
        "details": {"request_id": "trace-me"},
    }
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].exc_info is not None


async def test_a_node_waits_for_the_migrations_it_knows(
    database_url: str, owner: asyncpg.Connection
) -> None:
    latest = load_migrations()[-1]
    await owner.execute(
        "delete from supabase_migrations.schema_migrations where version = $1", latest.version
    )
    async with run_node(node_settings(database_url), wait_loaded=False) as node:
        await eventually(
            lambda: node.app.state.node.supervisor.loops["startup"].state == "failing",
            10,
            "the start-up step refused the database",
        )
        status, problems = await ready(node.client)
        assert status == 503
        assert any(f"migrations not applied yet: {latest.version}" in p for p in problems)
        await owner.execute(
            "insert into supabase_migrations.schema_migrations (version, name) values ($1, $2)",
            latest.version,
            latest.name,
        )
        await until_ready(node.client, within=15)
