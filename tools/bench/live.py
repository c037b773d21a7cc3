"""The WebSocket scenarios, OrderFlow beside a bare `websockets` server.

- memory: a fresh node's RSS before and after 1,000 idle clients (each
  following one SKU, so what stays is the connection, not a snapshot in
  flight), per client; the same for the bare server.
- fan-out: 1,000 clients of one node, 200 changes committed in one
  transaction (so they reach the node together, as they do under load), time
  from the first change any client receives to the last one the last client
  receives; the bare server broadcasts the same 200 messages to 1,000 clients.
- propagation: 100 clients per node on every node, an open-loop writer at a
  sustained rate over the nodes (after WARM_UP seconds of the same writes, not
  counted: database pools and connections open during those); latency from
  each change's commit (Postgres's commit timestamp of its transaction) to
  each client's receipt, and every change each client missed, by the ledger.
"""

import asyncio
import dataclasses
import json
import time
from typing import Any

from tools.bench import catalog, stats, writer
from tools.bench.bare_ws import BareWs
from tools.bench.cluster import Server
from tools.bench.scenarios import Context
from tools.bench.usage import Window
from tools.bench.wsclients import ClientPool, Collected

MEMORY_CLIENTS = 1000
FANOUT_CLIENTS = 1000
FANOUT_MESSAGES = 200
PER_NODE = 100
SETTLE = 2.0  # seconds for a server's memory to settle after the clients connect
QUIET = 2.0  # seconds without a new receipt that end a wait for stragglers
WARM_UP = 2.0  # seconds of writes before propagation is measured, not counted


async def memory(ctx: Context, node: Server, snapshot: str) -> dict[str, Any]:
    """`snapshot` is what the bare server sends a new client: the node's, for one SKU."""
    url = f"{node.ws_url}?skus={catalog.MEMORY_SKU}"
    ours = await _rss_per_client(url, node.rss)
    bare = BareWs(ctx.folder, snapshot, [])
    bare.start()
    try:
        await bare.wait_ready()
        theirs = await _rss_per_client(bare.ws_url, bare.rss)
    finally:
        bare.stop()
    return {
        "clients": MEMORY_CLIENTS,
        "orderflow": ours,
        "anchor": theirs,
        "ratio": round(ours["per_client"] / theirs["per_client"], 3)
        if theirs["per_client"] > 0
        else None,
    }


async def _rss_per_client(url: str, rss: Any) -> dict[str, Any]:
    async with ClientPool([url], 10, processes=1):
        pass  # the first connections load what every later one shares
    await asyncio.sleep(SETTLE)
    before = rss()
    async with ClientPool([url], MEMORY_CLIENTS) as pool:
        await asyncio.sleep(SETTLE)
        after = rss()
        collected = await pool.collect()
    return {
        "rss_before": before,
        "rss_after": after,
        "per_client": (after - before) / MEMORY_CLIENTS,
        "generators_cpu_s": round(collected.cpu, 2),
    }


async def fanout(ctx: Context, node: Server) -> dict[str, Any]:
    skus = catalog.fanout_skus(FANOUT_MESSAGES)
    async with ClientPool([node.ws_url], FANOUT_CLIENTS) as pool:
        window = Window({node.name: node.cpu})
        conn = await ctx.cluster.connect()
        try:
            committed = time.time()
            changes = await catalog.adjust_at_once(conn, skus)
        finally:
            await conn.close()
        collected = await _wait_for(pool, FANOUT_CLIENTS * FANOUT_MESSAGES)
        ours = _spread(collected, committed) | {"usage": window.close(collected.cpu)}
    messages = [json.dumps({"type": "stock", **change}) for change in changes]
    snapshot = json.dumps({"type": "snapshot", "node": "bare", "products": []})
    bare = BareWs(ctx.folder, snapshot, messages)
    bare.start()
    try:
        await bare.wait_ready()
        async with ClientPool([bare.ws_url], FANOUT_CLIENTS) as pool:
            window = Window({"bare": bare.cpu})
            sent = await bare.broadcast()
            collected = await _wait_for(pool, FANOUT_CLIENTS * FANOUT_MESSAGES)
            theirs = _spread(collected, sent) | {"usage": window.close(collected.cpu)}
    finally:
        bare.stop()
    return {
        "clients": FANOUT_CLIENTS,
        "messages": FANOUT_MESSAGES,
        "orderflow": ours,
        "anchor": theirs,
        "ratio": round(ours["rate"] / theirs["rate"], 3) if theirs["rate"] else None,
    }


