"""Catch-up and resync on real Postgres: every committed ledger row reaches a node once.

A transaction left open (an idle session, a long import) must neither stall
the catch-up nor be skipped by it: what committed after it is read at once,
its own rows when it commits. Both adapters run the ledger tests: PostgREST
runs the STABLE functions in READ ONLY transactions.
"""

from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from backend.cache import Outcome, StockCache
from backend.documents import Change, Product
from backend.errors import AppError
from backend.sync import Sync
from database import Database, PostgresDatabase, SupabaseDatabase
from tests.postgrest import SERVICE_ROLE_KEY, SUPABASE_URL, supabase_api


@pytest.fixture(params=["postgres", "supabase"])
async def db(request: pytest.FixtureRequest, database_url: str) -> AsyncIterator[Database]:
    database: Database
    if request.param == "postgres":
        database = PostgresDatabase(database_url)
        await database.connect()
        yield database
        await database.close()
        return
    async with supabase_api(database_url):
        database = SupabaseDatabase(SUPABASE_URL, SERVICE_ROLE_KEY)
        await database.connect()
        yield database
        await database.close()


@pytest.fixture
async def pg(database_url: str) -> AsyncIterator[PostgresDatabase]:
    database = PostgresDatabase(database_url)
    await database.connect()
    yield database
    await database.close()


