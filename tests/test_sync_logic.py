"""Sync and StockCache against the in-memory database: every race, in milliseconds.

The same logic meets real Postgres and Redis in tests/test_catchup.py and
tests/test_sync.py; here a test stages exactly the interleaving it is about.
"""

import asyncio

import pytest

from backend.cache import Outcome, StockCache
from backend.documents import Change
from backend.errors import AppError
from backend.sync import FAR_AHEAD, Sync
from tests.fakes import FakeDatabase


class Node:
    """A node's sync state over a fake database, recording every offer to the cache."""

    def __init__(self, db: FakeDatabase, page_size: int = 1000) -> None:
        self.db = db
        self.cache = StockCache()
        self.sync = Sync(db, self.cache, page_size=page_size)
        self.offers: list[tuple[str, int, int, Outcome, str]] = []
        self.reread = asyncio.Event()
        self.sync.listen(self._offered)

    def _offered(self, change: Change, outcome: Outcome, source: str) -> None:
        self.offers.append(
            (change["sku"], change["product_id"], change["version"], outcome, source)
        )
        if source == "reread":
            self.reread.set()

    def outcomes(self, source: str) -> list[Outcome]:
        return [outcome for *_, outcome, offered in self.offers if offered == source]

    def held(self, sku: str) -> tuple[int, int] | None:
        product = self.cache.get(sku)
        return None if product is None else (product["id"], product["version"])


async def create(db: FakeDatabase, sku: str, on_hand: int = 10) -> Change:
    change: Change = (await db.create_product(sku, sku, 100, on_hand, 1, "writer"))["changes"][0]
    return change


async def adjust(db: FakeDatabase, sku: str, delta: int = 1) -> Change:
    change: Change = (await db.adjust_stock(sku, delta, "restock", "writer"))["changes"][0]
    return change


async def delete(db: FakeDatabase, sku: str) -> Change:
    change: Change = (await db.delete_product(sku, "writer"))["changes"][0]
    return change


@pytest.fixture
def db() -> FakeDatabase:
    return FakeDatabase()


# Gaps


async def turns(count: int = 3) -> None:
    """Let the event loop run what is due now (a hold of 0 s ends on the next turn)."""
    for _ in range(count):
        await asyncio.sleep(0)


