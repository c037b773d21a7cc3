"""The `Database` contract, written once and run on both adapters.

`postgres` is asyncpg on the test Postgres; `supabase` is supabase-py, whose
requests respx hands to the PostgREST stand-in of `tests/postgrest.py`, which
runs the same functions on the same kind of database. Every assertion holds
in both modes: same documents, same error status, code and details.
"""

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pydantic
import pytest
from pydantic import SecretStr

from backend.app import open_database
from backend.documents import OrderRequest, Product, Written
from backend.embedded import free_port
from backend.errors import AppError
from backend.migrate import load_migrations
from backend.settings import Settings
from database import Database, Json, PostgresDatabase, SupabaseDatabase
from tests.postgrest import ANON_KEY, SERVICE_ROLE_KEY, SUPABASE_URL, PostgREST, supabase_api
from tests.support import node_settings, serve

ADAPTERS = ["postgres", "supabase"]


@asynccontextmanager
async def adapter(kind: str, database_url: str) -> AsyncIterator[Database]:
    async with api_for(kind, database_url):
        database: Database
        if kind == "postgres":
            database = PostgresDatabase(database_url)
        else:
            database = SupabaseDatabase(SUPABASE_URL, SERVICE_ROLE_KEY)
        await database.connect()
        try:
            yield database
        finally:
            await database.close()


@asynccontextmanager
async def api_for(kind: str, database_url: str) -> AsyncIterator[PostgREST | None]:
    """The Supabase API stand-in, when the adapter needs one."""
    if kind == "postgres":
        yield None
        return
    async with supabase_api(database_url) as stand_in:
        yield stand_in


@pytest.fixture(params=ADAPTERS)
async def db(request: pytest.FixtureRequest, database_url: str) -> AsyncIterator[Database]:
    async with adapter(request.param, database_url) as database:
        yield database


async def refusal(call: Awaitable[Any]) -> tuple[int, str, dict[str, Any]]:
    with pytest.raises(AppError) as refused:
        await call
    return refused.value.status, refused.value.code, refused.value.details


async def make_product(db: Database, on_hand: int = 10, sku: str | None = None) -> Product:
    sku = sku or f"SKU-{uuid.uuid4().hex[:10]}"
    result = await db.create_product(sku, f"Product {sku}", 1000, on_hand, 2, "test")
    product: Product = result["product"]
    return product


async def place(
    db: Database,
    lines: list[tuple[str, int]],
    key: str | None = None,
    customer: str | None = None,
    hold_seconds: int = 900,
) -> Written:
    items = [{"sku": sku, "quantity": quantity} for sku, quantity in lines]
    return await db.place_order(items, customer, key, "test", hold_seconds, 2000, 100)


# Catalog


async def test_create_product_returns_the_product_and_its_first_change(db: Database) -> None:
    result = await db.create_product("TEE-1", "Tee", 2400, 12, 3, "node-a")
    product = result["product"]
    assert {k: product[k] for k in ("sku", "name", "price_cents", "on_hand", "reserved")} == {
        "sku": "TEE-1",
        "name": "Tee",
        "price_cents": 2400,
        "on_hand": 12,
        "reserved": 0,
    }
    assert (product["available"], product["low_stock_threshold"], product["version"]) == (12, 3, 1)
    [change] = result["changes"]
    assert (change["reason"], change["delta_on_hand"], change["node"]) == ("created", 12, "node-a")
    assert await db.get_product("TEE-1") == product


async def test_a_sku_exists_once(db: Database) -> None:
    await make_product(db, sku="DUP")
    assert await refusal(db.create_product("DUP", "Again", 1, 1, 1, "test")) == (
        409,
        "SKU_EXISTS",
        {"sku": "DUP"},
    )


async def test_a_value_the_table_refuses_is_invalid_input(db: Database) -> None:
    status, code, details = await refusal(db.create_product("bad sku!", "x", 1, 1, 1, "test"))
    assert (status, code) == (422, "INVALID_INPUT")
    assert "products_sku_format" in details["reason"]


async def test_update_product_bumps_the_version_and_checks_the_expected_one(db: Database) -> None:
    product = await make_product(db)
    sku = product["sku"]
    updated = await db.update_product(sku, "test", name="Renamed", expected_version=1)
    assert (updated["product"]["name"], updated["product"]["version"]) == ("Renamed", 2)
    assert [change["reason"] for change in updated["changes"]] == ["updated"]
    assert await refusal(db.update_product(sku, "test", price_cents=5, expected_version=1)) == (
        409,
        "VERSION_CONFLICT",
        {"sku": sku, "expected_version": 1, "current_version": 2},
    )
    assert await refusal(db.update_product(sku, "test")) == (422, "INVALID_INPUT", {})


async def test_a_deleted_product_is_gone_but_its_ledger_stays(db: Database) -> None:
    product = await make_product(db)
    sku = product["sku"]
    deleted = await db.delete_product(sku, "test")
    assert [change["deleted"] for change in deleted["changes"]] == [True]
    assert await refusal(db.get_product(sku)) == (404, "NOT_FOUND", {"sku": sku})
    assert await refusal(db.delete_product(sku, "test")) == (404, "NOT_FOUND", {"sku": sku})
    assert (await db.list_products(None, 50))["items"] == []
    events = await db.list_stock_events(sku, None, 50)
    assert [event["reason"] for event in events["items"]] == ["deleted", "created"]


