"""The payment consumer on real nodes: each placed order charged through the simulated
provider, its outcome recorded once, and the stock it sells or releases seen by every node.

The consumer is driven here by its own `handle`, with the `order.placed` event
read from the order's outbox rows, as the stream would deliver it (the nodes run
no workers, so nothing else handles it meanwhile).
"""

import uuid
from collections.abc import AsyncIterator
from functools import partial
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest

from backend.documents import OrderEvent
from backend.embedded import EmbeddedRedis
from backend.node import Node as StoreNode
from backend.payments.consumer import PaymentConsumer
from backend.payments.providers import TransientPaymentError
from database import PostgresDatabase
from tests.support import Node, bearer, eventually, make_product, node_settings, run_node, token


def payment_settings(database_url: str, node_id: str = "node-pay", **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "payment_provider": "simulated",
        "payment_delay_seconds": 0,
        "workers": "",  # the tests hand events to the consumer themselves
    }
    return node_settings(database_url, node_id, **(values | overrides))


@pytest.fixture
async def node(database_url: str) -> AsyncIterator[Node]:
    async with run_node(payment_settings(database_url)) as running:
        yield running


def store_node(node: Node) -> StoreNode:
    found: StoreNode = node.app.state.node
    return found


async def place(client: httpx.AsyncClient, sku: str, quantity: int = 1, **body: Any) -> Any:
    response = await client.post(
        "/orders", json={"items": [{"sku": sku, "quantity": quantity}], **body}
    )
    assert response.status_code == 201, response.text
    return response.json()


def stock_of(node: Node, sku: str) -> tuple[int, int]:
    """(on_hand, reserved) in the node's cache."""
    product = node.state["cache"].get(sku)
    assert product is not None
    return product["on_hand"], product["reserved"]


def holds(node: Node, sku: str, stock: tuple[int, int]) -> bool:
    return stock_of(node, sku) == stock


async def placed_event(db: PostgresDatabase, order_id: str) -> OrderEvent:
    """The order's `order.placed` event as the outbox holds it (and the stream carries it)."""
    timeline = await db.order_timeline(UUID(order_id))
    return next(event for event in timeline if event["type"] == "order.placed")


async def event_types(db: PostgresDatabase, order_id: str) -> list[str]:
    return [event["type"] for event in await db.order_timeline(UUID(order_id))]


async def test_a_placed_order_is_paid_and_its_held_units_sold(
    node: Node, db: PostgresDatabase
) -> None:
    product = await make_product(db, on_hand=10)
    order = await place(node.client, product["sku"], 3)
    assert order["payment_method"] is None  # with the simulated provider: test_ok
    consumer = PaymentConsumer(store_node(node))
    event = await placed_event(db, order["id"])
    assert consumer.wants(event)

    await consumer.handle(event, 1)

    paid = await db.get_order(UUID(order["id"]))
    assert (paid["status"], paid["paid_cents"]) == ("confirmed", order["total_cents"])
    assert stock_of(node, product["sku"]) == (7, 0)
    assert await event_types(db, order["id"]) == [
        "order.placed",
        "payment.succeeded",
        "order.confirmed",
    ]


async def test_a_declined_payment_releases_the_stock_on_every_node(
    database_url: str, db: PostgresDatabase, redis_server: EmbeddedRedis
) -> None:
    product = await make_product(db, on_hand=5)
    sku = product["sku"]
    bus = {"redis_url": redis_server.url, "channel_prefix": f"t{uuid.uuid4().hex[:8]}:"}
    async with (
        run_node(payment_settings(database_url, "node-1", **bus)) as one,
        run_node(payment_settings(database_url, "node-2", **bus)) as two,
    ):
        order = await place(one.client, sku, 2, payment_method="test_decline")
        for running in (one, two):
            await eventually(partial(holds, running, sku, (5, 2)), 5, "the hold is seen")

        await PaymentConsumer(store_node(one)).handle(await placed_event(db, order["id"]), 1)

        declined = await db.get_order(UUID(order["id"]))
        assert (declined["status"], declined["cancel_reason"]) == ("cancelled", "payment_declined")
        assert declined["paid_cents"] == 0
        for running in (one, two):
            name = running.state["node"].settings.node_id
            await eventually(partial(holds, running, sku, (5, 0)), 5, f"{name} sees it back")
        timeline = await db.order_timeline(UUID(order["id"]))
        failed = [event for event in timeline if event["type"] == "payment.failed"]
        assert len(failed) == 1
        assert "declined" in failed[0]["body"]["detail"]
        cancelled = [event for event in timeline if event["type"] == "order.cancelled"]
        assert [event["body"]["reason"] for event in cancelled] == ["payment_declined"]


async def test_a_flaky_payment_is_retried_and_pays_once(node: Node, db: PostgresDatabase) -> None:
    product = await make_product(db, on_hand=4)
    order = await place(node.client, product["sku"], 1, payment_method="test_flaky")
    consumer = PaymentConsumer(store_node(node))
    event = await placed_event(db, order["id"])

    for attempt in (1, 2):
        with pytest.raises(TransientPaymentError):
            await consumer.handle(event, attempt)
        assert (await db.get_order(UUID(order["id"])))["status"] == "pending"
    await consumer.handle(event, 3)
    await consumer.handle(event, 4)  # delivered again: nothing more happens

    paid = await db.get_order(UUID(order["id"]))
    assert (paid["status"], paid["paid_cents"]) == ("confirmed", order["total_cents"])
    types = await event_types(db, order["id"])
    assert types.count("payment.succeeded") == 1
    assert types.count("order.confirmed") == 1


