"""Real nodes for tests: the app served by uvicorn on a loopback socket, in this event loop."""

import asyncio
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import httpx
import jwt
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr

from backend.app import create_app
from backend.documents import Change, Product
from backend.node import State
from backend.seal import seal
from backend.settings import Settings
from database import Json, PostgresDatabase

BUS_KEY = "test-bus-key"  # what test nodes seal their bus messages with
JWT_SECRET = "test-jwt-secret-of-at-least-32-bytes!"  # what test nodes verify HS256 tokens with
ISSUER = "https://auth.orderflow.test/auth/v1"  # the `iss` test nodes expect


def token(sub: str, role: str | None = None, *, minutes: float = 60, **claims: Any) -> str:
    """A token shaped like Supabase Auth's, signed with the test nodes' secret."""
    now = int(time.time())
    body: dict[str, Any] = {
        "sub": sub,
        "aud": "authenticated",
        "role": "authenticated",
        "iat": now,
        "exp": now + int(minutes * 60),
        "email": f"{sub}@example.com",
        "iss": ISSUER,
        "app_metadata": {"role": role} if role else {},
    }
    return jwt.encode(body | claims, JWT_SECRET, algorithm="HS256")


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


ADMIN_TOKEN = token("test-admin", "admin", minutes=24 * 60)
ADMIN = bearer(ADMIN_TOKEN)


def sealed(change: Mapping[str, Any]) -> str:
    """A change as a node would publish it."""
    return seal(json.dumps(change, separators=(",", ":")), BUS_KEY.encode())


def change(sku: str, version: int, on_hand: int, product_id: int = 1, **extra: Any) -> Change:
    """A change as a node would publish it; `extra` overrides or adds fields."""
    made: Change = {
        "sku": sku,
        "product_id": product_id,
        "name": sku,
        "price_cents": 100,
        "low_stock_threshold": 1,
        "on_hand": on_hand,
        "reserved": 0,
        "available": on_hand,
        "delta_on_hand": 0,
        "delta_reserved": 0,
        "version": version,
        "seq": version,
        "reason": "count",
        "order_id": None,
        "node": "test",
        "committed_at": "2026-01-01T00:00:00Z",
        "deleted": False,
    }
    return cast(Change, made | extra)


def synthetic(product: Json, version: int, padding: str) -> Change:
    """Another node's restock of `product` at `version`, padded to fill socket buffers."""
    return change(
        product["sku"],
        version,
        100 + version,
        product["id"],
        delta_on_hand=1,
        reason="restock",
        node="synthetic",
        padding=padding,
    )


def node_settings(database_url: str, node_id: str = "node-test", **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "node_id": node_id,
        "database_url": SecretStr(database_url),
        "redis_url": None,
        "catchup_interval_seconds": 0.2,
        "sweep_interval_seconds": 0.2,
        "db_pool_max": 10,
        "bus_key": SecretStr(BUS_KEY),
        "supabase_jwt_secret": SecretStr(JWT_SECRET),
        "auth_issuer": ISSUER,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@dataclass
class Node:
    client: httpx.AsyncClient
    app: FastAPI

    @property
    def ws_url(self) -> str:
        return str(self.client.base_url).replace("http://", "ws://") + "/ws"

    @property
    def state(self) -> State:
        state: State = self.app.state.node.state
        return state


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Run one node until the block ends; yield an HTTP client pointed at it."""
    async with run_node(settings) as node:
        yield node.client


@asynccontextmanager
async def run_node(
    settings: Settings, *, wait_loaded: bool = True, app: FastAPI | None = None
) -> AsyncIterator[Node]:
    """Run one node until the block ends; yield its client and its app.

    A node starts before its database answers; by default this waits until it
    has loaded the catalog, as a load balancer waits for `/ready`.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = app or create_app(settings)
    config = uvicorn.Config(app, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("node exited during startup")
            await asyncio.sleep(0.01)
        if wait_loaded:
            await eventually(lambda: app.state.node.loaded, 30, "the node loaded its catalog")
        base_url = f"http://127.0.0.1:{port}"
        # Tests act as an admin unless they say otherwise (tests/test_access.py does).
        async with httpx.AsyncClient(base_url=base_url, headers=ADMIN, timeout=30) as client:
            yield Node(client, app)
    finally:
        server.should_exit = True
        await task
        sock.close()


async def make_product(
    db: PostgresDatabase, on_hand: int = 10, price_cents: int = 1000, sku: str | None = None
) -> Product:
    sku = sku or f"SKU-{uuid.uuid4().hex[:10]}"
    result = await db.create_product(sku, f"Product {sku}", price_cents, on_hand, 2, "factory")
    product: Product = result["product"]
    return product


async def ledger_on_hand(db: PostgresDatabase, sku: str) -> int:
    """The sum of the ledger's on_hand deltas for a SKU, across every page."""
    total, before = 0, None
    while True:
        page = await db.list_stock_events(sku, before, 500)
        total += sum(event["delta_on_hand"] for event in page["items"])
        if page["next"] is None:
            return int(total)
        before = page["next"]


async def until(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    """Poll an async check (a request to another process) until it holds."""
    try:
        async with asyncio.timeout(within):
            while True:
                if await check():
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"{what} did not hold within {within}s") from None


async def eventually(check: Callable[[], bool], within: float, what: str = "condition") -> float:
    """Poll a condition on other nodes' state (there is no event to await across
    processes' worth of caches); return how long it took to hold."""
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if time.monotonic() - start > within:
            raise AssertionError(f"{what} did not hold within {within}s")
        await asyncio.sleep(0.01)