async def test_list_products_pages_by_sku(db: Database) -> None:
    for sku in ("C", "A", "B"):
        await make_product(db, sku=sku)
    first = await db.list_products(None, 2)
    assert ([p["sku"] for p in first["items"]], first["next"]) == (["A", "B"], "B")
    rest = await db.list_products(first["next"], 2)
    assert ([p["sku"] for p in rest["items"]], rest["next"]) == (["C"], None)


async def test_catalog_snapshot_is_every_live_product_and_a_cursor(db: Database) -> None:
    kept, dropped = await make_product(db, sku="KEPT"), await make_product(db, sku="DROPPED")
    await db.delete_product(dropped["sku"], "test")
    snapshot = await db.catalog_snapshot()
    assert snapshot["products"] == [kept]
    assert (await db.stock_events_since(snapshot["cursor"], 100))["events"] == []


async def test_catalog_snapshot_has_a_tombstone_for_each_sku_whose_latest_product_is_deleted(
    db: Database,
) -> None:
    gone = await make_product(db, sku="GONE")
    await db.delete_product("GONE", "test")
    await make_product(db, sku="BACK")
    await db.delete_product("BACK", "test")
    back = await make_product(db, sku="BACK")
    await make_product(db, sku="TWICE")
    await db.delete_product("TWICE", "test")
    twice = await make_product(db, sku="TWICE")
    await db.adjust_stock("TWICE", 1, "restock", "test")
    await db.delete_product("TWICE", "test")
    snapshot = await db.catalog_snapshot()
    assert snapshot["products"] == [back]
    assert snapshot["tombstones"] == [
        {"sku": "GONE", "product_id": gone["id"], "version": 2},
        {"sku": "TWICE", "product_id": twice["id"], "version": 3},
    ]


# Stock


async def test_adjust_stock_moves_on_hand_and_never_below_reserved(db: Database) -> None:
    sku = (await make_product(db, on_hand=5))["sku"]
    restocked = await db.adjust_stock(sku, 3, "restock", "test")
    [change] = restocked["changes"]
    assert (change["on_hand"], change["version"], change["reason"]) == (8, 2, "restock")
    await place(db, [(sku, 6)])
    assert await refusal(db.adjust_stock(sku, -3, "damage", "test")) == (
        409,
        "OUT_OF_STOCK",
        {"sku": sku, "on_hand": 8, "reserved": 6, "available": 2, "delta": -3},
    )
    assert await refusal(db.adjust_stock(sku, 1, "stolen", "test")) == (
        422,
        "INVALID_INPUT",
        {"reason": "stolen"},
    )


async def test_set_stock_is_compare_and_set(db: Database) -> None:
    sku = (await make_product(db, on_hand=5))["sku"]
    result = await db.set_stock(sku, 9, 1, "test")
    assert [(c["on_hand"], c["delta_on_hand"], c["version"]) for c in result["changes"]] == [
        (9, 4, 2)
    ]
    assert await refusal(db.set_stock(sku, 7, 1, "test")) == (
        409,
        "VERSION_CONFLICT",
        {"sku": sku, "expected_version": 1, "current_version": 2},
    )
    await place(db, [(sku, 4)])
    assert await refusal(db.set_stock(sku, 3, None, "test")) == (
        409,
        "OUT_OF_STOCK",
        {"sku": sku, "on_hand": 9, "reserved": 4, "requested_on_hand": 3},
    )


async def test_an_unknown_sku_is_not_found_everywhere(db: Database) -> None:
    for call in (
        db.get_product("NOPE"),
        db.update_product("NOPE", "test", name="x"),
        db.delete_product("NOPE", "test"),
        db.adjust_stock("NOPE", 1, "restock", "test"),
        db.set_stock("NOPE", 1, None, "test"),
    ):
        assert await refusal(call) == (404, "NOT_FOUND", {"sku": "NOPE"})


# Orders


async def test_place_order_reserves_and_prices_every_line(db: Database) -> None:
    a, b = await make_product(db, on_hand=5), await make_product(db, on_hand=5)
    result = await place(db, [(a["sku"], 2), (b["sku"], 1)], customer="c-1")
    order = result["order"]
    assert (order["status"], order["customer_id"], result["replayed"]) == ("pending", "c-1", False)
    assert [(i["sku"], i["quantity"]) for i in order["items"]] == [(a["sku"], 2), (b["sku"], 1)]
    assert (order["subtotal_cents"], order["fee_cents"], order["total_cents"]) == (3000, 600, 3600)
    assert sorted(c["reason"] for c in result["changes"]) == ["reserved", "reserved"]
    assert (await db.get_product(a["sku"]))["available"] == 3


async def test_an_idempotency_key_replays_the_first_order_and_refuses_another(
    db: Database,
) -> None:
    sku = (await make_product(db, on_hand=5))["sku"]
    first = await place(db, [(sku, 2)], key="key-1")
    again = await place(db, [(sku, 2)], key="key-1")
    assert (again["order"], again["changes"], again["replayed"]) == (first["order"], [], True)
    assert await refusal(place(db, [(sku, 3)], key="key-1")) == (
        409,
        "IDEMPOTENCY_MISMATCH",
        {"order_id": first["order"]["id"]},
    )
    assert (await db.get_product(sku))["reserved"] == 2


