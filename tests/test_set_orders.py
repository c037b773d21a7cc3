"""`place_orders` writes a batch set-wise, and answers exactly as order by order.

A batch whose keys are all new is written with one statement per table; a
batch with a key already used, or used twice, goes order by order through
`place_one`. The two paths must give every order the same outcome, the same
answer and the same ledger; and two batches with one key must take turns,
the second answering that key as the first's order.
"""

import asyncio
import json
import uuid
from typing import Any

import asyncpg

from backend.documents import Json, OrderRequest, Written
from backend.errors import AppError
from database import PostgresDatabase
from tests.support import make_product

PLACE = (
    "select public.place_orders(p_orders => $1::jsonb, p_node => 'n', p_hold_seconds => 900,"
    " p_fee_bps => 2000, p_max_lines => 3)"
)


def order(lines: list[tuple[str, Any]], key: str | None = None) -> OrderRequest:
    items: list[Json] = [{"sku": sku, "quantity": quantity} for sku, quantity in lines]
    return OrderRequest(items=items, customer_id="c-1", idempotency_key=key, caller="user:u")


def shape(outcome: Written | AppError, names: dict[str, str]) -> Any:
    """An outcome without what differs between two runs (ids, times, sequence numbers,
    the products' SKUs and names, which `names` maps to the run's letters)."""
    text = json.dumps({"error": outcome.body()} if isinstance(outcome, AppError) else outcome)
    for sku, letter in names.items():
        text = text.replace(sku, letter)
    data: dict[str, Any] = json.loads(text)
    if "error" in data:
        return data
    document = dict(data["order"])
    for field in ("id", "created_at", "updated_at", "expires_at"):
        document.pop(field)
    changes = [
        {k: v for k, v in c.items() if k not in ("order_id", "seq", "committed_at", "product_id")}
        for c in data["changes"]
    ]
    return {"order": document, "changes": changes, "replayed": data["replayed"]}


async def test_a_batch_gets_the_same_outcomes_written_set_wise_as_order_by_order(
    db: PostgresDatabase,
) -> None:
    async def run(careful: bool) -> tuple[list[Any], list[Any]]:
        a = await make_product(db, on_hand=5, price_cents=1000)
        b = await make_product(db, on_hand=9, price_cents=250)
        batch = [
            order([(a["sku"], 3), (b["sku"], 1)], key=f"k-{uuid.uuid4()}"),
            order([(a["sku"], 3)]),  # the first left 2: this one alone fails
            order([("GHOST", 1), (b["sku"], 1)]),
            order([(b["sku"], 2), (a["sku"], 1), (b["sku"], 2)]),  # b twice: summed
            order([]),
            order([(a["sku"], 1), (a["sku"], 1), (b["sku"], 1), (b["sku"], 1)]),  # 4 lines > 3
            order([(a["sku"], 1.5)]),
            order([(a["sku"], 1), (b["sku"], 4)], key=f"k-{uuid.uuid4()}"),  # the last of a
            order([(a["sku"], 1)]),
        ]
        if careful:  # a key used twice sends the whole batch order by order
            batch.append(order([(b["sku"], 1)], key=batch[0]["idempotency_key"]))
        outcomes = list(await db.place_orders(batch, "n", 900, 2000, 3))
        ledger = [
            (e["sku"] == a["sku"], e["delta_reserved"], e["reserved"], e["version"], e["reason"])
            for sku in (a["sku"], b["sku"])
            for e in reversed((await db.list_stock_events(sku, None, 50))["items"])
        ]
        names = {a["sku"]: "A", b["sku"]: "B"}
        return [shape(o, names) for o in outcomes[:9]], ledger

    set_wise, careful = await run(careful=False), await run(careful=True)
    assert set_wise == careful
    outcomes, ledger = set_wise
    assert [
        o["error"]["code"] if "error" in o else o["order"]["total_cents"] for o in outcomes
    ] == [
        3900,
        "OUT_OF_STOCK",
        "UNKNOWN_SKU",
        2400,
        "INVALID_INPUT",
        "TOO_MANY_LINES",
        "INVALID_INPUT",
        2400,
        "OUT_OF_STOCK",
    ]
    # Each order its own ledger row per product, versions one by one, running figures.
    assert ledger == [
        (True, 0, 0, 1, "created"),
        (True, 3, 3, 2, "reserved"),
        (True, 1, 4, 3, "reserved"),
        (True, 1, 5, 4, "reserved"),
        (False, 0, 0, 1, "created"),
        (False, 1, 1, 2, "reserved"),
        (False, 4, 5, 3, "reserved"),
        (False, 4, 9, 4, "reserved"),
    ]


async def test_a_batch_writes_its_orders_lines_and_events_in_batch_order(
    db: PostgresDatabase, database_url: str
) -> None:
    a, b = await make_product(db, on_hand=50), await make_product(db, on_hand=50)
    batch = [order([(a["sku"], 1), (b["sku"], 2)]) for _ in range(5)]
    outcomes = await db.place_orders(batch, "n", 900, 0, 100)
    ids = [o["order"]["id"] for o in outcomes if not isinstance(o, AppError)]
    assert len(ids) == 5
    conn = await asyncpg.connect(database_url)
    try:
        events = await conn.fetch(
            "select order_id::text, type, body from public.order_events"
            " where order_id = any($1::uuid[]) order by seq",
            ids,
        )
        lines = await conn.fetch(
            "select order_id::text, line, sku, quantity from public.order_items"
            " where order_id = any($1::uuid[]) order by order_id, line",
            ids,
        )
    finally:
        await conn.close()
    assert [(e["order_id"], e["type"]) for e in events] == [(i, "order.placed") for i in ids]
    assert all(json.loads(e["body"])["total_cents"] == 3000 for e in events)
    assert sorted((r["order_id"], r["line"], r["sku"], r["quantity"]) for r in lines) == sorted(
        (i, n, sku, q) for i in ids for n, sku, q in ((1, a["sku"], 1), (2, b["sku"], 2))
    )


async def test_two_batches_with_one_key_take_turns_and_the_second_sees_the_first(
    db: PostgresDatabase, database_url: str
) -> None:
    """Another batch has placed the key, not yet committed, on another product: this
    batch waits for it on the key alone, then answers that order against the other's
    (here a mismatch), while its batch-mate is placed."""
    theirs, ours = await make_product(db, on_hand=10), await make_product(db, on_hand=10)
    key = f"race-{uuid.uuid4()}"

    def line(sku: str, key: str) -> Json:
        return {"items": [{"sku": sku, "quantity": 1}], "caller": "user:u", "idempotency_key": key}

    other, batcher = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        other_tx = other.transaction()
        await other_tx.start()
        first = json.loads(await other.fetchval(PLACE, json.dumps([line(theirs["sku"], key)])))
        batch = [line(ours["sku"], key), line(ours["sku"], f"{key}-new")]
        pending = asyncio.create_task(batcher.fetchval(PLACE, json.dumps(batch)))
        await asyncio.sleep(0.3)
        assert not pending.done()  # waiting on the other's key, not on any product
        await other_tx.commit()
        refused, placed = json.loads(await asyncio.wait_for(pending, 10))
    finally:
        await other.close()
        await batcher.close()
    assert refused["error"]["code"] == "IDEMPOTENCY_MISMATCH"
    assert refused["error"]["details"] == {"order_id": first[0]["order"]["id"]}
    assert placed["replayed"] is False
    assert [(c["reserved"], c["version"]) for c in placed["changes"]] == [(1, 2)]
    after = await db.get_product(ours["sku"])
    assert after is not None
    assert after["reserved"] == 1
