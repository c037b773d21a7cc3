"""The cache keeps only what is newer, whatever order changes arrive in."""

from backend.cache import Outcome, StockCache
from backend.documents import Product
from tests.support import change


def test_duplicates_and_older_versions_change_nothing() -> None:
    cache = StockCache()
    assert cache.apply(change("A", 1, 10)) is Outcome.APPLIED
    assert cache.apply(change("A", 2, 9)) is Outcome.APPLIED
    assert cache.apply(change("A", 2, 9)) is Outcome.STALE
    assert cache.apply(change("A", 1, 10)) is Outcome.STALE
    assert cache.get("A")["on_hand"] == 9  # type: ignore[index]


def test_a_version_jump_is_applied_and_reported_as_a_gap() -> None:
    cache = StockCache()
    cache.apply(change("A", 1, 10))
    assert cache.apply(change("A", 4, 3)) is Outcome.GAP
    assert cache.apply(change("A", 3, 5)) is Outcome.STALE
    assert cache.get("A")["on_hand"] == 3  # type: ignore[index]


def test_deletes_leave_a_tombstone_and_a_new_product_wins_over_the_old() -> None:
    cache = StockCache()
    cache.apply(change("A", 1, 10))
    cache.apply(change("A", 2, 10, deleted=True))
    assert cache.get("A") is None
    assert cache.apply(change("A", 1, 10)) is Outcome.STALE  # a late copy of the old create
    assert cache.apply(change("A", 1, 4, product_id=2)) is Outcome.APPLIED  # created again
    assert cache.apply(change("A", 5, 99, product_id=1)) is Outcome.STALE
    assert cache.get("A")["on_hand"] == 4  # type: ignore[index]


def test_pages_follow_sku_order() -> None:
    cache = StockCache()
    for i, sku in enumerate(["C", "A", "B", "D"], start=1):
        cache.apply(change(sku, 1, 1, product_id=i))
    items, after = cache.page(None, 3)
    assert ([p["sku"] for p in items], after) == (["A", "B", "C"], "C")
    items, after = cache.page(after, 3)
    assert ([p["sku"] for p in items], after) == (["D"], None)


def test_a_snapshot_keeps_what_is_newer_and_forgets_what_it_lacks() -> None:
    cache = StockCache()
    cache.apply(change("A", 3, 7))
    cache.apply(change("GONE", 1, 1, product_id=9))
    snapshot: list[Product] = [
        {
            "id": 1,
            "sku": "A",
            "name": "A",
            "price_cents": 1,
            "on_hand": 8,
            "reserved": 0,
            "available": 8,
            "low_stock_threshold": 1,
            "version": 2,
            "updated_at": "2026-01-01T00:00:00Z",
        },
        {
            "id": 2,
            "sku": "B",
            "name": "B",
            "price_cents": 1,
            "on_hand": 2,
            "reserved": 0,
            "available": 2,
            "low_stock_threshold": 1,
            "version": 1,
            "updated_at": "2026-01-01T00:00:00Z",
        },
    ]
    cache.load(snapshot, [])
    assert cache.get("A")["on_hand"] == 7  # type: ignore[index]
    assert cache.get("B")["on_hand"] == 2  # type: ignore[index]
    assert cache.get("GONE") is None
    assert cache.apply(change("GONE", 1, 1, product_id=9)) is Outcome.APPLIED  # unknown: taken


def test_a_snapshot_tombstone_outlives_the_load_and_makes_older_changes_stale() -> None:
    cache = StockCache()
    cache.apply(change("A", 1, 5))  # the delete's message was lost
    cache.load([], [{"sku": "A", "product_id": 1, "version": 3}])
    assert (cache.get("A"), cache.version_of("A"), len(cache)) == (None, 3, 0)
    assert cache.apply(change("A", 2, 5)) is Outcome.STALE  # a late message of the old product
    assert cache.apply(change("A", 1, 6, product_id=2)) is Outcome.APPLIED  # created again


def test_a_tombstone_older_than_what_the_cache_holds_changes_nothing() -> None:
    cache = StockCache()
    cache.apply(change("A", 1, 4, product_id=2))  # created again after the snapshot was taken
    cache.load([], [{"sku": "A", "product_id": 1, "version": 3}])
    assert (cache.get("A")["on_hand"], cache.version_of("A")) == (4, 1)  # type: ignore[index]