async def _wait_for(pool: ClientPool, expected: int, within: float = 60.0) -> Collected:
    """Until `expected` changes arrived over all clients, or none came for QUIET seconds."""
    deadline = time.monotonic() + within
    seen, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        changes = (await pool.status())["changes"]
        if changes >= expected:
            break
        if changes != seen:
            seen, quiet_since = changes, time.monotonic()
        elif changes > 0 and time.monotonic() - quiet_since > QUIET:
            break
        await asyncio.sleep(0.05)
    return await pool.collect()


def _spread(collected: Collected, started: float) -> dict[str, Any]:
    firsts = [c["first"] for c in collected.clients if c["first"] is not None]
    lasts = [c["last"] for c in collected.clients if c["last"] is not None]
    received = sum(len(c["seqs"]) for c in collected.clients)
    if not firsts:
        return {"received": 0, "span": None, "rate": 0.0, "from_start": None}
    span = max(lasts) - min(firsts)
    return {
        "received": received,
        "span": span,
        "rate": received / span if span > 0 else 0.0,
        "from_start": max(lasts) - started,
        "first_after_start": min(firsts) - started,
    }


async def propagation(ctx: Context, nodes: list[Server], rate: float) -> dict[str, Any]:
    skus = catalog.propagation_skus(50)
    urls = [node.ws_url for node in nodes]
    conn = await ctx.cluster.connect()
    try:
        async with ClientPool(urls, PER_NODE * len(nodes)) as pool:
            plan = writer.Plan(
                urls=[node.url for node in nodes], key=ctx.cluster.admin_key, skus=skus,
                rate=rate, seconds=WARM_UP, connections=16 * len(nodes),
            )  # fmt: skip
            await writer.run(plan)  # pools, connections and caches warm, then measure
            await _wait_for(pool, 1 << 62, within=QUIET + 1)  # the warm-up's stragglers
            await pool.reset()
            start_seq = await catalog.last_seq(conn)
            window = Window({node.name: node.cpu for node in nodes})
            written = await writer.run(dataclasses.replace(plan, seconds=ctx.seconds))
            ledger = await catalog.ledger_since(conn, start_seq)
            collected = await _wait_for(pool, len(ledger) * pool.count)
            usage = window.close(collected.cpu + written.pop("cpu"))
            commits = await catalog.commit_times(conn, start_seq)
    finally:
        await conn.close()
    return {
        "nodes": len(nodes),
        "clients": PER_NODE * len(nodes),
        "writer": written,
        "ledger_changes": len(ledger),
        "usage": usage,
        **_latencies(collected, commits, {node.ws_url: node.name for node in nodes}),
        **_missed(collected, ledger),
    }


def _latencies(
    collected: Collected, commits: dict[int, float], names: dict[str, str]
) -> dict[str, Any]:
    everything: list[float] = []
    by_node: dict[str, list[float]] = {}
    for client in collected.clients:
        mine = [
            at - commits[seq]
            for seq, at in zip(client["seqs"], client["received"], strict=True)
            if seq in commits
        ]
        everything.extend(mine)
        by_node.setdefault(names.get(client["url"], client["url"]), []).extend(mine)
    return {
        "receipts": len(everything),
        "p50": stats.percentile(everything, 50),
        "p99": stats.percentile(everything, 99),
        "max": max(everything, default=None),
        "quantiles": stats.quantiles(everything, stats.CDF_PERCENTS),
        "by_node": {
            name: {
                "p50": stats.percentile(values, 50),
                "p99": stats.percentile(values, 99),
                "quantiles": stats.quantiles(values, stats.CDF_PERCENTS),
            }
            for name, values in sorted(by_node.items())
        },
    }


def _missed(collected: Collected, ledger: dict[int, tuple[str, int]]) -> dict[str, Any]:
    results = [
        stats.missed_changes(ledger, client["seqs"], client["latest"])
        for client in collected.clients
    ]
    return {
        "missed": sum(r.missed for r in results),
        "clients_missing_some": sum(r.missed > 0 for r in results),
        "stale_products": sum(r.stale for r in results),
    }
