"""The catalog and stock through the HTTP API of a real node on real Postgres."""

from collections.abc import AsyncIterator

import httpx
import pytest

from database import Json
from tests.support import node_settings, serve


@pytest.fixture
async def node(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(node_settings(database_url)) as client:
        yield client


async def create(node: httpx.AsyncClient, sku: str, on_hand: int = 10) -> Json:
    response = await node.post(
        "/products",
        json={"sku": sku, "name": f"Item {sku}", "price_cents": 1250, "on_hand": on_hand},
    )
    assert response.status_code == 201, response.text
    product: Json = response.json()
    return product


async def test_create_read_update_and_page_products(node: httpx.AsyncClient) -> None:
    for sku in ("B-1", "A-1", "C-1"):
        await create(node, sku)
    duplicate = await node.post("/products", json={"sku": "A-1", "name": "x", "price_cents": 1})
    assert (duplicate.status_code, duplicate.json()["code"]) == (409, "SKU_EXISTS")

    first = (await node.get("/products", params={"limit": 2})).json()
    assert [p["sku"] for p in first["items"]] == ["A-1", "B-1"]
    rest = (await node.get("/products", params={"after": first["next"], "limit": 2})).json()
    assert ([p["sku"] for p in rest["items"]], rest["next"]) == (["C-1"], None)

    patched = await node.patch("/products/A-1", json={"name": "Renamed", "expected_version": 1})
    assert patched.status_code == 200
    assert (patched.json()["name"], patched.json()["version"]) == ("Renamed", 2)
    stale = await node.patch("/products/A-1", json={"price_cents": 5, "expected_version": 1})
    assert (stale.status_code, stale.json()["code"]) == (409, "VERSION_CONFLICT")
    assert (await node.get("/products/A-1")).json()["name"] == "Renamed"


async def test_adjustments_move_stock_and_cannot_push_available_below_zero(
    node: httpx.AsyncClient,
) -> None:
    await create(node, "ADJ", on_hand=5)
    restock = await node.post("/products/ADJ/adjustments", json={"delta": 7, "reason": "restock"})
    assert restock.status_code == 200
    assert (restock.json()["on_hand"], restock.json()["reason"]) == (12, "restock")
    order = await node.post("/orders", json={"items": [{"sku": "ADJ", "quantity": 10}]})
    assert order.status_code == 201

    too_much = await node.post("/products/ADJ/adjustments", json={"delta": -3, "reason": "damage"})
    assert (too_much.status_code, too_much.json()["code"]) == (409, "OUT_OF_STOCK")
    fine = await node.post("/products/ADJ/adjustments", json={"delta": -2, "reason": "damage"})
    assert fine.json()["available"] == 0

    events = (await node.get("/products/ADJ/events")).json()["items"]
    assert [e["reason"] for e in events] == ["damage", "reserved", "restock", "created"]
    assert sum(e["delta_on_hand"] for e in events) == 10


async def test_set_stock_is_compare_and_set(node: httpx.AsyncClient) -> None:
    product = await create(node, "CAS", on_hand=5)
    first = await node.put(
        "/products/CAS/stock", json={"on_hand": 8, "expected_version": product["version"]}
    )
    assert (first.status_code, first.json()["on_hand"], first.json()["version"]) == (200, 8, 2)
    second = await node.put(
        "/products/CAS/stock", json={"on_hand": 3, "expected_version": product["version"]}
    )
    assert second.status_code == 409
    assert second.json()["code"] == "VERSION_CONFLICT"
    assert second.json()["details"]["current_version"] == 2
    assert (await node.get("/products/CAS")).json()["on_hand"] == 8
    unconditional = await node.put("/products/CAS/stock", json={"on_hand": 3})
    assert unconditional.json()["on_hand"] == 3


async def test_delete_is_refused_while_held_then_frees_the_sku(node: httpx.AsyncClient) -> None:
    await create(node, "DEL", on_hand=3)
    order = (await node.post("/orders", json={"items": [{"sku": "DEL", "quantity": 1}]})).json()
    held = await node.delete("/products/DEL")
    assert (held.status_code, held.json()["code"]) == (409, "HAS_HOLDS")

    await node.post(f"/orders/{order['id']}/cancel")
    assert (await node.delete("/products/DEL")).status_code == 200
    assert (await node.get("/products/DEL")).status_code == 404
    gone = await node.post("/orders", json={"items": [{"sku": "DEL", "quantity": 1}]})
    assert (gone.status_code, gone.json()["code"]) == (422, "UNKNOWN_SKU")

    again = await create(node, "DEL", on_hand=1)
    assert again["version"] == 1
    assert (await node.get("/products/DEL")).json()["on_hand"] == 1


async def test_bulk_availability_reports_missing_skus(node: httpx.AsyncClient) -> None:
    await create(node, "AV-1", on_hand=4)
    await create(node, "AV-2", on_hand=0)
    result = (await node.post("/availability", json={"skus": ["AV-2", "NOPE", "AV-1"]})).json()
    assert [(i["sku"], i["available"]) for i in result["items"]] == [("AV-2", 0), ("AV-1", 4)]
    assert result["missing"] == ["NOPE"]


async def test_orders_are_listed_by_customer_and_status_with_a_cursor(
    node: httpx.AsyncClient,
) -> None:
    await create(node, "LIST", on_hand=50)
    ids = []
    for _ in range(5):
        body = {"items": [{"sku": "LIST", "quantity": 1}], "customer_id": "alice"}
        ids.append((await node.post("/orders", json=body)).json()["id"])
    await node.post(
        "/orders", json={"items": [{"sku": "LIST", "quantity": 1}], "customer_id": "bob"}
    )
    await node.post(f"/orders/{ids[0]}/confirm")

    seen, cursor = [], None
    while True:
        params: dict[str, str | int] = {"customer_id": "alice", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await node.get("/orders", params=params)).json()
        seen += [order["id"] for order in page["items"]]
        if not (cursor := page["next"]):
            break
    assert seen == ids[::-1]
    confirmed = (await node.get("/orders", params={"status": "confirmed"})).json()["items"]
    assert [order["id"] for order in confirmed] == [ids[0]]


async def test_health_ready_and_info(node: httpx.AsyncClient) -> None:
    assert (await node.get("/health")).json() == {"status": "ok", "node": "node-test"}
    ready = await node.get("/ready")
    assert ready.status_code == 200
    assert (ready.json()["ready"], ready.json()["mode"]) == (True, "postgres")
    info = (await node.get("/info")).json()
    assert (info["node"], info["fee_rate"]) == ("node-test", 0.2)
    assert "x-request-id" in (await node.get("/health")).headers


async def test_swagger_ui_works_offline(node: httpx.AsyncClient) -> None:
    page = (await node.get("/docs")).text
    assert "cdn" not in page.lower()
    script = page.split('src="', 1)[1].split('"', 1)[0]
    assert (await node.get(script)).status_code == 200
    spec = (await node.get("/openapi.json")).json()
    assert {"/orders", "/products/{sku}/stock", "/availability"} <= set(spec["paths"])
