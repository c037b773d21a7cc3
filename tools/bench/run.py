"""One run: the cluster, the catalog, the scenarios in an order that keeps each
one's conditions, and everything stopped at the end.

Order: a fresh node first (memory needs one), then fan-out and the cached read
on it, then two more nodes for the hot SKU and propagation; the 10,000 SKUs
of the spread scenario are made last, on a node started after them, so that
WebSocket snapshots before stay small. A scenario that fails is reported and
the others still run.
"""

import asyncio
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from backend.credentials import CredentialsError
from backend.embedded import EmbeddedServerError
from tools.bench import BenchError, catalog, live, scenarios, wrk
from tools.bench.cluster import Cluster, Server
from tools.bench.report import machine
from tools.bench.scenarios import Context

SCENARIOS = ("get", "spread", "hot", "propagation", "fanout", "memory")
_FIRST_NODE = {"memory", "fanout", "get", "hot", "propagation"}
_THREE_NODES = {"hot", "propagation"}
_FAILURES = (BenchError, OSError, httpx.HTTPError, asyncpg.PostgresError, TimeoutError)


@dataclass(frozen=True)
class Options:
    seconds: float
    only: tuple[str, ...]
    rate: float  # propagation's target, changes/s
    pool: int  # DB_POOL_MAX of each node and of the naive endpoint
    nodes: int  # for the hot SKU and propagation


def check_tools(only: tuple[str, ...]) -> None:
    """Fail before anything starts if a load generator is missing."""
    if {"get", "spread", "hot"} & set(only):
        wrk.require()
    if "hot" in only and shutil.which("pgbench") is None:
        raise BenchError("pgbench is not installed: apt-get install postgresql-client")


async def run(options: Options) -> dict[str, Any]:
    check_tools(options.only)
    results: dict[str, Any] = {"machine": machine(), "options": asdict(options), "failed": {}}
    with tempfile.TemporaryDirectory(prefix="orderflow-bench-") as tmp:
        folder = Path(tmp)
        os.chmod(folder, 0o755)  # Postgres runs as its own account when we are root
        cluster = Cluster(folder, pool=options.pool)
        try:
            await _start(cluster)
            ctx = Context(cluster, folder, options.seconds, cluster.customer_token())
            await _small_catalog(cluster)
            await _first_phase(ctx, options, results)
            if "spread" in options.only:
                await _spread_phase(ctx, results)
        finally:
            await asyncio.to_thread(cluster.close)
    results["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return results


async def _start(cluster: Cluster) -> None:
    try:
        await cluster.start()
    except (EmbeddedServerError, CredentialsError, *_FAILURES) as exc:
        raise BenchError(f"could not start the cluster: {type(exc).__name__}: {exc}") from exc


async def _small_catalog(cluster: Cluster) -> None:
    conn = await cluster.connect()
    try:
        skus = [catalog.GET_SKU, catalog.HOT_SKU, catalog.MEMORY_SKU]
        skus += catalog.propagation_skus(50) + catalog.fanout_skus(live.FANOUT_MESSAGES)
        await catalog.create(conn, skus)
        await catalog.create(conn, [catalog.SELLOUT_SKU], on_hand=catalog.SELLOUT_STOCK)
    finally:
        await conn.close()


async def _first_phase(ctx: Context, options: Options, results: dict[str, Any]) -> None:
    wanted = set(options.only)
    if not wanted & _FIRST_NODE:
        return
    (first,) = await ctx.cluster.start_nodes(["node-1"])
    nodes = [first]
    try:
        if "memory" in wanted:
            snapshot = await _one_product_snapshot(first, catalog.MEMORY_SKU)
            await _guard(results, "memory", live.memory(ctx, first, snapshot))
        if "fanout" in wanted:
            await _guard(results, "fanout", live.fanout(ctx, first))
        if "get" in wanted:
            await _guard(results, "get", scenarios.cached_get(ctx, first))
        if wanted & _THREE_NODES:
            names = [f"node-{i + 2}" for i in range(options.nodes - 1)]
            nodes += await ctx.cluster.start_nodes(names)
        if "hot" in wanted:
            await _guard(results, "hot", scenarios.hot_sku(ctx, nodes))
        if "propagation" in wanted:
            await _guard(results, "propagation", live.propagation(ctx, nodes, options.rate))
    finally:
        await ctx.cluster.stop(*nodes)


async def _spread_phase(ctx: Context, results: dict[str, Any]) -> None:
    conn = await ctx.cluster.connect()
    try:
        await catalog.create(conn, catalog.spread_skus(scenarios.SPREAD_COUNT))
    finally:
        await conn.close()
    (node,) = await ctx.cluster.start_nodes(["node-1"])
    try:
        await _guard(results, "spread", scenarios.spread_orders(ctx, node))
    finally:
        await ctx.cluster.stop(node)


async def _one_product_snapshot(node: Server, sku: str) -> str:
    """What a node sends a client that follows one SKU, for the bare server to send too."""
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{node.url}/products/{sku}")
        response.raise_for_status()
    return json.dumps({"type": "snapshot", "node": "bare", "products": [response.json()]})


async def _guard(results: dict[str, Any], name: str, scenario: Any) -> None:
    try:
        results[name] = await scenario
    except _FAILURES as exc:
        results["failed"][name] = f"{type(exc).__name__}: {exc}"
