"""Several real nodes on real Postgres and Redis stay in step, whatever Redis does."""

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as redis
from redis.asyncio.client import PubSub
from websockets.asyncio.client import ClientConnection, connect

from backend.bus import CHANNEL
from backend.embedded import EmbeddedRedis, free_port
from database import Json
from tests.frames import unbatched
from tests.support import (
    ADMIN_TOKEN,
    Node,
    eventually,
    node_settings,
    run_node,
    sealed,
    synthetic,
)


@pytest.fixture
async def nodes_factory(
    database_url: str,
) -> AsyncIterator[Callable[..., Awaitable[list[Node]]]]:
    async with AsyncExitStack() as stack:

        async def start(redis_url: str, count: int = 3, **overrides: Any) -> list[Node]:
            return [
                await stack.enter_async_context(
                    run_node(
                        node_settings(database_url, f"node-{i}", redis_url=redis_url, **overrides)
                    )
                )
                for i in range(1, count + 1)
            ]

        yield start


async def create_product(node: Node, sku: str, on_hand: int = 100) -> Json:
    body = {"sku": sku, "name": sku, "price_cents": 100, "on_hand": on_hand}
    response = await node.client.post("/products", json=body)
    assert response.status_code == 201, response.text
    product: Json = response.json()
    return product


async def adjust(node: Node, sku: str, delta: int) -> Json:
    response = await node.client.post(
        f"/products/{sku}/adjustments", json={"delta": delta, "reason": "restock"}
    )
    assert response.status_code == 200, response.text
    change: Json = response.json()
    return change


async def converged(nodes: list[Node], sku: str, version: int, within: float) -> float:
    """Wait until every node's cache shows `version` of `sku`; return how long it took."""
    return await eventually(
        lambda: all(node.state["cache"].version_of(sku) == version for node in nodes),
        within,
        f"every node at version {version} of {sku}",
    )


async def next_message(ws: ClientConnection, kind: str) -> Json:
    async with asyncio.timeout(5):
        while True:
            message: Json = json.loads(await ws.recv())
            if message["type"] == kind:
                return message


async def test_a_change_on_node_a_reaches_a_websocket_client_on_node_c(
    nodes_factory: Callable[..., Awaitable[list[Node]]], redis_server: EmbeddedRedis
) -> None:
    a, b, c = await nodes_factory(redis_server.url)
    await create_product(a, "LIVE-1", on_hand=10)
    await create_product(a, "OTHER", on_hand=10)
    await converged([a, b, c], "LIVE-1", 1, within=5)

    async with connect(c.ws_url + "?skus=LIVE-1") as ws:
        snapshot = await next_message(ws, "snapshot")
        assert snapshot["node"] == "node-3"
        assert [(p["sku"], p["version"]) for p in snapshot["products"]] == [("LIVE-1", 1)]

        order = await a.client.post("/orders", json={"items": [{"sku": "LIVE-1", "quantity": 3}]})
        assert order.status_code == 201
        await adjust(a, "OTHER", 1)  # filtered out for this client

        stock = await next_message(ws, "stock")
        assert (stock["sku"], stock["version"], stock["available"]) == ("LIVE-1", 2, 7)
        assert (stock["node"], stock["reason"]) == ("node-1", "reserved")

    await converged([a, b, c], "LIVE-1", 2, within=5)
    for node in (a, b, c):
        product = (await node.client.get("/products/LIVE-1")).json()
        assert (product["version"], product["available"], product["reserved"]) == (2, 7, 3)
    assert c.state["metrics"].changes.labels("bus", "applied")._value.get() >= 1