async def test_an_order_is_refused_whole(db: Database) -> None:
    short, fine = await make_product(db, on_hand=1), await make_product(db, on_hand=9)
    assert await refusal(place(db, [(short["sku"], 2), (fine["sku"], 1)])) == (
        409,
        "OUT_OF_STOCK",
        {"lines": [{"sku": short["sku"], "requested": 2, "available": 1}]},
    )
    assert await refusal(place(db, [("GHOST-2", 1), (fine["sku"], 1), ("GHOST-1", 1)])) == (
        422,
        "UNKNOWN_SKU",
        {"skus": ["GHOST-1", "GHOST-2"]},
    )
    too_many = db.place_order([{"sku": fine["sku"], "quantity": 1}] * 3, None, None, "t", 9, 0, 2)
    assert await refusal(too_many) == (422, "TOO_MANY_LINES", {"max_lines": 2})
    assert (await db.get_product(fine["sku"]))["reserved"] == 0


async def test_place_orders_gives_each_order_of_a_batch_its_own_outcome(db: Database) -> None:
    a, b = await make_product(db, on_hand=5), await make_product(db, on_hand=9)

    def order(lines: list[tuple[str, int]], key: str | None = None) -> OrderRequest:
        items: list[Json] = [{"sku": sku, "quantity": quantity} for sku, quantity in lines]
        return OrderRequest(items=items, customer_id="c-1", idempotency_key=key, caller="user:u")

    outcomes = await db.place_orders(
        [
            order([(a["sku"], 3), (b["sku"], 1)], key="k-1"),
            order([(a["sku"], 3)]),  # the first left 2: this one alone fails
            order([("GHOST", 1), (b["sku"], 1)]),
            order([(a["sku"], 3), (b["sku"], 1)], key="k-1"),  # a retry of the first
            order([(a["sku"], 1)], key="k-1"),  # the key with another request
            order([]),
            order([(a["sku"], 1), (a["sku"], 1), (b["sku"], 8)]),  # takes what is left
        ],
        "node-a",
        900,
        2000,
        100,
    )

    first, short, unknown, retried, mismatch, empty, last = outcomes
    assert not isinstance(first, AppError)
    assert not isinstance(last, AppError)
    assert not isinstance(retried, AppError)
    assert first["replayed"] is False
    assert first["order"]["total_cents"] == 4800
    assert [(c["sku"], c["reserved"], c["version"]) for c in first["changes"]] == [
        (a["sku"], 3, 2),
        (b["sku"], 1, 2),
    ]
    assert (retried["order"], retried["changes"], retried["replayed"]) == (
        first["order"],
        [],
        True,
    )
    errors = [
        (e.status, e.code, e.details)
        for e in (short, unknown, mismatch, empty)
        if isinstance(e, AppError)
    ]
    assert errors == [
        (409, "OUT_OF_STOCK", {"lines": [{"sku": a["sku"], "requested": 3, "available": 2}]}),
        (422, "UNKNOWN_SKU", {"skus": ["GHOST"]}),
        (409, "IDEMPOTENCY_MISMATCH", {"order_id": first["order"]["id"]}),
        (422, "INVALID_INPUT", {}),
    ]
    assert [(i["sku"], i["quantity"]) for i in last["order"]["items"]] == [
        (a["sku"], 1),
        (a["sku"], 1),
        (b["sku"], 8),
    ]
    assert [(c["sku"], c["delta_reserved"], c["version"]) for c in last["changes"]] == [
        (a["sku"], 2, 3),
        (b["sku"], 8, 3),
    ]
    assert await db.get_order(uuid.UUID(last["order"]["id"])) == last["order"]
    for product, reserved in ((a, [5, 3, 0]), (b, [9, 1, 0])):  # the ledger, newest first
        after = await db.get_product(product["sku"])
        assert (after["reserved"], after["available"], after["version"]) == (reserved[0], 0, 3)
        ledger = await db.list_stock_events(product["sku"], None, 10)
        assert [e["reserved"] for e in ledger["items"]] == reserved


async def test_lines_adding_up_past_an_integer_are_out_of_stock(db: Database) -> None:
    sku = (await make_product(db, on_hand=5))["sku"]
    assert await refusal(place(db, [(sku, 2147483647), (sku, 2147483647)])) == (
        409,
        "OUT_OF_STOCK",
        {"lines": [{"sku": sku, "requested": 4294967294, "available": 5}]},
    )


async def blocked_by(database_url: str, session: asyncpg.Connection) -> None:
    """Wait until another backend waits for a lock `session` holds (no event says so)."""
    watcher = await asyncpg.connect(database_url)
    try:
        query = "select count(*) from pg_stat_activity where $1 = any(pg_blocking_pids(pid))"
        async with asyncio.timeout(10):
            while True:
                if await watcher.fetchval(query, session.get_server_pid()):
                    return
                await asyncio.sleep(0.01)
    finally:
        await watcher.close()


