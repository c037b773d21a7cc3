"""Payment end to end through the events stream: the outbox relayed to Redis, the
payments group's workers charging each placed order, retries for a flaky provider,
and every node seeing what a payment sold or released."""

import uuid
from collections.abc import Callable
from functools import partial
from typing import Any
from uuid import UUID

import httpx

from backend.embedded import EmbeddedRedis
from backend.settings import Settings
from database import PostgresDatabase
from tests.support import Node, eventually, make_product, node_settings, run_node, until


def streaming(database_url: str, redis: EmbeddedRedis, prefix: str, node_id: str) -> Settings:
    return node_settings(
        database_url,
        node_id,
        redis_url=redis.url,
        channel_prefix=prefix,  # a stream of this test's own
        payment_provider="simulated",
        payment_delay_seconds=0.05,
        workers="payments",
        worker_retry_base_seconds=0.05,
        relay_interval_seconds=0.05,
    )


def a_prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}:"


async def place(client: httpx.AsyncClient, sku: str, quantity: int, **body: Any) -> Any:
    response = await client.post(
        "/orders", json={"items": [{"sku": sku, "quantity": quantity}], **body}
    )
    assert response.status_code == 201, response.text
    return response.json()


def settled(db: PostgresDatabase, order_id: str, status: str) -> Callable[[], Any]:
    async def check() -> bool:
        return (await db.get_order(UUID(order_id)))["status"] == status

    return check


def holds(node: Node, sku: str, stock: tuple[int, int]) -> bool:
    """The node's cache holds (on_hand, reserved) for the SKU."""
    product = node.state["cache"].get(sku)
    return product is not None and (product["on_hand"], product["reserved"]) == stock


async def test_placed_then_paid_then_confirmed(
    database_url: str, db: PostgresDatabase, redis_server: EmbeddedRedis
) -> None:
    product = await make_product(db, on_hand=10)
    async with run_node(streaming(database_url, redis_server, a_prefix(), "node-1")) as node:
        order = await place(node.client, product["sku"], 4)
        await until(settled(db, order["id"], "confirmed"), 15, "the order is paid")
        paid = (await node.client.get(f"/orders/{order['id']}")).json()
        assert paid["paid_cents"] == order["total_cents"]
        await eventually(partial(holds, node, product["sku"], (6, 0)), 5, "sold")
        timeline = (await node.client.get(f"/orders/{order['id']}/events")).json()["items"]
        assert [event["type"] for event in timeline] == [
            "order.placed",
            "payment.succeeded",
            "order.confirmed",
        ]


async def test_a_flaky_payment_is_retried_by_the_stream_and_pays_once(
    database_url: str, db: PostgresDatabase, redis_server: EmbeddedRedis
) -> None:
    product = await make_product(db, on_hand=10)
    async with run_node(streaming(database_url, redis_server, a_prefix(), "node-1")) as node:
        order = await place(node.client, product["sku"], 1, payment_method="test_flaky")
        await until(settled(db, order["id"], "confirmed"), 20, "the flaky payment went through")
        paid = await db.get_order(UUID(order["id"]))
        assert paid["paid_cents"] == order["total_cents"]
        types = [event["type"] for event in await db.order_timeline(UUID(order["id"]))]
        assert types.count("payment.succeeded") == 1
        assert "payment.failed" not in types
        assert await db.list_dead_letters(False, 10) == {"items": []}


async def test_a_declined_payment_releases_the_stock_on_every_node(
    database_url: str, db: PostgresDatabase, redis_server: EmbeddedRedis
) -> None:
    product = await make_product(db, on_hand=5)
    sku = product["sku"]
    prefix = a_prefix()
    async with (
        run_node(streaming(database_url, redis_server, prefix, "node-1")) as one,
        run_node(streaming(database_url, redis_server, prefix, "node-2")) as two,
    ):
        declined = await place(one.client, sku, 2, payment_method="test_decline")
        paid = await place(two.client, sku, 1)
        await until(settled(db, declined["id"], "cancelled"), 15, "the decline is recorded")
        await until(settled(db, paid["id"], "confirmed"), 15, "the other order is paid")
        order = await db.get_order(UUID(declined["id"]))
        assert order["cancel_reason"] == "payment_declined"
        for node in (one, two):
            await eventually(partial(holds, node, sku, (4, 0)), 5, "every node agrees")
