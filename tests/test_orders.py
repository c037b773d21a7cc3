"""Orders against real Postgres: no oversell, no deadlock, exactly-once by key, every transition."""

import asyncio
import random
import uuid
from collections.abc import AsyncIterator

import pytest

from backend.documents import Written
from backend.errors import AppError
from database import PostgresDatabase
from tests.support import ledger_on_hand, make_product, node_settings, run_node, serve


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[PostgresDatabase]:
    database = PostgresDatabase(database_url, max_size=20)
    await database.connect()
    yield database
    await database.close()


async def place(
    db: PostgresDatabase, lines: list[tuple[str, int]], key: str | None = None
) -> Written:
    items = [{"sku": sku, "quantity": quantity} for sku, quantity in lines]
    return await db.place_order(items, None, key, "test", 900, 2000, 100)


async def test_200_buyers_for_50_units_make_exactly_50_orders(db: PostgresDatabase) -> None:
    product = await make_product(db, on_hand=50)

    async def buy() -> str:
        try:
            await place(db, [(product["sku"], 1)])
        except AppError as exc:
            return exc.code
        return "PLACED"

    outcomes = await asyncio.gather(*(buy() for _ in range(200)))

    assert (outcomes.count("PLACED"), outcomes.count("OUT_OF_STOCK")) == (50, 150)
    after = await db.get_product(product["sku"])
    assert (after["on_hand"], after["reserved"], after["available"]) == (50, 50, 0)
    assert after["version"] == 1 + 50
    assert await ledger_on_hand(db, product["sku"]) == after["on_hand"]
    events = await db.list_stock_events(product["sku"], None, 500)
    assert sum(e["delta_reserved"] for e in events["items"]) == 50


async def test_concurrent_multiline_orders_never_deadlock_or_go_negative(
    db: PostgresDatabase,
) -> None:
    products = [await make_product(db, on_hand=30) for _ in range(6)]
    skus = [p["sku"] for p in products]
    rng = random.Random(7)
    orders = [
        [(sku, rng.randint(1, 4)) for sku in rng.sample(skus, rng.randint(2, 5))]
        for _ in range(120)
    ]

    async def attempt(lines: list[tuple[str, int]]) -> str:
        try:
            await place(db, lines)
        except AppError as exc:
            return exc.code
        return "PLACED"

    outcomes = await asyncio.gather(*map(attempt, orders))

    assert set(outcomes) <= {"PLACED", "OUT_OF_STOCK"}  # never a deadlock or a 500
    placed = [lines for lines, outcome in zip(orders, outcomes, strict=True) if outcome == "PLACED"]
    assert placed, "some orders must succeed"
    for sku in skus:
        expected = sum(q for lines in placed for s, q in lines if s == sku)
        product = await db.get_product(sku)
        assert product["reserved"] == expected  # all-or-nothing: failed orders held nothing
        assert product["available"] >= 0
        assert await ledger_on_hand(db, sku) == product["on_hand"]


async def test_lines_for_one_sku_are_checked_on_their_sum(db: PostgresDatabase) -> None:
    product = await make_product(db, on_hand=5)
    with pytest.raises(AppError) as refused:
        await place(db, [(product["sku"], 3), (product["sku"], 3)])
    assert refused.value.code == "OUT_OF_STOCK"
    assert refused.value.details["lines"] == [
        {"sku": product["sku"], "requested": 6, "available": 5}
    ]
    result = await place(db, [(product["sku"], 3), (product["sku"], 2)])
    assert [item["quantity"] for item in result["order"]["items"]] == [3, 2]
    assert (await db.get_product(product["sku"]))["available"] == 0