async def test_an_order_waiting_on_a_sku_deleted_and_created_again_touches_no_row_it_did_not_lock(
    db: Database, database_url: str
) -> None:
    await make_product(db, on_hand=5, sku="RACE")
    other = await make_product(db, on_hand=5)
    admin = await asyncpg.connect(database_url)
    try:
        async with admin.transaction():
            await admin.fetchval("select public.delete_product('RACE', 'admin')")
            await admin.fetchval("select public.create_product('RACE', 'Again', 100, 5, 1, 'a')")
            order = asyncio.ensure_future(place(db, [("RACE", 1), (other["sku"], 1)]))
            await blocked_by(database_url, admin)
        assert await refusal(order) == (422, "UNKNOWN_SKU", {"skus": ["RACE"]})
    finally:
        await admin.close()
    again = await db.get_product("RACE")
    assert (again["reserved"], again["version"]) == (0, 1)
    assert (await db.get_product(other["sku"]))["reserved"] == 0
    assert [e["reason"] for e in (await db.list_stock_events("RACE", None, 10))["items"]] == [
        "created",
        "deleted",
        "created",
    ]


async def test_an_order_checks_the_stock_it_locked_as_committed_while_it_waited(
    db: Database, database_url: str
) -> None:
    sku = (await make_product(db, on_hand=5))["sku"]
    admin = await asyncpg.connect(database_url)
    try:
        async with admin.transaction():
            await admin.fetchval("select public.adjust_stock($1, -3, 'damage', 'admin')", sku)
            order = asyncio.ensure_future(place(db, [(sku, 3)]))
            await blocked_by(database_url, admin)
        assert await refusal(order) == (
            409,
            "OUT_OF_STOCK",
            {"lines": [{"sku": sku, "requested": 3, "available": 2}]},
        )
    finally:
        await admin.close()
    assert (await db.get_product(sku))["reserved"] == 0


async def test_confirm_sells_cancel_releases_and_neither_happens_twice(db: Database) -> None:
    sku = (await make_product(db, on_hand=10))["sku"]
    sold = uuid.UUID((await place(db, [(sku, 3)]))["order"]["id"])
    kept = uuid.UUID((await place(db, [(sku, 2)]))["order"]["id"])
    confirmed = await db.confirm_order(sold, "test")
    assert (confirmed["order"]["status"], [c["reason"] for c in confirmed["changes"]]) == (
        "confirmed",
        ["sold"],
    )
    cancelled = await db.cancel_order(kept, "test")
    assert (cancelled["order"]["status"], [c["reason"] for c in cancelled["changes"]]) == (
        "cancelled",
        ["released"],
    )
    product = await db.get_product(sku)
    assert (product["on_hand"], product["reserved"]) == (7, 0)
    assert await refusal(db.cancel_order(sold, "test")) == (
        409,
        "INVALID_TRANSITION",
        {"order_id": str(sold), "status": "confirmed", "to": "cancelled"},
    )
    assert await refusal(db.confirm_order(kept, "test")) == (
        409,
        "INVALID_TRANSITION",
        {"order_id": str(kept), "status": "cancelled", "to": "confirmed"},
    )


async def test_an_unknown_order_is_not_found(db: Database) -> None:
    missing = uuid.uuid4()
    for call in (
        db.get_order(missing),
        db.confirm_order(missing, "t"),
        db.cancel_order(missing, "t"),
    ):
        assert await refusal(call) == (404, "NOT_FOUND", {"order_id": str(missing)})


async def test_expire_holds_releases_orders_past_their_hold(db: Database) -> None:
    sku = (await make_product(db, on_hand=5))["sku"]
    due = (await place(db, [(sku, 2)], hold_seconds=0))["order"]["id"]
    held = (await place(db, [(sku, 1)]))["order"]["id"]
    assert await refusal(db.confirm_order(uuid.UUID(due), "test")) == (
        409,
        "INVALID_TRANSITION",
        {"order_id": due, "status": "expired", "to": "confirmed"},
    )
    result = await db.expire_holds(10, "sweeper")
    assert (result["expired"], [c["reason"] for c in result["changes"]]) == ([due], ["expired"])
    assert (await db.expire_holds(10, "sweeper")) == {"expired": [], "changes": []}
    assert (await db.get_order(uuid.UUID(due)))["status"] == "expired"
    assert (await db.get_order(uuid.UUID(held)))["status"] == "pending"
    assert (await db.get_product(sku))["reserved"] == 1


async def test_list_orders_filters_and_pages_newest_first(db: Database) -> None:
    sku = (await make_product(db, on_hand=10))["sku"]
    ids = [(await place(db, [(sku, 1)], customer="c-1"))["order"]["id"] for _ in range(3)]
    await place(db, [(sku, 1)], customer="c-2")
    await db.cancel_order(uuid.UUID(ids[0]), "test")
    first = await db.list_orders("c-1", None, 2, None)
    assert [o["id"] for o in first["items"]] == ids[:0:-1]
    rest = await db.list_orders("c-1", None, 2, first["next"])
    assert ([o["id"] for o in rest["items"]], rest["next"]) == ([ids[0]], None)
    cancelled = await db.list_orders(None, "cancelled", 50, None)
    assert [o["id"] for o in cancelled["items"]] == [ids[0]]
    assert await db.get_order(uuid.UUID(ids[1])) == first["items"][1]
    assert await refusal(db.list_orders(None, None, 2, "not-a-cursor")) == (
        422,
        "INVALID_CURSOR",
        {},
    )


