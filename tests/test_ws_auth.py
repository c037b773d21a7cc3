"""Who may listen and follow on `/ws`: tokens by message or query, origins, expiry."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from backend.auth import keys
from database import PostgresDatabase
from tests.support import ADMIN_TOKEN, Node, bearer, node_settings, run_node, token


async def until(ws: ClientConnection, kind: str) -> dict[str, Any]:
    async with asyncio.timeout(5):
        while True:
            message: dict[str, Any] = json.loads(await ws.recv())
            if message["type"] == kind:
                return message


async def send(ws: ClientConnection, **message: Any) -> None:
    await ws.send(json.dumps(message))


@pytest.fixture
async def node(database_url: str) -> AsyncIterator[Node]:
    async with run_node(node_settings(database_url, allowed_origins="https://shop.example")) as n:
        body = {"sku": "WS-1", "name": "Socket", "price_cents": 100, "on_hand": 10}
        assert (await n.client.post("/products", json=body)).status_code == 201
        yield n


async def order_for(node: Node, customer: str) -> str:
    response = await node.client.post(
        "/orders",
        json={"items": [{"sku": "WS-1", "quantity": 1}]},
        headers=bearer(token(customer)),
    )
    assert response.status_code == 201, response.text
    order_id: str = response.json()["id"]
    return order_id


async def test_a_customer_follows_their_own_orders_only(node: Node) -> None:
    mine, theirs = await order_for(node, "cust-a"), await order_for(node, "cust-b")
    async with connect(node.ws_url) as ws:
        await until(ws, "snapshot")
        await send(ws, type="follow", order_id=mine)
        assert (await until(ws, "error"))["code"] == "UNAUTHENTICATED"
        await send(ws, type="auth", token=token("cust-a"))
        assert (await until(ws, "auth"))["principal"]["role"] == "customer"
        await send(ws, type="follow", order_id=theirs)
        assert (await until(ws, "error"))["code"] == "NOT_FOUND"
        await send(ws, type="follow", order_id=mine)
        assert (await until(ws, "order"))["order"]["id"] == mine


async def test_a_key_without_orders_read_may_watch_stock_but_not_follow(
    node: Node, db: PostgresDatabase
) -> None:
    key = (await keys.create(db, "scanner", ["catalog:write"]))["key"]
    order = await order_for(node, "cust-a")
    async with connect(f"{node.ws_url}?access_token={key}") as ws:
        await until(ws, "snapshot")
        await send(ws, type="follow", order_id=order)
        assert (await until(ws, "error"))["code"] == "FORBIDDEN"
        await send(ws, type="auth", token="ofk_not-a-real-key")
        assert (await until(ws, "error"))["code"] == "UNAUTHENTICATED"
        await send(ws, type="auth", token=ADMIN_TOKEN)  # a better token replaces it
        await until(ws, "auth")
        await send(ws, type="follow", order_id=order)
        assert (await until(ws, "order"))["order"]["id"] == order


async def test_a_bad_query_token_is_refused_and_closed(node: Node) -> None:
    async with connect(f"{node.ws_url}?access_token=nonsense") as ws:
        assert (await until(ws, "error"))["code"] == "UNAUTHENTICATED"
        with pytest.raises(ConnectionClosed):
            await until(ws, "snapshot")
        assert ws.close_code == 1008


async def test_a_closed_catalog_wants_auth_before_any_stock(database_url: str) -> None:
    async with run_node(node_settings(database_url, public_catalog=False)) as node:
        async with connect(node.ws_url) as ws:
            await send(ws, type="subscribe", skus=None)
            assert (await until(ws, "error"))["code"] == "UNAUTHENTICATED"
        async with connect(node.ws_url) as ws:
            await send(ws, type="auth", token=token("cust-a"))
            assert (await until(ws, "auth"))["principal"]["id"] == "cust-a"
            assert (await until(ws, "snapshot"))["type"] == "snapshot"


async def test_browsers_connect_from_the_nodes_origin_or_an_allowed_one(node: Node) -> None:
    host = str(node.client.base_url).removeprefix("http://")
    for origin in (f"http://{host}", "https://shop.example"):
        async with connect(node.ws_url, origin=origin) as ws:  # type: ignore[arg-type]
            await until(ws, "snapshot")
    with pytest.raises(InvalidStatus) as refused:
        async with connect(node.ws_url, origin="https://evil.example"):  # type: ignore[arg-type]
            pass
    assert refused.value.response.status_code == 403


async def test_a_connection_ends_with_its_token(node: Node) -> None:
    short = token("cust-a", minutes=2 / 60)  # two seconds
    async with connect(node.ws_url) as ws:
        await send(ws, type="auth", token=short)
        await until(ws, "auth")
        assert await until(ws, "reconnect") == {"type": "reconnect", "reason": "token_expired"}
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 1008
