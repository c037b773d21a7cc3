"""After the load: how long until every node's cache and every WebSocket client's view
equal the database. Polled, since the views live in other processes and sockets."""

import asyncio
import time
from collections.abc import Callable

import asyncpg
import httpx

from tools.chaos.check import compare_catalog, compare_followed
from tools.chaos.cluster import NodeProcess
from tools.chaos.db import read_state
from tools.chaos.live import LiveClient
from tools.chaos.model import Convergence, DbState, View

_PAGE = 1000
ASPECTS: dict[str, Callable[[View, DbState], list[str]]] = {
    "catalog": compare_catalog,
    "follows": compare_followed,
}


async def converge(
    conn: asyncpg.Connection,
    http: httpx.AsyncClient,
    nodes: list[NodeProcess],
    clients: list[LiveClient],
    since: float,
    patience: float,
) -> list[Convergence]:
    """Poll until every view matches or `patience` seconds after `since` have passed."""
    aspects = [(node.name, "catalog") for node in nodes]
    aspects += [(client.name, aspect) for client in clients for aspect in ASPECTS]
    matched: dict[tuple[str, str], float] = {}
    diffs: dict[tuple[str, str], list[str]] = {}
    while len(matched) < len(aspects) and time.monotonic() - since < patience:
        db = await read_state(conn, events=False)
        views = [await node_view(http, node) for node in nodes]
        views += [client.view() for client in clients]
        seen = time.monotonic() - since
        for view in views:
            for aspect, differ in ASPECTS.items():
                if (view.name, aspect) in matched or (
                    aspect != "catalog" and view.followed is None
                ):
                    continue
                diffs[(view.name, aspect)] = differ(view, db)
                if not diffs[(view.name, aspect)]:
                    matched[(view.name, aspect)] = seen
        await asyncio.sleep(0.05)
    return [
        Convergence(
            name, aspect, matched.get((name, aspect)), tuple(diffs.get((name, aspect), [])[:10])
        )
        for name, aspect in aspects
    ]


async def node_view(http: httpx.AsyncClient, node: NodeProcess) -> View:
    """The node's cache as `GET /products` serves it, every page."""
    products: dict[str, tuple[int, int, int, int]] = {}
    after: str | None = None
    for _ in range(100):
        params: dict[str, str | int] = {"limit": _PAGE} | ({"after": after} if after else {})
        try:
            response = await http.get(f"{node.url}/products", params=params, timeout=2.0)
            page = response.json() if response.status_code == 200 else {"items": [], "next": None}
        except (httpx.HTTPError, ValueError):
            page = {"items": [], "next": None}
        for p in page["items"]:
            products[p["sku"]] = (p["id"], p["version"], p["on_hand"], p["reserved"])
        after = page["next"]
        if after is None:
            break
    return View(node.name, products)