# The ledger


async def test_stock_events_since_pages_and_its_cursor_moves_on(db: Database) -> None:
    start = (await db.catalog_snapshot())["cursor"]
    skus = [(await make_product(db, sku=f"E-{i}"))["sku"] for i in range(3)]
    first = await db.stock_events_since(start, 2)
    assert ([e["sku"] for e in first["events"]], first["more"]) == (skus[:2], True)
    second = await db.stock_events_since(first["cursor"], 2)
    assert ([e["sku"] for e in second["events"]], second["more"]) == (skus[2:], False)
    assert (await db.stock_events_since(second["cursor"], 2))["events"] == []
    await db.adjust_stock(skus[0], 1, "restock", "test")
    latest = await db.stock_events_since(second["cursor"], 2)
    assert [(e["sku"], e["reason"], e["version"]) for e in latest["events"]] == [
        (skus[0], "restock", 2)
    ]
    assert await refusal(db.stock_events_since("x:y", 2)) == (422, "INVALID_CURSOR", {})


async def test_stock_marks_since_is_the_same_page_in_brief(db: Database) -> None:
    start = (await db.catalog_snapshot())["cursor"]
    product = await make_product(db, on_hand=5)
    placed = await db.place_order(
        [{"sku": product["sku"], "quantity": 2}], None, None, "n", 900, 0, 100
    )
    for cursor, limit in ((start, 1), (start, 10)):
        full, brief = (
            await db.stock_events_since(cursor, limit),
            await db.stock_marks_since(cursor, limit),
        )
        assert (brief["cursor"], brief["more"]) == (full["cursor"], full["more"])
        assert [list(m) for m in brief["events"]] == [
            [e["sku"], e["product_id"], e["version"], e["order_id"]] for e in full["events"]
        ]
    assert [m[3] for m in brief["events"]] == [None, placed["order"]["id"]]
    assert await refusal(db.stock_marks_since("x:y", 2)) == (422, "INVALID_CURSOR", {})


async def test_list_stock_events_is_newest_first_per_sku(db: Database) -> None:
    sku = (await make_product(db, on_hand=5))["sku"]
    await make_product(db)
    await db.adjust_stock(sku, 1, "restock", "test")
    await db.adjust_stock(sku, -1, "damage", "test")
    page = await db.list_stock_events(sku, None, 2)
    assert [e["reason"] for e in page["items"]] == ["damage", "restock"]
    rest = await db.list_stock_events(sku, page["next"], 2)
    assert ([e["reason"] for e in rest["items"]], rest["next"]) == (["created"], None)
    assert len((await db.list_stock_events(None, None, 50))["items"]) == 4


async def test_schema_versions_are_the_applied_migrations(db: Database) -> None:
    assert await db.schema_versions() == [m.version for m in load_migrations()]


# Failures of the database itself


async def test_a_function_the_database_lacks_means_the_schema_is_out_of_date(db: Database) -> None:
    status, code, _ = await refusal(db.call("no_such_function", sku="x"))
    assert (status, code) == (503, "SCHEMA_OUT_OF_DATE")


async def test_a_closed_adapter_is_unavailable(db: Database) -> None:
    await db.close()
    assert (await refusal(db.get_product("x")))[:2] == (503, "DATABASE_UNAVAILABLE")


async def test_both_adapters_read_the_same_documents(database_url: str) -> None:
    async with adapter("postgres", database_url) as pg, adapter("supabase", database_url) as sb:
        sku = (await make_product(pg, on_hand=4))["sku"]
        order_id = uuid.UUID((await place(sb, [(sku, 1)], customer="c-9"))["order"]["id"])
        reads: list[Callable[[Database], Awaitable[Any]]] = [
            lambda db: db.get_product(sku),
            lambda db: db.list_products(None, 10),
            lambda db: db.get_order(order_id),
            lambda db: db.list_orders("c-9", None, 10, None),
            lambda db: db.list_stock_events(None, None, 10),
            lambda db: db.schema_versions(),
        ]
        for read in reads:
            assert await read(pg) == await read(sb)
        assert (await pg.stock_events_since(None, 10))["events"] == (
            await sb.stock_events_since(None, 10)
        )["events"]


# What goes over the wire in Supabase mode


@pytest.fixture
async def api(database_url: str) -> AsyncIterator[PostgREST]:
    async with supabase_api(database_url) as stand_in:
        yield stand_in


@pytest.fixture
async def supabase(api: PostgREST) -> AsyncIterator[SupabaseDatabase]:
    database = SupabaseDatabase(SUPABASE_URL, SERVICE_ROLE_KEY)
    await database.connect()
    yield database
    await database.close()


async def test_a_call_is_the_request_postgrest_expects(
    supabase: SupabaseDatabase, api: PostgREST
) -> None:
    sku = (await make_product(supabase))["sku"]
    await place(supabase, [(sku, 1)], key="k-1")

    request = api.calls.last.request
    assert (request.method, str(request.url)) == ("POST", f"{SUPABASE_URL}/rest/v1/rpc/place_order")
    assert request.headers["apikey"] == SERVICE_ROLE_KEY
    assert request.headers["authorization"] == f"Bearer {SERVICE_ROLE_KEY}"
    assert request.headers["content-profile"] == "public"
    assert request.headers["content-type"] == "application/json"
    assert "prefer" not in request.headers
    assert json.loads(request.content) == {
        "p_items": [{"sku": sku, "quantity": 1}],
        "p_customer_id": None,
        "p_idempotency_key": "k-1",
        "p_node": "test",
        "p_hold_seconds": 900,
        "p_fee_bps": 2000,
        "p_max_lines": 100,
    }
    assert api.calls.last.response.status_code == 200