async def test_an_orders_lines_travel_as_one_bus_message_and_reach_clients_in_one_frame(
    nodes_factory: Callable[..., Awaitable[list[Node]]], redis_server: EmbeddedRedis
) -> None:
    a, b = await nodes_factory(redis_server.url, count=2)
    skus = ["LINES-1", "LINES-2", "LINES-3"]
    for sku in skus:
        await create_product(a, sku, on_hand=10)
    await converged([a, b], skus[-1], 1, within=5)

    async with (
        redis.Redis.from_url(redis_server.url) as client,
        client.pubsub() as tap,
        connect(b.ws_url) as everything,
        connect(b.ws_url + "?skus=LINES-2") as filtered,
    ):
        await tap.subscribe(CHANNEL)
        await next_message(everything, "snapshot")
        await next_message(filtered, "snapshot")
        items = [{"sku": sku, "quantity": 2} for sku in skus]
        order = await a.client.post("/orders", json={"items": items})
        assert order.status_code == 201, order.text

        frame = json.loads(await asyncio.wait_for(everything.recv(), 5))
        assert frame["type"] == "batch"
        assert sorted(m["sku"] for m in frame["messages"]) == skus
        assert {(m["type"], m["available"]) for m in frame["messages"]} == {("stock", 8)}
        alone = json.loads(await asyncio.wait_for(filtered.recv(), 5))
        assert (alone["type"], alone["sku"], alone["available"]) == ("stock", "LINES-2", 8)
        published = json.loads(await next_published(tap))
        assert sorted(change["sku"] for change in published["changes"]) == skus


async def next_published(tap: PubSub) -> bytes:
    """The data of the next message published on the channel."""
    async with asyncio.timeout(5):
        while True:
            message = await tap.get_message(timeout=5)
            if message is not None and message["type"] == "message":
                data: bytes = message["data"]
                return data


async def test_a_client_follows_its_order_across_nodes(
    nodes_factory: Callable[..., Awaitable[list[Node]]], redis_server: EmbeddedRedis
) -> None:
    a, b = await nodes_factory(redis_server.url, count=2)
    await create_product(a, "FOLLOW", on_hand=5)
    order = (
        await a.client.post("/orders", json={"items": [{"sku": "FOLLOW", "quantity": 1}]})
    ).json()

    async with connect(b.ws_url) as ws:
        await next_message(ws, "snapshot")
        await ws.send(json.dumps({"type": "follow", "order_id": order["id"]}))
        assert (await next_message(ws, "error"))["code"] == "UNAUTHENTICATED"
        await ws.send(json.dumps({"type": "auth", "token": ADMIN_TOKEN}))
        assert (await next_message(ws, "auth"))["principal"]["role"] == "admin"
        await ws.send(json.dumps({"type": "follow", "order_id": order["id"]}))
        assert (await next_message(ws, "order"))["order"]["status"] == "pending"
        assert (await a.client.post(f"/orders/{order['id']}/confirm")).status_code == 200
        assert (await next_message(ws, "order"))["order"]["status"] == "confirmed"

        await ws.send(json.dumps({"type": "follow", "order_id": "nonsense"}))
        assert (await next_message(ws, "error"))["code"] == "INVALID_INPUT"
        await ws.send(json.dumps({"type": "ping"}))
        await next_message(ws, "pong")


async def test_with_every_bus_message_lost_nodes_converge_within_two_seconds(
    nodes_factory: Callable[..., Awaitable[list[Node]]], redis_server: EmbeddedRedis
) -> None:
    nodes = await nodes_factory(redis_server.url, catchup_interval_seconds=0.5)
    for node in nodes:
        bus = node.state["bus"]
        assert bus is not None
        bus.faults.drop = lambda message: True
    a, b, c = nodes
    await create_product(a, "LOSSY", on_hand=10)
    await converged(nodes, "LOSSY", 1, within=2)

    for delta in range(1, 11):
        await adjust(nodes[delta % 3], "LOSSY", delta)
    await converged(nodes, "LOSSY", 11, within=2)

    answers = [(await n.client.get("/products/LOSSY")).json()["on_hand"] for n in nodes]
    assert answers == [10 + sum(range(1, 11))] * 3
    for node in (b, c):
        metrics = node.state["metrics"]
        assert metrics.changes.labels("bus", "applied")._value.get() == 0
        assert metrics.changes.labels("ledger", "applied")._value.get() > 0


