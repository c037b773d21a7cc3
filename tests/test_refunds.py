"""Refunds and the order timeline over HTTP, on a real node: amounts from the order's own
lines, never more than was paid, restock through the ledger, idempotent by key."""

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from database import PostgresDatabase
from tests.support import bearer, ledger_on_hand, make_product, node_settings, serve, token

PRICE_A, PRICE_B = 1000, 250  # the node's fee is 20% (FEE_RATE's default)


@pytest.fixture
async def node(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(node_settings(database_url, workers="")) as client:
        yield client


async def confirmed_order(client: httpx.AsyncClient, db: PostgresDatabase) -> dict[str, Any]:
    """3 of A and 2 of B, paid (confirmed by staff, as with the manual provider)."""
    a = await make_product(db, on_hand=10, price_cents=PRICE_A)
    b = await make_product(db, on_hand=10, price_cents=PRICE_B)
    items = [{"sku": a["sku"], "quantity": 3}, {"sku": b["sku"], "quantity": 2}]
    placed = await client.post("/orders", json={"items": items})
    assert placed.status_code == 201, placed.text
    confirmed = await client.post(f"/orders/{placed.json()['id']}/confirm")
    assert confirmed.status_code == 200, confirmed.text
    order: dict[str, Any] = confirmed.json()
    return order


async def refund(
    client: httpx.AsyncClient, order_id: str, key: str | None = None, **body: Any
) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return await client.post(
        f"/orders/{order_id}/refunds", json={"reason": "test"} | body, headers=headers
    )


async def test_a_partial_then_a_full_refund_with_restock(
    node: httpx.AsyncClient, db: PostgresDatabase
) -> None:
    order = await confirmed_order(node, db)
    sku_a, sku_b = (line["sku"] for line in order["items"])
    assert order["paid_cents"] == order["total_cents"] == 4200  # (3000 + 500) * 1.2

    partial = await refund(node, order["id"], items=[{"sku": sku_a, "quantity": 1}], restock=True)
    assert partial.status_code == 201, partial.text
    first = partial.json()["refund"]
    assert (first["subtotal_cents"], first["fee_cents"], first["total_cents"]) == (1000, 200, 1200)
    assert first["items"] == [
        {"sku": sku_a, "quantity": 1, "unit_price_cents": PRICE_A, "amount_cents": 1000}
    ]
    after = partial.json()["order"]
    assert (after["status"], after["refunded_cents"]) == ("partially_refunded", 1200)
    assert [line["refunded_quantity"] for line in after["items"]] == [1, 0]
    assert (await node.get(f"/products/{sku_a}")).json()["on_hand"] == 8  # 10 - 3 sold + 1

    rest = await refund(node, order["id"], restock=True)  # no items: all that is left
    assert rest.status_code == 201, rest.text
    second = rest.json()["refund"]
    assert second["total_cents"] == 4200 - 1200
    done = rest.json()["order"]
    assert (done["status"], done["refunded_cents"]) == ("refunded", done["paid_cents"])
    assert [r["id"] for r in done["refunds"]] == [first["id"], second["id"]]
    for sku in (sku_a, sku_b):
        assert (await node.get(f"/products/{sku}")).json()["on_hand"] == 10
        assert await ledger_on_hand(db, sku) == 10
        ledger = (await node.get(f"/products/{sku}/events")).json()["items"]
        assert ledger[0]["reason"] == "return"
        assert ledger[0]["order_id"] == order["id"]

    again = await refund(node, order["id"])
    assert (again.status_code, again.json()["code"]) == (409, "INVALID_TRANSITION")


async def test_a_refund_without_restock_leaves_the_stock(
    node: httpx.AsyncClient, db: PostgresDatabase
) -> None:
    order = await confirmed_order(node, db)
    sku_b = order["items"][1]["sku"]
    response = await refund(node, order["id"], items=[{"sku": sku_b, "quantity": 2}])
    assert response.status_code == 201, response.text
    assert response.json()["refund"]["total_cents"] == 600
    assert (await node.get(f"/products/{sku_b}")).json()["on_hand"] == 8


async def test_refunding_more_than_was_bought_is_refused(
    node: httpx.AsyncClient, db: PostgresDatabase
) -> None:
    order = await confirmed_order(node, db)
    sku_a = order["items"][0]["sku"]
    too_many = await refund(node, order["id"], items=[{"sku": sku_a, "quantity": 4}])
    assert (too_many.status_code, too_many.json()["code"]) == (422, "REFUND_TOO_LARGE")
    assert too_many.json()["details"]["lines"] == [{"sku": sku_a, "requested": 4, "refundable": 3}]
    other = await make_product(db)
    not_bought = await refund(node, order["id"], items=[{"sku": other["sku"], "quantity": 1}])
    assert (not_bought.status_code, not_bought.json()["code"]) == (422, "REFUND_TOO_LARGE")

    assert (await refund(node, order["id"], items=[{"sku": sku_a, "quantity": 2}])).is_success
    past_paid = await refund(node, order["id"], items=[{"sku": sku_a, "quantity": 2}])
    assert (past_paid.status_code, past_paid.json()["code"]) == (422, "REFUND_TOO_LARGE")
    unchanged = (await node.get(f"/orders/{order['id']}")).json()
    assert (unchanged["refunded_cents"], len(unchanged["refunds"])) == (2400, 1)


async def test_only_a_paid_order_is_refunded(node: httpx.AsyncClient, db: PostgresDatabase) -> None:
    product = await make_product(db)
    placed = await node.post("/orders", json={"items": [{"sku": product["sku"], "quantity": 1}]})
    pending = await refund(node, placed.json()["id"])
    assert (pending.status_code, pending.json()["code"]) == (409, "INVALID_TRANSITION")
    missing = await refund(node, "00000000-0000-0000-0000-000000000009")
    assert (missing.status_code, missing.json()["code"]) == (404, "NOT_FOUND")


async def test_a_refund_is_idempotent_by_key(node: httpx.AsyncClient, db: PostgresDatabase) -> None:
    order = await confirmed_order(node, db)
    sku_a = order["items"][0]["sku"]
    line = [{"sku": sku_a, "quantity": 1}]
    first = await refund(node, order["id"], "refund-1", items=line, restock=True)
    again = await refund(node, order["id"], "refund-1", items=line, restock=True)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert again.json()["refund"] == first.json()["refund"]
    assert again.json()["order"]["refunded_cents"] == 1200  # once
    assert (await node.get(f"/products/{sku_a}")).json()["on_hand"] == 8  # restocked once
    changed = await refund(node, order["id"], "refund-1", items=line, restock=False)
    assert (changed.status_code, changed.json()["code"]) == (409, "IDEMPOTENCY_MISMATCH")


async def test_the_timeline_tells_the_orders_story(
    node: httpx.AsyncClient, db: PostgresDatabase
) -> None:
    order = await confirmed_order(node, db)
    assert (await refund(node, order["id"], reason="damaged in transit")).status_code == 201
    response = await node.get(f"/orders/{order['id']}/events")
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [event["type"] for event in items] == [
        "order.placed",
        "order.confirmed",
        "order.refunded",
    ]
    assert all(event["order_id"] == order["id"] for event in items)
    assert [event["seq"] for event in items] == sorted(event["seq"] for event in items)
    assert items[-1]["body"]["reason"] == "damaged in transit"
    missing = await node.get("/orders/00000000-0000-0000-0000-000000000009/events")
    assert (missing.status_code, missing.json()["code"]) == (404, "NOT_FOUND")


async def test_a_customer_reads_their_own_timeline_only(
    node: httpx.AsyncClient, db: PostgresDatabase
) -> None:
    alice, bob = bearer(token("cust-alice")), bearer(token("cust-bob"))
    product = await make_product(db)
    body = {"items": [{"sku": product["sku"], "quantity": 1}]}
    placed = await node.post("/orders", json=body, headers=alice)
    assert placed.status_code == 201, placed.text
    path = f"/orders/{placed.json()['id']}/events"
    own = await node.get(path, headers=alice)
    assert [event["type"] for event in own.json()["items"]] == ["order.placed"]
    other = await node.get(path, headers=bob)
    assert (other.status_code, other.json()["code"]) == (404, "NOT_FOUND")


async def test_a_customer_may_not_refund(node: httpx.AsyncClient, db: PostgresDatabase) -> None:
    alice = bearer(token("cust-alice"))
    order = await confirmed_order(node, db)
    response = await node.post(
        f"/orders/{order['id']}/refunds", json={"reason": "mine"}, headers=alice
    )
    assert (response.status_code, response.json()["code"]) == (403, "FORBIDDEN")