async def test_errors_come_back_as_postgrest_renders_them(
    supabase: SupabaseDatabase, api: PostgREST
) -> None:
    sku = (await make_product(supabase, on_hand=1))["sku"]

    await refusal(place(supabase, [(sku, 2)]))
    response = api.calls.last.response
    body = response.json()
    assert (response.status_code, body["code"], body["message"]) == (409, "PT409", "OUT_OF_STOCK")
    assert body["hint"] == "not enough stock for every line"
    assert json.loads(body["details"]) == {"lines": [{"sku": sku, "requested": 2, "available": 1}]}

    await refusal(supabase.create_product("bad sku!", "x", 1, 1, 1, "test"))
    assert (api.calls.last.response.status_code, api.calls.last.response.json()["code"]) == (
        400,
        "23514",
    )

    await refusal(supabase.call("no_such_function", sku="x"))
    assert (api.calls.last.response.status_code, api.calls.last.response.json()["code"]) == (
        404,
        "PGRST202",
    )


async def test_a_lost_reply_is_unavailable_and_the_order_can_be_retried(
    supabase: SupabaseDatabase, api: PostgREST
) -> None:
    sku = (await make_product(supabase, on_hand=5))["sku"]
    assert api.route is not None

    async def commit_then_lose_the_reply(request: httpx.Request, function: str) -> None:
        await api.handle(request, function)
        raise httpx.ReadTimeout("the reply was lost", request=request)

    api.route.side_effect = commit_then_lose_the_reply
    status, code, _ = await refusal(place(supabase, [(sku, 2)], key="retry-me"))
    assert (status, code) == (503, "DATABASE_UNAVAILABLE")

    api.route.side_effect = api.handle
    retried = await place(supabase, [(sku, 2)], key="retry-me")
    assert retried["replayed"] is True
    assert (await supabase.get_product(sku))["reserved"] == 2


async def test_an_unreachable_api_is_unavailable() -> None:
    database = SupabaseDatabase(f"http://127.0.0.1:{free_port()}", SERVICE_ROLE_KEY)
    await database.connect()
    try:
        status, code, _ = await refusal(database.get_product("x"))
    finally:
        await database.close()
    assert (status, code) == (503, "DATABASE_UNAVAILABLE")


async def test_an_api_that_does_not_answer_times_out_as_unavailable() -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes
        writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    database = SupabaseDatabase(f"http://127.0.0.1:{port}", SERVICE_ROLE_KEY, timeout=0.2)
    await database.connect()
    try:
        with pytest.raises(AppError) as refused:
            await database.get_product("x")
    finally:
        await database.close()
        server.close()
        await server.wait_closed()
    assert (refused.value.status, refused.value.code) == (503, "DATABASE_UNAVAILABLE")
    assert "in time" in refused.value.message


@pytest.mark.parametrize(
    ("key", "status", "code", "reply"),
    [
        (ANON_KEY, 503, "DATABASE_FORBIDDEN", 401),  # 42501 for anon: 401
        ("not-a-project-key", 503, "DATABASE_UNAVAILABLE", 401),  # the gateway's answer
    ],
)
async def test_a_key_that_is_not_the_service_role_key_is_refused(
    api: PostgREST, key: str, status: int, code: str, reply: int
) -> None:
    database = SupabaseDatabase(SUPABASE_URL, key)
    await database.connect()
    try:
        assert (await refusal(database.get_product("x")))[:2] == (status, code)
    finally:
        await database.close()
    assert api.calls.last.response.status_code == reply


# Choosing the adapter


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


SUPABASE = {"supabase_url": SUPABASE_URL, "supabase_service_role_key": SecretStr("sekret-key")}
POSTGRES = {"database_url": SecretStr("postgresql://orderflow:hunter2@db.example:6543/postgres")}


@pytest.mark.parametrize(
    ("values", "adapter_type"),
    [
        (SUPABASE, SupabaseDatabase),
        (POSTGRES, PostgresDatabase),
        ({**SUPABASE, **POSTGRES}, SupabaseDatabase),
    ],
    ids=["supabase", "postgres", "both-supabase-wins"],
)
def test_settings_choose_the_adapter_and_logs_hide_secrets(
    values: dict[str, Any], adapter_type: type[Database], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="backend.app"):
        chosen = open_database(settings(**values))
    assert type(chosen) is adapter_type
    assert chosen.mode in caplog.text
    assert "sekret-key" not in caplog.text
    assert "hunter2" not in caplog.text


def test_the_pooler_turns_the_statement_cache_off() -> None:
    assert settings(**POSTGRES).statement_cache_size == 0