async def test_out_of_stock_lists_every_short_line_and_holds_nothing(db: PostgresDatabase) -> None:
    short_a, short_b, fine = [await make_product(db, on_hand=n) for n in (1, 2, 9)]
    with pytest.raises(AppError) as refused:
        await place(db, [(short_a["sku"], 2), (fine["sku"], 1), (short_b["sku"], 5)])
    assert refused.value.status == 409
    assert sorted(line["sku"] for line in refused.value.details["lines"]) == sorted(
        [short_a["sku"], short_b["sku"]]
    )
    assert (await db.get_product(fine["sku"]))["reserved"] == 0


async def test_same_key_on_two_nodes_at_once_makes_one_order(database_url: str) -> None:
    seed = PostgresDatabase(database_url)
    await seed.connect()
    product = await make_product(seed, on_hand=10)
    body = {"items": [{"sku": product["sku"], "quantity": 2}], "customer_id": "c-1"}
    key = {"Idempotency-Key": str(uuid.uuid4())}

    async with (
        serve(node_settings(database_url, "node-a")) as a,
        serve(node_settings(database_url, "node-b")) as b,
    ):
        first, second = await asyncio.gather(
            a.post("/orders", json=body, headers=key), b.post("/orders", json=body, headers=key)
        )
        assert first.status_code == second.status_code == 201
        assert first.json() == second.json()
        assert {
            first.headers.get("Idempotent-Replayed"),
            second.headers.get("Idempotent-Replayed"),
        } == {
            None,
            "true",
        }
        again = await b.post("/orders", json=body, headers=key)
        assert again.json() == first.json()

        other = {"items": [{"sku": product["sku"], "quantity": 3}], "customer_id": "c-1"}
        mismatch = await a.post("/orders", json=other, headers=key)
        assert mismatch.status_code == 409
        assert mismatch.json()["code"] == "IDEMPOTENCY_MISMATCH"

    after = await seed.get_product(product["sku"])
    assert after["reserved"] == 2
    orders = await seed.list_orders("c-1", None, 50, None)
    assert len(orders["items"]) == 1
    await seed.close()


async def test_confirm_sells_and_cancel_releases(db: PostgresDatabase) -> None:
    product = await make_product(db, on_hand=10)
    sold = (await place(db, [(product["sku"], 3)]))["order"]
    kept = (await place(db, [(product["sku"], 2)]))["order"]

    confirmed = await db.confirm_order(uuid.UUID(sold["id"]), "test")
    assert confirmed["order"]["status"] == "confirmed"
    assert [c["reason"] for c in confirmed["changes"]] == ["sold"]
    cancelled = await db.cancel_order(uuid.UUID(kept["id"]), "test")
    assert cancelled["order"]["status"] == "cancelled"

    after = await db.get_product(product["sku"])
    assert (after["on_hand"], after["reserved"], after["available"]) == (7, 0, 7)
    assert await ledger_on_hand(db, product["sku"]) == 7


@pytest.mark.parametrize(
    ("first", "then"),
    [("confirm", "confirm"), ("confirm", "cancel"), ("cancel", "confirm"), ("cancel", "cancel")],
)
async def test_a_settled_order_cannot_change_again(
    db: PostgresDatabase, first: str, then: str
) -> None:
    product = await make_product(db, on_hand=4)
    order_id = uuid.UUID((await place(db, [(product["sku"], 1)]))["order"]["id"])
    actions = {"confirm": db.confirm_order, "cancel": db.cancel_order}
    await actions[first](order_id, "test")
    with pytest.raises(AppError) as refused:
        await actions[then](order_id, "test")
    assert (refused.value.status, refused.value.code) == (409, "INVALID_TRANSITION")


async def test_unknown_order_is_not_found(db: PostgresDatabase) -> None:
    with pytest.raises(AppError) as missing:
        await db.confirm_order(uuid.uuid4(), "test")
    assert (missing.value.status, missing.value.code) == (404, "NOT_FOUND")