@asynccontextmanager
async def open_transaction(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A second session inside BEGIN; committed when the block ends without error."""
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            yield conn
    finally:
        await conn.close()


async def read_all(db: Database, cursor: str | None, limit: int) -> tuple[list[Change], str]:
    """Page through the ledger after `cursor` until it says there is no more."""
    events: list[Change] = []
    for _ in range(100):
        page = await db.stock_events_since(cursor, limit)
        assert len(page["events"]) <= limit
        events += page["events"]
        cursor = page["cursor"]
        if not page["more"]:
            return events, page["cursor"]
    raise AssertionError("the catch-up did not reach the end of the ledger in 100 pages")


def stamps(events: list[Change]) -> list[tuple[str, int]]:
    return [(event["sku"], event["version"]) for event in events]


async def create(db: Database, sku: str, on_hand: int = 10) -> Product:
    result = await db.create_product(sku, sku, 100, on_hand, 1, "test")
    product: Product = result["product"]
    return product


async def test_an_open_transaction_neither_stalls_the_catch_up_nor_is_skipped(
    db: Database, database_url: str
) -> None:
    await create(db, "HELD")
    await create(db, "OTHER")
    start = (await db.catalog_snapshot())["cursor"]

    async with open_transaction(database_url) as session:
        await session.fetchval("select public.adjust_stock('HELD', 5, 'restock', 'open')")
        for _ in range(7):
            await db.adjust_stock("OTHER", 1, "restock", "test")

        events, cursor = await read_all(db, start, 3)
        assert stamps(events) == [("OTHER", version) for version in range(2, 9)]
        assert (await read_all(db, cursor, 3))[0] == []

    late, cursor = await read_all(db, cursor, 3)
    assert [(e["sku"], e["version"], e["on_hand"]) for e in late] == [("HELD", 2, 15)]
    assert (await read_all(db, cursor, 3))[0] == []


async def test_a_window_pages_through_one_transaction_and_leaves_later_commits_for_the_next(
    db: Database,
) -> None:
    skus = [f"LINE-{i}" for i in range(5)]
    for sku in skus:
        await create(db, sku)
    start = (await db.catalog_snapshot())["cursor"]
    await db.place_order([{"sku": sku, "quantity": 1} for sku in skus], None, None, "t", 60, 0, 10)

    first = await db.stock_events_since(start, 2)
    assert (stamps(first["events"]), first["more"]) == ([(skus[0], 2), (skus[1], 2)], True)
    await db.adjust_stock(skus[0], 1, "restock", "test")  # commits while the window is read
    rest, cursor = await read_all(db, first["cursor"], 2)
    assert stamps(rest) == [(sku, 2) for sku in skus[2:]]
    later, cursor = await read_all(db, cursor, 2)
    assert stamps(later) == [(skus[0], 3)]
    assert (await read_all(db, cursor, 2))[0] == []


async def test_a_snapshot_and_the_catch_up_after_it_miss_nothing(
    db: Database, database_url: str
) -> None:
    await create(db, "HELD")
    async with open_transaction(database_url) as session:
        await session.fetchval("select public.adjust_stock('HELD', 5, 'restock', 'open')")
        await create(db, "SEEN")
        snapshot = await db.catalog_snapshot()
        assert [(p["sku"], p["version"]) for p in snapshot["products"]] == [
            ("HELD", 1),
            ("SEEN", 1),
        ]
    events, _ = await read_all(db, snapshot["cursor"], 10)
    assert stamps(events) == [("HELD", 2)]


async def test_a_cursor_is_checked(db: Database) -> None:
    for cursor in ("x:y", "1:2:3/4", "a/b/c/d", "5:1:/6:9:/7/x", "9:1:"):
        assert (await _refusal(db.stock_events_since(cursor, 2))) == (422, "INVALID_CURSOR")


async def test_a_cursor_of_the_earlier_txid_and_seq_form_still_reads_on(
    db: Database, pg: PostgresDatabase, database_url: str
) -> None:
    await create(db, "OLD")
    await create(db, "NEW")
    conn = await asyncpg.connect(database_url)
    try:
        txid = await conn.fetchval("select txid from public.stock_events where sku = 'NEW'")
    finally:
        await conn.close()
    events, _ = await read_all(db, f"{txid}:0", 10)
    assert stamps(events) == [("NEW", 1)]


async def _refusal(call: Awaitable[Any]) -> tuple[int, str]:
    with pytest.raises(AppError) as refused:
        await call
    return refused.value.status, refused.value.code


# The node's side: Sync over the real ledger


async def test_sync_catches_up_past_an_open_transaction_each_row_once(
    pg: PostgresDatabase, database_url: str
) -> None:
    await create(pg, "HELD")
    await create(pg, "OTHER")
    cache = StockCache()
    sync = Sync(pg, cache, page_size=3)
    seen: list[tuple[str, int, Outcome]] = []
    sync.listen(lambda change, outcome, _: seen.append((change["sku"], change["version"], outcome)))
    await sync.resync()

    async with open_transaction(database_url) as session:
        await session.fetchval("select public.adjust_stock('HELD', 5, 'restock', 'open')")
        for _ in range(7):
            await pg.adjust_stock("OTHER", 1, "restock", "test")
        assert await sync.catch_up() == 7
        assert (cache.version_of("OTHER"), cache.version_of("HELD")) == (8, 1)

    assert await sync.catch_up() == 1
    assert cache.get("HELD")["on_hand"] == 15  # type: ignore[index]
    assert await sync.catch_up() == 0
    expected = [("OTHER", v, Outcome.APPLIED) for v in range(2, 9)] + [("HELD", 2, Outcome.APPLIED)]
    assert seen == expected


async def test_a_late_message_cannot_bring_back_a_deleted_product_after_a_resync(
    pg: PostgresDatabase,
) -> None:
    created = (await pg.create_product("GONE", "Gone", 100, 5, 1, "test"))["changes"][0]
    await pg.delete_product("GONE", "test")
    await create(pg, "AGAIN")
    await pg.delete_product("AGAIN", "test")
    recreated = await create(pg, "AGAIN", on_hand=3)

    cache = StockCache()
    sync = Sync(pg, cache)
    await sync.resync()
    assert (cache.get("GONE"), cache.version_of("GONE")) == (None, 2)
    assert cache.get("AGAIN") == recreated

    outcomes: list[Outcome] = []
    sync.listen(lambda _change, outcome, _source: outcomes.append(outcome))
    sync.apply([created], "bus")  # an outbox flushed long after the delete
    assert (outcomes, cache.get("GONE")) == ([Outcome.STALE], None)