def test_no_database_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY"):
        open_database(settings())


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"supabase_url": SUPABASE_URL}, "SUPABASE_SERVICE_ROLE_KEY (or SUPABASE_KEY) is not"),
        ({"supabase_service_role_key": "sekret-key"}, "SUPABASE_URL is not"),
        (
            {"supabase_url": "postgresql://u:hunter2@h/db", "supabase_service_role_key": "k"},
            "API URL",
        ),
    ],
)
def test_a_half_configured_mode_is_a_startup_error_without_secrets(
    values: dict[str, Any], problem: str
) -> None:
    with pytest.raises(pydantic.ValidationError) as refused:
        settings(**values)
    text = str(refused.value)
    assert problem in text
    assert "sekret-key" not in text
    assert "hunter2" not in text


# A running node in either mode


@pytest.mark.parametrize("mode", ADAPTERS)
async def test_a_node_serves_the_same_api_in_either_mode(database_url: str, mode: str) -> None:
    config = node_settings(database_url)
    if mode == "supabase":
        config = Settings(
            _env_file=None,
            **{
                **config.model_dump(),
                "database_url": None,
                "supabase_url": SUPABASE_URL,
                "supabase_service_role_key": SecretStr(SERVICE_ROLE_KEY),
            },
        )
    async with api_for(mode, database_url) as api, serve(config) as node:
        ready = (await node.get("/ready")).json()
        assert (ready["mode"], ready["ready"]) == (mode, True)
        body = {"sku": "E2E", "name": "End to end", "price_cents": 500, "on_hand": 9}
        assert (await node.post("/products", json=body)).status_code == 201
        placed = await node.post("/orders", json={"items": [{"sku": "E2E", "quantity": 4}]})
        assert placed.status_code == 201
        product = (await node.get("/products/E2E")).json()
        assert (product["available"], product["version"]) == (5, 2)
        refused = await node.post("/orders", json={"items": [{"sku": "E2E", "quantity": 6}]})
        assert (refused.status_code, refused.json()["code"]) == (409, "OUT_OF_STOCK")
        order = (await node.get(f"/orders/{placed.json()['id']}")).json()
        assert order["status"] == "pending"
        if api is not None:  # the node spoke to the Supabase API, and only to it
            called = {call.request.url.path.rsplit("/", 1)[-1] for call in api.calls}
            assert {"catalog_snapshot", "stock_events_since", "schema_versions"} <= called
            assert {"create_product", "place_orders", "get_order"} <= called

    direct = PostgresDatabase(database_url)  # what the node wrote is in Postgres
    await direct.connect()
    try:
        assert (await direct.get_product("E2E"))["reserved"] == 4
    finally:
        await direct.close()


# API keys (the key itself is made by backend.auth.keys; here its public id and
# hash are opaque text, as they are to the adapters)


async def make_key(db: Database, scopes: list[str], name: str = "till") -> tuple[Json, str]:
    key_hash = uuid.uuid4().hex * 2
    record = await db.create_api_key(uuid.uuid4().hex[:16], key_hash, name, scopes)
    return record, key_hash


async def test_an_api_key_is_listed_without_its_hash_and_authenticates(db: Database) -> None:
    record, key_hash = await make_key(db, ["orders:write", "catalog:write", "orders:write"])
    assert set(record) == {
        "id", "public_id", "name", "scopes", "created_at", "last_used_at", "revoked_at"
    }  # fmt: skip
    assert (record["name"], record["scopes"]) == ("till", ["catalog:write", "orders:write"])
    assert (record["last_used_at"], record["revoked_at"]) == (None, None)
    listed = await db.list_api_keys()
    assert listed == {"items": [record]}
    assert key_hash not in json.dumps(listed)

    found = await db.authenticate_api_key(record["public_id"], key_hash)
    assert found == {"id": record["id"], "name": "till", "scopes": record["scopes"]}
    [used] = (await db.list_api_keys())["items"]
    assert used["last_used_at"] is not None


async def test_a_revoked_api_key_is_refused_and_stays_listed(db: Database) -> None:
    record, key_hash = await make_key(db, ["orders:read"])
    revoked = await db.revoke_api_key(uuid.UUID(record["id"]))
    assert revoked == {**record, "revoked_at": revoked["revoked_at"]}
    assert revoked["revoked_at"] is not None
    assert await db.revoke_api_key(uuid.UUID(record["id"])) == revoked
    assert (await db.list_api_keys())["items"] == [revoked]
    assert await refusal(db.authenticate_api_key(record["public_id"], key_hash)) == (
        401,
        "UNAUTHENTICATED",
        {},
    )
    missing = uuid.uuid4()
    assert await refusal(db.revoke_api_key(missing)) == (
        404,
        "NOT_FOUND",
        {"key_id": str(missing)},
    )


async def test_an_api_key_is_refused_for_a_wrong_hash_or_an_unknown_public_id(
    db: Database,
) -> None:
    record, key_hash = await make_key(db, ["orders:read"])
    for public_id, presented in (
        (record["public_id"], uuid.uuid4().hex * 2),
        (uuid.uuid4().hex[:16], key_hash),
    ):
        assert await refusal(db.authenticate_api_key(public_id, presented)) == (
            401,
            "UNAUTHENTICATED",
            {},
        )