async def test_expired_holds_are_released_by_the_sweeper(database_url: str) -> None:
    async with serve(node_settings(database_url, hold_seconds=1)) as node:
        created = await node.post(
            "/products", json={"sku": "HOLD-1", "name": "Held", "price_cents": 100, "on_hand": 5}
        )
        assert created.status_code == 201
        order = (
            await node.post("/orders", json={"items": [{"sku": "HOLD-1", "quantity": 4}]})
        ).json()
        assert (await node.get("/products/HOLD-1")).json()["available"] == 1

        for _ in range(100):
            status = (await node.get(f"/orders/{order['id']}")).json()["status"]
            if status == "expired":
                break
            await asyncio.sleep(0.05)
        assert status == "expired"
        product = (await node.get("/products/HOLD-1")).json()
        assert (product["reserved"], product["available"]) == (0, 5)
        late = await node.post(f"/orders/{order['id']}/confirm")
        assert (late.status_code, late.json()["code"]) == (409, "INVALID_TRANSITION")


async def test_expire_holds_skips_orders_another_sweeper_holds(db: PostgresDatabase) -> None:
    product = await make_product(db, on_hand=6)
    for _ in range(3):
        order = await db.place_order(
            [{"sku": product["sku"], "quantity": 2}], None, None, "test", 1, 0, 100
        )
    await asyncio.sleep(1.1)
    results = await asyncio.gather(*(db.expire_holds(1, f"sweeper-{i}") for i in range(3)))
    expired = [order_id for result in results for order_id in result["expired"]]
    assert len(expired) == len(set(expired))  # never the same order twice
    while (await db.expire_holds(10, "sweeper"))["expired"]:
        pass
    assert (await db.get_product(product["sku"]))["reserved"] == 0
    assert (await db.get_order(uuid.UUID(order["order"]["id"])))["status"] == "expired"


async def test_an_order_placed_on_one_node_is_seen_on_another(database_url: str) -> None:
    async with (
        serve(node_settings(database_url, "node-1")) as one,
        serve(node_settings(database_url, "node-3")) as three,
    ):
        body = {"sku": "SEEN", "name": "Seen", "price_cents": 500, "on_hand": 9}
        assert (await one.post("/products", json=body)).status_code == 201
        order = (await one.post("/orders", json={"items": [{"sku": "SEEN", "quantity": 4}]})).json()

        assert (await three.get(f"/orders/{order['id']}")).json()["status"] == "pending"
        for _ in range(100):  # node-3 learns of the change from the ledger catch-up
            product = await three.get("/products/SEEN")
            if product.status_code == 200 and product.json()["available"] == 5:
                break
            await asyncio.sleep(0.05)
        assert product.json()["available"] == 5
        assert product.json()["version"] == 2


async def test_a_node_groups_concurrent_orders_and_never_oversells(database_url: str) -> None:
    async with run_node(node_settings(database_url, order_batch_calls=1)) as node:
        body = {"sku": "BATCH", "name": "Batched", "price_cents": 100, "on_hand": 40}
        assert (await node.client.post("/products", json=body)).status_code == 201

        async def buy(n: int) -> tuple[int, str]:
            response = await node.client.post(
                "/orders",
                json={"items": [{"sku": "BATCH", "quantity": 1}]},
                headers={"Idempotency-Key": f"buy-{n}"},
            )
            return response.status_code, response.json().get("code", "")

        outcomes = await asyncio.gather(*(buy(n) for n in range(120)))
        again = await buy(0)  # a retry is answered from the first order or its refusal

        assert sorted(set(outcomes)) == [(201, ""), (409, "OUT_OF_STOCK")]
        assert outcomes.count((201, "")) == 40
        assert again == outcomes[0]
        stats = node.app.state.node.store.orders.stats
        assert stats.largest > 1
        metrics = (await node.client.get("/metrics")).text
        assert f"orderflow_order_batches_total {float(stats.calls)}" in metrics
        assert f"orderflow_order_batch_orders_total {float(stats.requests)}" in metrics
        product = (await node.client.get("/products/BATCH")).json()
        assert (product["reserved"], product["available"], product["version"]) == (40, 0, 41)
