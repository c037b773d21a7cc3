"""The HTTP scenarios, each measured beside its anchor in the same run.

- cached GET: `GET /products/{sku}` on one node with a customer's token,
  against bare Starlette returning the same JSON.
- spread orders: one node, orders of one unit of a random SKU out of 10,000,
  against the naive endpoint on copies of the tables.
- hot SKU: one SKU, 16 / 64 / 256 clients over the nodes, then the database is
  asked whether every acknowledged order is there and nothing was oversold;
  against pgbench calling `place_order` at the nodes' total pool size. Then a
  SKU with little stock is bought out by 64 clients: exactly its stock is
  acknowledged and held, every other order refused.

Each returns a JSON-able dict of figures; latencies are in seconds.
"""

import asyncio
import json
import math
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from backend.embedded import free_port
from tools.bench import anchors, catalog, wrk
from tools.bench.cluster import Cluster, Server
from tools.bench.usage import Window

CONNECTIONS = 64
HOT_LEVELS = (16, 64, 256)
SETTLE = 1.0  # seconds for orders in flight when wrk stopped to commit or fail
SPREAD_COUNT = 10_000


@dataclass
class Context:
    cluster: Cluster
    folder: Path
    seconds: float
    token: str  # a customer's: customers place orders as themselves

    def prefix(self) -> str:
        """Idempotency keys of one wrk run: unique in the database for good."""
        return uuid.uuid4().hex[:12]


def figures(result: wrk.Result, window: dict[str, Any]) -> dict[str, Any]:
    return {
        "rate": round(result.rate, 1),
        "ok": result.ok,
        "non_2xx": result.errors["status"],
        "errors": {k: v for k, v in result.errors.items() if v and k != "status"},
        "p50": result.latency(50),
        "p99": result.latency(99),
        "mean": result.mean,
        "quantiles": result.quantiles,
        "wrk_cpu_pct": round(100 * result.cpu / max(result.duration, 1e-6), 1),
        "usage": window,
    }


async def _load(
    runs: list[wrk.Run], folder: Path, servers: dict[str, Any]
) -> tuple[wrk.Result, dict[str, Any]]:
    window = Window(servers)
    result = await wrk.run(runs, folder)
    return result, window.close(result.cpu)


async def anchor_server(
    cluster: Cluster, name: str, app: str, env: dict[str, str], ready_path: str = "/health"
) -> Server:
    """An anchor app under uvicorn with a node's flags, on a port of its own."""
    server = Server(
        name, app, free_port(), cluster.base_env() | env, cluster.folder, ready_path, factory=True
    )
    cluster.server(server).start()
    await server.wait_ready()
    return server


async def cached_get(ctx: Context, node: Server) -> dict[str, Any]:
    path = f"/products/{catalog.GET_SKU}"
    headers = {"Authorization": f"Bearer {ctx.token}"}
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(node.url + path, headers=headers)
        response.raise_for_status()
        document = response.json()
    script = wrk.get_script(ctx.token)
    ours, window = await _load(
        [wrk.Run(node.url + path, script, CONNECTIONS, ctx.seconds)],
        ctx.folder,
        {node.name: node.cpu},
    )
    env = {anchors.DOCUMENTS_ENV: json.dumps({catalog.GET_SKU: document})}
    app = "tools.bench.anchors:starlette_app"
    bare = await anchor_server(ctx.cluster, "starlette", app, env, ready_path=path)
    try:
        theirs, bare_window = await _load(
            [wrk.Run(bare.url + path, script, CONNECTIONS, ctx.seconds)],
            ctx.folder,
            {bare.name: bare.cpu},
        )
    finally:
        await ctx.cluster.stop(bare)
    return {
        "connections": CONNECTIONS,
        "orderflow": figures(ours, window),
        "anchor": figures(theirs, bare_window),
        "ratio": _ratio(ours.rate, theirs.rate),
    }


async def spread_orders(ctx: Context, node: Server) -> dict[str, Any]:
    def script() -> str:
        return wrk.orders_script(
            ctx.token, ctx.prefix(), sku_format=catalog.SPREAD_FORMAT, sku_count=SPREAD_COUNT
        )

    conn = await ctx.cluster.connect()
    try:
        copied = await anchors.copy_tables(conn, catalog.SPREAD_PREFIX)
    finally:
        await conn.close()
    ours, window = await _load(
        [wrk.Run(node.url, script(), CONNECTIONS, ctx.seconds)], ctx.folder, {node.name: node.cpu}
    )
    env = {
        anchors.DATABASE_ENV: ctx.cluster.database_url,
        anchors.POOL_ENV: str(ctx.cluster.pool),
    }
    naive = await anchor_server(ctx.cluster, "naive", "tools.bench.anchors:naive_app", env)
    try:
        theirs, naive_window = await _load(
            [wrk.Run(naive.url + "/orders", script(), CONNECTIONS, ctx.seconds)],
            ctx.folder,
            {naive.name: naive.cpu},
        )
    finally:
        await ctx.cluster.stop(naive)
    return {
        "connections": CONNECTIONS,
        "skus": copied,
        "orderflow": figures(ours, window),
        "anchor": figures(theirs, naive_window),
        "ratio": _ratio(ours.rate, theirs.rate),
    }