async def test_duplicate_and_out_of_order_messages_change_nothing(
    nodes_factory: Callable[..., Awaitable[list[Node]]], redis_server: EmbeddedRedis
) -> None:
    a, b = await nodes_factory(redis_server.url, count=2)
    await create_product(a, "DUP", on_hand=10)
    changes = [await adjust(a, "DUP", delta) for delta in (1, 2, 3)]
    await converged([a, b], "DUP", 4, within=5)
    before = [(await n.client.get("/products/DUP")).json() for n in (a, b)]
    stale_before = b.state["metrics"].changes.labels("bus", "stale")._value.get()

    async with redis.Redis.from_url(redis_server.url) as client:
        for change in [*reversed(changes), *changes, changes[-1]]:
            await client.publish(CHANNEL, sealed(change))
        await client.publish(CHANNEL, "not json")
        await client.publish(CHANNEL, sealed({"sku": "DUP"}))
    # A marker change published after the replay: once it is applied, so is the replay.
    await adjust(a, "DUP", 1)
    await converged([a, b], "DUP", 5, within=5)

    after = [(await n.client.get("/products/DUP")).json() for n in (a, b)]
    for old, new in zip(before, after, strict=True):
        assert (new["on_hand"], new["version"]) == (old["on_hand"] + 1, 5)
    assert b.state["metrics"].changes.labels("bus", "stale")._value.get() >= stale_before + 7


async def test_with_redis_stopped_writes_succeed_and_nodes_converge_when_it_returns(
    nodes_factory: Callable[..., Awaitable[list[Node]]], tmp_path: Path
) -> None:
    own_redis = EmbeddedRedis(tmp_path / "redis", free_port())
    own_redis.start()
    try:
        a, b, c = await nodes_factory(own_redis.url)
        await create_product(a, "OUTAGE", on_hand=50)
        await converged([a, b, c], "OUTAGE", 1, within=5)

        own_redis.stop()
        for node in (a, b, c):
            order = await node.client.post(
                "/orders", json={"items": [{"sku": "OUTAGE", "quantity": 2}]}
            )
            assert order.status_code == 201  # a failed publish never fails a write
        await converged([a, b, c], "OUTAGE", 4, within=5)  # the ledger still carries changes

        own_redis.start()
        buses = [node.state["bus"] for node in (a, b, c)]
        await eventually(  # each node resubscribes, then resyncs
            lambda: all(bus is not None and bus.stats.subscriptions >= 2 for bus in buses),
            15,
            "every node resubscribed",
        )
        await adjust(b, "OUTAGE", 5)
        await converged([a, b, c], "OUTAGE", 5, within=5)
        answers = [(await n.client.get("/products/OUTAGE")).json()["available"] for n in (a, b, c)]
        assert answers == [50 + 5 - 6] * 3
        bus_b = b.state["bus"]
        assert bus_b is not None
        assert bus_b.stats.publish_failures >= 1
        for node in (a, b, c):
            assert "orderflow_resyncs_total 2.0" in (await node.client.get("/metrics")).text
    finally:
        own_redis.stop()


async def test_a_skipped_version_makes_the_node_reread_that_product(
    nodes_factory: Callable[..., Awaitable[list[Node]]], redis_server: EmbeddedRedis
) -> None:
    a, b = await nodes_factory(redis_server.url, count=2, catchup_interval_seconds=3600)
    await create_product(a, "GAP", on_hand=10)
    await converged([a, b], "GAP", 1, within=5)
    bus_b = b.state["bus"]
    assert bus_b is not None
    bus_b.faults.drop = lambda message: message["sku"] == "GAP" and message["version"] == 2

    await adjust(a, "GAP", 1)
    await adjust(a, "GAP", 2)

    await converged([a, b], "GAP", 3, within=5)
    assert (await b.client.get("/products/GAP")).json()["on_hand"] == 13
    metrics = (await b.client.get("/metrics")).text
    assert 'orderflow_sync_changes_total{outcome="gap",source="bus"} 1.0' in metrics
    assert "orderflow_gap_rereads_total 1.0" in metrics


async def read_until(ws: ClientConnection, latest: dict[str, int]) -> None:
    """Read until every SKU in `latest` has reached its version."""
    seen: dict[str, int] = {}
    async with asyncio.timeout(20):
        while any(seen.get(sku) != version for sku, version in latest.items()):
            for message in unbatched(json.loads(await ws.recv())):
                if message["type"] == "stock":
                    seen[message["sku"]] = message["version"]


async def small_socket(url: str) -> socket.socket:
    """A connected socket with a small receive buffer (which the kernel then does not
    grow): a client that stops reading on it soon holds the node's sends back."""
    parsed = urlsplit(url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (parsed.hostname, parsed.port))
    return sock