async def test_an_api_key_needs_known_scopes(db: Database) -> None:
    status, code, details = await refusal(make_key(db, ["orders:read", "root"]))
    assert (status, code, details["unknown_scopes"]) == (422, "INVALID_INPUT", ["root"])
    assert "orders:read" in details["known_scopes"]
    assert (await refusal(make_key(db, [])))[:2] == (422, "INVALID_INPUT")
    assert (await db.list_api_keys())["items"] == []


async def test_both_adapters_read_the_same_api_keys(database_url: str) -> None:
    async with adapter("postgres", database_url) as pg, adapter("supabase", database_url) as sb:
        record, key_hash = await make_key(pg, ["ledger:read"])
        await make_key(sb, ["metrics:read"], name="scraper")
        assert await pg.list_api_keys() == await sb.list_api_keys()
        assert await sb.authenticate_api_key(record["public_id"], key_hash) == (
            await pg.authenticate_api_key(record["public_id"], key_hash)
        )
        assert await sb.revoke_api_key(uuid.UUID(record["id"])) == (
            await pg.revoke_api_key(uuid.UUID(record["id"]))
        )


# Owners: idempotency keys belong to their caller, orders to their customer


async def test_an_idempotency_key_is_the_callers_own(db: Database) -> None:
    sku = (await make_product(db, on_hand=20))["sku"]
    items = [{"sku": sku, "quantity": 2}]

    async def place_as(caller: str | None, quantity: int = 2) -> Written:
        lines = [{"sku": sku, "quantity": quantity}]
        return await db.place_order(lines, None, "shared", "test", 900, 0, 100, caller=caller)

    alice = await place_as("user:alice")
    bob = await place_as("user:bob", quantity=3)  # another body, and still no mismatch
    nobody = await place_as(None)
    orders = [alice["order"], bob["order"], nobody["order"]]
    assert [result["replayed"] for result in (alice, bob, nobody)] == [False, False, False]
    assert len({order["id"] for order in orders}) == 3

    assert (await place_as("user:alice"))["order"] == alice["order"]
    assert (await place_as("user:bob", quantity=3))["order"] == bob["order"]
    assert (await place_as("anonymous"))["order"] == nobody["order"]
    assert (await db.place_order(items, None, "shared", "test", 900, 0, 100))["replayed"] is True
    assert await refusal(place_as("user:bob")) == (
        409,
        "IDEMPOTENCY_MISMATCH",
        {"order_id": bob["order"]["id"]},
    )
    assert (await db.get_product(sku))["reserved"] == 7


async def test_another_customers_order_is_not_found_as_a_missing_one_is(db: Database) -> None:
    sku = (await make_product(db, on_hand=10))["sku"]
    theirs = uuid.UUID((await place(db, [(sku, 2)], customer="c-1"))["order"]["id"])
    nobodys = uuid.UUID((await place(db, [(sku, 1)]))["order"]["id"])
    settled = uuid.UUID((await place(db, [(sku, 1)], customer="c-1"))["order"]["id"])
    await db.cancel_order(settled, "test")
    for order_id in (theirs, nobodys, settled, uuid.uuid4()):
        not_found = (404, "NOT_FOUND", {"order_id": str(order_id)})
        assert await refusal(db.get_order(order_id, customer_id="c-2")) == not_found
        assert await refusal(db.cancel_order(order_id, "test", customer_id="c-2")) == not_found
    assert (await db.get_order(theirs))["status"] == "pending"
    assert (await db.get_product(sku))["reserved"] == 3


async def test_a_customer_reads_and_cancels_its_own_order(db: Database) -> None:
    sku = (await make_product(db, on_hand=10))["sku"]
    own = uuid.UUID((await place(db, [(sku, 2)], customer="c-1"))["order"]["id"])
    assert await db.get_order(own, customer_id="c-1") == await db.get_order(own)
    cancelled = await db.cancel_order(own, "test", customer_id="c-1")
    assert (cancelled["order"]["status"], [c["reason"] for c in cancelled["changes"]]) == (
        "cancelled",
        ["released"],
    )
    assert await refusal(db.cancel_order(own, "test", customer_id="c-1")) == (
        409,
        "INVALID_TRANSITION",
        {"order_id": str(own), "status": "cancelled", "to": "cancelled"},
    )
    assert (await db.get_product(sku))["reserved"] == 0


async def test_the_caller_and_customer_go_to_postgrest_by_name_and_only_when_set(
    supabase: SupabaseDatabase, api: PostgREST
) -> None:
    sku = (await make_product(supabase))["sku"]
    items = [{"sku": sku, "quantity": 1}]
    placed = await supabase.place_order(items, "c-1", "k-1", "test", 900, 0, 100, caller="key:k")
    assert json.loads(api.calls.last.request.content)["p_caller"] == "key:k"
    order_id = uuid.UUID(placed["order"]["id"])

    await supabase.get_order(order_id, customer_id="c-1")
    assert json.loads(api.calls.last.request.content) == {
        "p_order_id": str(order_id),
        "p_customer_id": "c-1",
    }
    await supabase.get_order(order_id)
    assert json.loads(api.calls.last.request.content) == {"p_order_id": str(order_id)}
    await supabase.cancel_order(order_id, "test", customer_id="c-1")
    assert json.loads(api.calls.last.request.content) == {
        "p_order_id": str(order_id),
        "p_node": "test",
        "p_customer_id": "c-1",
    }
