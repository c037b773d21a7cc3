"""stock.low: announced once when available stock falls under the threshold, and
again only after it has risen back past the threshold by a margin (hysteresis)."""

import uuid

from database import PostgresDatabase
from tests.support import make_product


async def low_events(db: PostgresDatabase, sku: str) -> list[dict[str, object]]:
    claimed = await db.claim_outbox("test-relay", 1000, 30)
    return [e["body"] for e in claimed["events"] if e["type"] == "stock.low" and e["sku"] == sku]


async def order(db: PostgresDatabase, sku: str, quantity: int) -> uuid.UUID:
    placed = await db.place_order([{"sku": sku, "quantity": quantity}], None, None, "n1", 900, 0, 9)
    return uuid.UUID(placed["order"]["id"])


async def test_low_stock_is_announced_once_until_it_recovers(db: PostgresDatabase) -> None:
    sku = (await make_product(db, on_hand=10))["sku"]
    await db.update_product(sku, "n1", low_stock_threshold=5)

    first = await order(db, sku, 6)  # available 4: under 5
    assert await low_events(db, sku) == [
        {"sku": sku, "name": f"Product {sku}", "available": 4, "threshold": 5}
    ]
    second = await order(db, sku, 1)  # still low: nothing new
    await db.cancel_order(second, "n1")  # back to 4: not past the margin (5 + 1)
    assert len(await low_events(db, sku)) == 1

    await db.cancel_order(first, "n1")  # 10 available: re-armed, not announced
    assert len(await low_events(db, sku)) == 1
    await order(db, sku, 7)  # 3 available: low again
    events = await low_events(db, sku)
    assert [e["available"] for e in events] == [4, 3]