async def test_a_client_that_stops_reading_slows_nobody_and_ends_up_current(
    nodes_factory: Callable[..., Awaitable[list[Node]]], redis_server: EmbeddedRedis
) -> None:
    (node,) = await nodes_factory(redis_server.url, count=1)
    skus = [f"SLOW-{i:02d}" for i in range(40)]
    products = {sku: await create_product(node, sku) for sku in skus}
    rounds = 150

    async with (
        connect(
            node.ws_url, max_queue=1, sock=await small_socket(node.ws_url), compression=None
        ) as slow,
        connect(node.ws_url, max_size=None) as fast,
    ):
        await next_message(slow, "snapshot")
        await next_message(fast, "snapshot")
        hub = node.state["hub"]

        # Synthetic changes straight onto the bus, padded so they fill socket buffers;
        # then a few more bursts, which find the slow client's socket full.
        padding = "x" * 2000
        last = rounds + 4
        async with redis.Redis.from_url(redis_server.url) as client:
            for versions in [range(2, rounds + 2), *([v] for v in range(rounds + 2, last + 1))]:
                async with client.pipeline(transaction=False) as pipe:
                    for version in versions:
                        for sku in skus:
                            text = sealed(synthetic(products[sku], version, padding))
                            pipe.publish(CHANNEL, text)
                    await pipe.execute()
                await read_until(fast, dict.fromkeys(skus, versions[-1]))

        assert hub.coalesced > 0  # the slow client's stale updates were replaced, not queued
        assert all(box.pending <= len(skus) + 64 for box in hub.mailboxes)

        seen: dict[str, int] = {}
        async with asyncio.timeout(20):
            while any(seen.get(sku) != last for sku in skus):
                for message in unbatched(json.loads(await slow.recv())):
                    if message["type"] == "stock":
                        seen[message["sku"]] = message["version"]
                    elif message["type"] == "snapshot":
                        seen |= {p["sku"]: p["version"] for p in message["products"]}


async def test_heartbeats_and_a_lifetime_cap_with_a_reconnect_hint(
    nodes_factory: Callable[..., Awaitable[list[Node]]], redis_server: EmbeddedRedis
) -> None:
    (node,) = await nodes_factory(
        redis_server.url, count=1, ws_heartbeat_seconds=0.1, ws_max_lifetime_seconds=1
    )
    async with connect(node.ws_url) as ws:
        await next_message(ws, "snapshot")
        await next_message(ws, "ping")
        assert (await next_message(ws, "reconnect"))["reason"] == "lifetime"
        async with asyncio.timeout(5):
            await ws.wait_closed()
        assert ws.close_code == 1012


async def test_bad_websocket_input_gets_an_error_not_a_crash(
    nodes_factory: Callable[..., Awaitable[list[Node]]], redis_server: EmbeddedRedis
) -> None:
    (node,) = await nodes_factory(redis_server.url, count=1)
    async with connect(node.ws_url) as ws:
        await next_message(ws, "snapshot")
        for text in ("not json", "[1]", '{"type": "dance"}', '{"type": "subscribe", "skus": 5}'):
            await ws.send(text)
            assert (await next_message(ws, "error"))["code"] == "INVALID_INPUT"
        await ws.send(json.dumps({"type": "ping"}))
        await next_message(ws, "pong")


async def test_metrics_count_what_the_node_did(
    nodes_factory: Callable[..., Awaitable[list[Node]]], redis_server: EmbeddedRedis
) -> None:
    a, b = await nodes_factory(redis_server.url, count=2)
    await create_product(a, "METRIC", on_hand=1)
    await a.client.post("/orders", json={"items": [{"sku": "METRIC", "quantity": 1}]})
    await a.client.post("/orders", json={"items": [{"sku": "METRIC", "quantity": 1}]})
    await converged([a, b], "METRIC", 2, within=5)

    text = (await a.client.get("/metrics")).text
    for line in (
        'orderflow_orders_total{outcome="placed"} 1.0',
        'orderflow_orders_total{outcome="out_of_stock"} 1.0',
        'orderflow_stock_changes_total{reason="reserved"} 1.0',
        'orderflow_sync_changes_total{outcome="applied",source="local"} 2.0',
        "orderflow_websocket_clients 0.0",
    ):
        assert line in text, line
    assert "orderflow_publishes_total" in text
    assert "orderflow_sync_lag_seconds_bucket" in text
    remote = b.state["metrics"].changes
    delivered = [remote.labels(source, "applied")._value.get() for source in ("bus", "ledger")]
    assert sum(delivered) == 2  # each change applied once, by whichever path came first
