"""The cache's encoded products: the bytes FastAPI would send, renewed by every change."""

import json

import httpx
from fastapi import FastAPI

from backend import schemas
from backend.cache import StockCache, encode_product
from backend.documents import Product
from tests.support import change

PRODUCT: Product = {
    "id": 7,
    "sku": "MUG-É",
    "name": 'Mug "Café" \u00e9t\u00e9 \u2014 \U0001f375 \\ / \u2028',
    "price_cents": 1250,
    "on_hand": 3,
    "reserved": 1,
    "available": 2,
    "low_stock_threshold": 5,
    "version": 9,
    "updated_at": "2026-11-22T06:18:22.891304+00:00",
    "created_at": "2026-01-01T00:00:00+00:00",
}


async def test_the_bytes_are_what_fastapi_sends_for_the_response_model() -> None:
    app = FastAPI()

    @app.get("/product", response_model=schemas.Product)
    async def product() -> Product:
        return PRODUCT

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        sent = (await client.get("/product")).content
    assert encode_product(PRODUCT) == sent
    assert json.loads(sent)["updated_at"] == "2026-11-22T06:18:22.891304Z"
    assert "created_at" not in json.loads(sent)


def test_a_change_renews_the_body_and_a_delete_removes_it() -> None:
    cache = StockCache()
    cache.apply(change("A", 1, 10))
    assert json.loads(cache.body("A") or b"")["on_hand"] == 10
    cache.apply(change("A", 2, 4, reserved=1, available=3))
    read = json.loads(cache.body("A") or b"")
    assert (read["on_hand"], read["reserved"], read["available"], read["version"]) == (4, 1, 3, 2)
    assert cache.apply(change("A", 1, 10)).value == "stale"
    assert json.loads(cache.body("A") or b"")["version"] == 2
    cache.apply(change("A", 3, 4, deleted=True))
    assert cache.body("A") is None
    assert cache.body("never-there") is None


def test_a_snapshot_renews_the_bodies_it_changes() -> None:
    cache = StockCache()
    cache.apply(change("A", 1, 10))
    cache.apply(change("B", 1, 10, product_id=2))
    assert cache.body("A") is not None
    newer = PRODUCT.copy()
    newer["sku"], newer["id"], newer["version"], newer["on_hand"] = "A", 1, 5, 1
    cache.load([newer], [])  # B is gone from the database
    assert json.loads(cache.body("A") or b"")["on_hand"] == 1
    assert cache.body("B") is None


def test_a_page_body_is_the_page_encoded() -> None:
    cache = StockCache()
    for i, sku in enumerate(["C", "A", "B", "D"], start=1):
        cache.apply(change(sku, 1, i, product_id=i))
    for after, limit in [(None, 3), ("C", 3), ("D", 3), (None, 10), ("0", 1)]:
        items, next_sku = cache.page(after, limit)
        page = schemas.ProductPage.model_validate({"items": items, "next": next_sku})
        assert cache.page_body(after, limit) == page.model_dump_json().encode()