async def test_a_skipped_version_triggers_exactly_one_reread(
    db: FakeDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("backend.sync.HOLD_SECONDS", 0)
    await create(db, "A")
    node = Node(db)
    await node.sync.resync()
    v2, v3, v4, v5 = [await adjust(db, "A") for _ in range(4)]
    gate = db.gate("list_stock_events")

    node.sync.apply([v3], "bus")  # v2 is lost
    await gate.entered.wait()  # the re-read has read v5 and is on its way
    node.sync.apply([v5], "bus")  # v4 is lost too, while the re-read is in flight
    await turns()
    gate.release.set()
    await node.reread.wait()

    assert (db.count("list_stock_events"), node.sync.rereads) == (1, 1)
    assert node.outcomes("bus") == [Outcome.GAP, Outcome.GAP]
    assert node.outcomes("reread") == [Outcome.STALE]
    assert node.held("A") == (1, v5["version"])
    assert [v2["version"], v3["version"], v4["version"]] == [2, 3, 4]


async def test_a_reread_that_jumps_versions_asks_for_nothing_more(db: FakeDatabase) -> None:
    await create(db, "A")
    node = Node(db)
    await node.sync.resync()
    changes = [await adjust(db, "A") for _ in range(4)]

    node.sync.apply([changes[1]], "bus")  # v3 after v1
    await node.reread.wait()  # the re-read brings v5 while we hold v3: a jump, expected

    assert node.outcomes("reread") == [Outcome.GAP]
    assert (db.count("list_stock_events"), node.sync.rereads) == (1, 1)
    assert node.held("A") == (1, 5)


async def test_a_failed_reread_is_asked_again_on_the_next_gap(db: FakeDatabase) -> None:
    await create(db, "A")
    node = Node(db)
    await node.sync.resync()
    changes = [await adjust(db, "A") for _ in range(4)]
    failed = db.fail("list_stock_events")
    gate = db.gate("list_stock_events")

    node.sync.apply([changes[1]], "bus")
    await failed.wait()
    node.sync.apply([changes[3]], "bus")
    await gate.entered.wait()
    gate.release.set()
    await node.reread.wait()

    assert (db.count("list_stock_events"), node.sync.rereads) == (2, 2)
    assert node.held("A") == (1, 5)


# Duplicates and order


async def test_duplicates_and_older_changes_are_stale_from_every_source(db: FakeDatabase) -> None:
    await create(db, "A")
    node = Node(db)
    await node.sync.resync()
    v2, v3 = await adjust(db, "A", 2), await adjust(db, "A", 3)

    node.sync.apply([v2, v2, v3, v2, v3], "bus")
    assert await node.sync.catch_up() == 2

    assert node.outcomes("bus") == [
        Outcome.APPLIED,
        Outcome.STALE,
        Outcome.APPLIED,
        Outcome.STALE,
        Outcome.STALE,
    ]
    assert node.outcomes("ledger") == []  # read in brief: the cache holds both already
    assert node.cache.get("A")["on_hand"] == 15  # type: ignore[index]
    assert db.count("list_stock_events") == 0


async def test_an_early_bus_change_waits_for_the_versions_before_it(db: FakeDatabase) -> None:
    await create(db, "A")
    node = Node(db)
    await node.sync.resync()
    v2, v3, v4 = [await adjust(db, "A", delta) for delta in (1, 2, 3)]

    node.sync.apply([v4], "bus")  # two nodes published; the later change came first
    assert node.held("A") == (1, 1)  # not shown yet: v2 and v3 are on their way
    node.sync.apply([v2, v3], "bus")

    offered = [(version, outcome) for _, _, version, outcome, _ in node.offers]
    assert offered == [(2, Outcome.APPLIED), (3, Outcome.APPLIED), (4, Outcome.APPLIED)]
    assert node.cache.get("A")["on_hand"] == 16  # type: ignore[index]
    assert (node.sync.held, node.sync.rereads) == (1, 0)
    assert [v2["version"], v3["version"], v4["version"]] == [2, 3, 4]


async def test_an_early_change_whose_predecessor_never_comes_is_shown_after_the_wait(
    db: FakeDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("backend.sync.HOLD_SECONDS", 0.01)
    await create(db, "A")
    node = Node(db)
    await node.sync.resync()
    _, v3 = await adjust(db, "A", 1), await adjust(db, "A", 2)

    node.sync.apply([v3], "bus")  # v2 is lost
    assert node.outcomes("bus") == []
    await node.reread.wait()  # the wait ended: v3 is shown and the product re-read

    assert node.outcomes("bus") == [Outcome.GAP]
    assert node.outcomes("reread") == [Outcome.STALE]
    assert node.held("A") == (1, 3)


async def test_a_nodes_own_write_shows_at_once_even_ahead_of_the_bus(db: FakeDatabase) -> None:
    await create(db, "A")
    node = Node(db)
    await node.sync.resync()
    _, v3 = await adjust(db, "A", 1), await adjust(db, "A", 2)

    node.sync.apply([v3], "local")

    assert node.outcomes("local") == [Outcome.GAP]
    assert node.held("A") == (1, 3)
    await asyncio.sleep(0)
    # Its own write was the latest state at its commit: nothing to re-read.
    assert (node.sync.rereads, db.count("list_stock_events")) == (0, 0)


# Deleted and re-created SKUs


async def test_a_late_change_cannot_bring_back_a_product_deleted_before_the_snapshot(
    db: FakeDatabase,
) -> None:
    created = await create(db, "A")
    updated = await adjust(db, "A")
    await delete(db, "A")
    node = Node(db)
    await node.sync.resync()

    node.sync.apply([created, updated], "bus")  # an outbox flushed long after

    assert node.outcomes("bus") == [Outcome.STALE, Outcome.STALE]
    assert (node.cache.get("A"), node.cache.version_of("A"), len(node.cache)) == (None, 3, 0)


async def test_a_resync_forgets_a_product_whose_delete_it_missed(db: FakeDatabase) -> None:
    created = await create(db, "A")
    node = Node(db)
    node.sync.apply([created], "bus")
    await delete(db, "A")  # its message is lost

    await node.sync.resync()
    node.sync.apply([created], "bus")

    assert (node.cache.get("A"), node.cache.version_of("A")) == (None, 2)
    assert node.outcomes("bus") == [Outcome.APPLIED, Outcome.STALE]


async def test_a_sku_created_again_is_a_new_product_whatever_the_order(db: FakeDatabase) -> None:
    first = await create(db, "A")
    gone = await delete(db, "A")
    again = await create(db, "A", on_hand=3)
    moved = await adjust(db, "A", 4)
    node = Node(db)
    node.sync.apply([first], "bus")

    node.sync.apply([again, gone, moved, first], "bus")

    assert node.outcomes("bus") == [
        Outcome.APPLIED,
        Outcome.APPLIED,  # a new product id: no gap, however far its version is
        Outcome.STALE,  # the old product's delete, after the new one arrived
        Outcome.APPLIED,
        Outcome.STALE,
    ]
    assert (node.held("A"), node.cache.get("A")["on_hand"]) == ((2, 2), 7)  # type: ignore[index]
    await node.sync.resync()  # the snapshot has the live product and no tombstone
    assert node.held("A") == (2, 2)
    assert node.sync.rereads == 0


# Resync racing deliveries


async def test_a_change_delivered_during_a_resync_survives_the_older_snapshot(
    db: FakeDatabase,
) -> None:
    await create(db, "A")
    node = Node(db)
    await node.sync.resync()
    gate = db.gate("catalog_snapshot")
    resync = asyncio.ensure_future(node.sync.resync())
    await gate.entered.wait()  # the snapshot has A at version 1

    newer = await adjust(db, "A", 5)
    node.sync.apply([newer], "bus")
    gate.release.set()
    await resync

    assert node.held("A") == (1, 2)
    assert node.cache.get("A")["on_hand"] == 15  # type: ignore[index]
    assert node.outcomes("ledger") == []  # the catch-up after it: nothing lost, nothing to add


async def test_a_late_message_during_a_resync_is_undone_by_the_tombstone(
    db: FakeDatabase,
) -> None:
    created = await create(db, "A")
    await delete(db, "A")
    node = Node(db)
    gate = db.gate("catalog_snapshot")
    resync = asyncio.ensure_future(node.sync.resync())
    await gate.entered.wait()

    node.sync.apply([created], "bus")  # a flushed outbox, while the snapshot is in flight
    assert node.held("A") == (1, 1)
    gate.release.set()
    await resync
    node.sync.apply([created], "bus")  # and the same message once more, after it

    assert (node.cache.get("A"), node.cache.version_of("A")) == (None, 2)
    assert node.outcomes("bus") == [Outcome.APPLIED, Outcome.STALE]


async def test_a_product_created_during_a_resync_is_brought_back_by_its_catch_up(
    db: FakeDatabase,
) -> None:
    node = Node(db)
    gate = db.gate("catalog_snapshot")
    resync = asyncio.ensure_future(node.sync.resync())
    await gate.entered.wait()  # an empty catalog

    node.sync.apply([await create(db, "NEW")], "bus")
    gate.release.set()
    await resync

    assert node.held("NEW") == (1, 1)
    assert node.outcomes("ledger") == [Outcome.APPLIED]


# Catch-up


async def test_the_catch_up_pages_through_the_ledger_each_row_once(db: FakeDatabase) -> None:
    await create(db, "A")
    node = Node(db, page_size=2)
    await node.sync.resync()
    for _ in range(5):
        await adjust(db, "A")

    assert await node.sync.catch_up() == 5
    # The resync's page in brief, then pages of 2, 2 and 1, each in brief and in full.
    assert db.count("stock_events_since") == 1 + 3 * 2
    assert await node.sync.catch_up() == 0
    assert node.outcomes("ledger") == [Outcome.APPLIED] * 5
    assert node.held("A") == (1, 6)


async def test_the_catch_up_reads_in_full_only_what_is_missing_or_of_a_watched_order(
    db: FakeDatabase,
) -> None:
    await create(db, "A")
    node = Node(db)
    await node.sync.resync()
    v2 = await adjust(db, "A", 2)
    node.sync.apply([v2], "bus")
    before = db.count("stock_events_since")
    assert await node.sync.catch_up() == 1
    assert db.count("stock_events_since") == before + 1  # in brief only: held already
    assert node.outcomes("ledger") == []

    v3 = await adjust(db, "A", 3)
    v3["order_id"] = db.ledger[-1]["order_id"] = "order-1"
    node.sync.apply([v3], "bus")
    node.sync.watch_orders(lambda order_id: order_id == "order-1")
    assert await node.sync.catch_up() == 1
    assert db.count("stock_events_since") == before + 3  # a watched order's row: in full
    assert node.outcomes("ledger") == [Outcome.STALE]  # offered, for its order's news

    await adjust(db, "A", 4)  # the bus lost this one
    assert await node.sync.catch_up() == 1
    assert db.count("stock_events_since") == before + 5
    assert node.outcomes("ledger") == [Outcome.STALE, Outcome.APPLIED]
    assert node.held("A") == (1, 4)


async def test_a_catch_up_that_fails_midway_resumes_after_the_last_page_applied(
    db: FakeDatabase,
) -> None:
    await create(db, "A")
    node = Node(db, page_size=2)
    await node.sync.resync()
    for _ in range(5):
        await adjust(db, "A")
    brief = db.gate("stock_events_since")
    catch_up = asyncio.ensure_future(node.sync.catch_up())
    await brief.entered.wait()  # the first page in brief
    full = db.gate("stock_events_since")
    brief.release.set()
    await full.entered.wait()  # the first page in full
    db.fail("stock_events_since")  # the second page
    full.release.set()

    with pytest.raises(AppError):
        await catch_up
    assert node.held("A") == (1, 3)
    assert await node.sync.catch_up() == 3
    assert node.outcomes("ledger") == [Outcome.APPLIED] * 5


async def test_a_page_is_applied_in_version_order_per_product(db: FakeDatabase) -> None:
    await create(db, "A")
    await create(db, "B")
    node = Node(db)
    await node.sync.resync()
    for sku in ("B", "A", "B", "A"):
        await adjust(db, sku)
    db.ledger[-4:] = [db.ledger[-1], db.ledger[-2], db.ledger[-3], db.ledger[-4]]  # commit order

    assert await node.sync.catch_up() == 4
    assert node.outcomes("ledger") == [Outcome.APPLIED] * 4
    assert (node.held("A"), node.held("B"), node.sync.rereads) == ((1, 3), (2, 3), 0)


# Trust


async def test_a_bus_change_far_ahead_is_checked_against_the_database_first(
    db: FakeDatabase,
) -> None:
    await create(db, "A")
    node = Node(db)
    await node.sync.resync()
    real = await adjust(db, "A")
    forged: Change = {
        **real,
        "version": real["version"] + FAR_AHEAD + 5,
        "on_hand": 0,
        "available": 0,
    }

    node.sync.apply([forged], "bus")
    await node.reread.wait()

    assert node.sync.doubted == 1
    assert node.outcomes("bus") == []  # never offered: not applied, not broadcast
    assert node.held("A") == (1, real["version"])  # what the database says
    held = node.cache.get("A")
    assert held is not None
    assert held["on_hand"] == real["on_hand"]