def split(clients: int, parts: int) -> list[int]:
    """`clients` connections over `parts` nodes, as evenly as whole numbers go."""
    share, extra = divmod(clients, parts)
    return [share + (i < extra) for i in range(parts) if share + (i < extra) > 0]


async def hot_sku(ctx: Context, nodes: list[Server]) -> dict[str, Any]:
    levels = []
    servers = {node.name: node.cpu for node in nodes}
    for clients in HOT_LEVELS:
        conn = await ctx.cluster.connect()
        try:
            before = await catalog.stock(conn, catalog.HOT_SKU)
            runs = [  # keys unique per process: the same key from the same customer is a replay
                wrk.Run(node.url, wrk.orders_script(ctx.token, ctx.prefix(), sku=catalog.HOT_SKU),
                        count, ctx.seconds)
                for node, count in zip(nodes, split(clients, len(nodes)), strict=False)
            ]  # fmt: skip
            result, window = await _load(runs, ctx.folder, servers)
            await asyncio.sleep(SETTLE)
            after = await catalog.stock(conn, catalog.HOT_SKU)
        finally:
            await conn.close()
        level = figures(result, window) | {"clients": clients}
        level["check"] = oversell_check(before, after, result)
        levels.append(level)
    pool = len(nodes) * ctx.cluster.pool
    pgbench = await anchors.pgbench(
        ctx.cluster.database_url, catalog.HOT_SKU, pool, ctx.seconds, ctx.folder
    )
    pgbench["cpu_pct"] = round(100 * pgbench.pop("cpu") / max(ctx.seconds, 1e-6), 1)
    for level in levels:
        level["ratio"] = _ratio(level["rate"], pgbench["tps"])
    sellout = await sell_out(ctx, nodes)
    return {"nodes": len(nodes), "levels": levels, "anchor": pgbench, "sellout": sellout}


async def sell_out(ctx: Context, nodes: list[Server], clients: int = 64) -> dict[str, Any]:
    """More buyers than units: the units acknowledged are the units held, all of them."""
    runs = [
        wrk.Run(node.url, wrk.orders_script(ctx.token, ctx.prefix(), sku=catalog.SELLOUT_SKU),
                count, min(ctx.seconds, 3.0))
        for node, count in zip(nodes, split(clients, len(nodes)), strict=False)
    ]  # fmt: skip
    result = await wrk.run(runs, ctx.folder)
    await asyncio.sleep(SETTLE)
    conn = await ctx.cluster.connect()
    try:
        after = await catalog.stock(conn, catalog.SELLOUT_SKU)
    finally:
        await conn.close()
    return {
        "stock": after.on_hand,
        "acknowledged": result.ok,
        "refused": result.errors["status"],
        "held_by_database": after.reserved,
        "oversold": max(0, result.ok - after.on_hand, after.reserved - after.on_hand),
        "ok": result.ok == after.reserved <= after.on_hand,
    }


def oversell_check(
    before: catalog.Stock, after: catalog.Stock, result: wrk.Result
) -> dict[str, Any]:
    """The database against what the API acknowledged (one unit per order).

    Every acknowledged order must hold its unit (`lost` 0); units held beyond the
    acknowledged ones can only be orders still in flight when wrk stopped;
    nothing is sold past the stock (`oversold` 0)."""
    held = after.reserved - before.reserved
    unacknowledged = held - result.ok
    return {
        "initial_on_hand": before.on_hand,
        "acknowledged": result.ok,
        "held_by_database": held,
        "lost": max(0, -unacknowledged),
        "in_flight_at_stop": result.in_flight,
        "held_unacknowledged": max(0, unacknowledged),
        "unexplained": max(0, unacknowledged - result.in_flight),
        "oversold": max(0, after.reserved - after.on_hand, after.reserved - before.on_hand),
        "ok": unacknowledged >= 0
        and unacknowledged <= result.in_flight
        and after.reserved <= min(after.on_hand, before.on_hand),
    }


def _ratio(ours: float, theirs: float) -> float | None:
    return round(ours / theirs, 3) if theirs and not math.isnan(theirs) else None