async def test_a_payment_after_the_hold_expired_is_refunded_at_once(
    database_url: str, db: PostgresDatabase
) -> None:
    product = await make_product(db, on_hand=6)
    # The sweeper waits long enough for the payment to land on an expired, pending hold.
    async with run_node(payment_settings(database_url, sweep_interval_seconds=600)) as node:
        order = await place(node.client, product["sku"], 2)
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                "update public.orders set expires_at = now() - interval '1 second' where id = $1",
                UUID(order["id"]),
            )
        finally:
            await conn.close()

        await PaymentConsumer(store_node(node)).handle(await placed_event(db, order["id"]), 1)

        refunded = await db.get_order(UUID(order["id"]))
        total = order["total_cents"]
        assert (refunded["status"], refunded["paid_cents"], refunded["refunded_cents"]) == (
            "refunded",
            total,
            total,
        )
        assert [r["reason"] for r in refunded["refunds"]] == ["paid_after_hold_released"]
        assert stock_of(node, product["sku"]) == (6, 0)  # nothing sold
        assert await event_types(db, order["id"]) == [
            "order.placed",
            "payment.succeeded",
            "order.expired",
            "order.refunded",
        ]


async def test_an_order_that_stopped_waiting_is_not_charged(
    node: Node, db: PostgresDatabase
) -> None:
    product = await make_product(db, on_hand=3)
    order = await place(node.client, product["sku"], 1)
    assert (await node.client.post(f"/orders/{order['id']}/cancel")).status_code == 200

    await PaymentConsumer(store_node(node)).handle(await placed_event(db, order["id"]), 1)

    assert await event_types(db, order["id"]) == ["order.placed", "order.cancelled"]


async def test_a_method_the_simulated_provider_does_not_know_is_declined(
    node: Node, db: PostgresDatabase
) -> None:
    product = await make_product(db, on_hand=3)
    order = await place(node.client, product["sku"], 1, payment_method="card")
    assert order["payment_method"] == "card"

    await PaymentConsumer(store_node(node)).handle(await placed_event(db, order["id"]), 1)

    declined = await db.get_order(UUID(order["id"]))
    assert (declined["status"], declined["cancel_reason"]) == ("cancelled", "payment_declined")


async def test_other_providers_leave_placed_orders_alone(
    database_url: str, db: PostgresDatabase
) -> None:
    product = await make_product(db, on_hand=3)
    for provider in ("manual", "webhook"):
        settings = payment_settings(
            database_url, payment_provider=provider, payment_webhook_secret="whsec-test"
        )
        async with run_node(settings) as node:
            order = await place(node.client, product["sku"], 1)
            event = await placed_event(db, order["id"])
            assert not PaymentConsumer(store_node(node)).wants(event)


async def test_a_payment_method_is_kept_on_the_order_and_in_its_idempotency(
    node: Node,
) -> None:
    product = {"sku": "PAY-1", "name": "Pay", "price_cents": 100, "on_hand": 9}
    assert (await node.client.post("/products", json=product)).status_code == 201
    key = {"Idempotency-Key": "pay-method-1"}
    body = {"items": [{"sku": "PAY-1", "quantity": 1}], "payment_method": "test_decline"}
    first = await node.client.post("/orders", json=body, headers=key)
    assert (first.status_code, first.json()["payment_method"]) == (201, "test_decline")
    again = await node.client.post("/orders", json=body, headers=key)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    other = await node.client.post(
        "/orders", json=body | {"payment_method": "test_ok"}, headers=key
    )
    assert (other.status_code, other.json()["code"]) == (409, "IDEMPOTENCY_MISMATCH")
    bad = await node.client.post("/orders", json=body | {"payment_method": "Not A Method"})
    assert (bad.status_code, bad.json()["code"]) == (422, "VALIDATION_ERROR")


async def test_a_signed_in_customer_is_remembered_once_per_node(
    node: Node, db: PostgresDatabase, database_url: str
) -> None:
    product = await make_product(db, on_hand=9)
    customer = bearer(token("cust-remembered"))
    body = {"items": [{"sku": product["sku"], "quantity": 1}]}
    assert (await node.client.post("/orders", json=body, headers=customer)).status_code == 201
    known = await db.get_customer("cust-remembered")
    assert known is not None
    assert known["email"] == "cust-remembered@example.com"
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("update public.customers set email = 'changed@example.com'")
        assert (await node.client.post("/orders", json=body, headers=customer)).status_code == 201
    finally:
        await conn.close()
    again = await db.get_customer("cust-remembered")
    assert again is not None
    assert again["email"] == "changed@example.com"
    assert (await node.client.post("/orders", json=body)).status_code == 201  # staff: no row
    assert await db.get_customer("test-admin") is None
