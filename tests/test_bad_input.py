"""Bad input gets a 4xx with a machine code: never a 500, never a change."""

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support import node_settings, serve

LONG = "x" * 10_000


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def node(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(node_settings(database_url, max_order_lines=5)) as client:
        created = await client.post(
            "/products", json={"sku": "GOOD", "name": "Good", "price_cents": 100, "on_hand": 10}
        )
        assert created.status_code == 201
        yield client


ORDER_CASES: list[tuple[str, Any, str]] = [
    ("zero quantity", {"items": [{"sku": "GOOD", "quantity": 0}]}, "VALIDATION_ERROR"),
    ("negative quantity", {"items": [{"sku": "GOOD", "quantity": -1}]}, "VALIDATION_ERROR"),
    ("quantity above 2^31", {"items": [{"sku": "GOOD", "quantity": 2**31}]}, "VALIDATION_ERROR"),
    ("huge quantity", {"items": [{"sku": "GOOD", "quantity": 10**30}]}, "VALIDATION_ERROR"),
    ("fractional quantity", {"items": [{"sku": "GOOD", "quantity": 1.5}]}, "VALIDATION_ERROR"),
    ("quantity as string", {"items": [{"sku": "GOOD", "quantity": "1"}]}, "VALIDATION_ERROR"),
    ("empty items", {"items": []}, "VALIDATION_ERROR"),
    ("items not a list", {"items": "GOOD"}, "VALIDATION_ERROR"),
    ("no items", {}, "VALIDATION_ERROR"),
    ("body is a list", [1, 2], "VALIDATION_ERROR"),
    (
        "unknown field",
        {"items": [{"sku": "GOOD", "quantity": 1}], "coupon": "x"},
        "VALIDATION_ERROR",
    ),
    ("sku wrong type", {"items": [{"sku": 12, "quantity": 1}]}, "VALIDATION_ERROR"),
    ("very long sku", {"items": [{"sku": LONG, "quantity": 1}]}, "VALIDATION_ERROR"),
    ("unicode sku", {"items": [{"sku": "ÄPFEL-🍎", "quantity": 1}]}, "VALIDATION_ERROR"),
    ("unknown sku", {"items": [{"sku": "MISSING", "quantity": 1}]}, "UNKNOWN_SKU"),
    ("too many lines", {"items": [{"sku": "GOOD", "quantity": 1}] * 6}, "TOO_MANY_LINES"),
    (
        "long customer",
        {"items": [{"sku": "GOOD", "quantity": 1}], "customer_id": LONG},
        "VALIDATION_ERROR",
    ),
]


@pytest.mark.parametrize(("case", "body", "code"), ORDER_CASES, ids=[c[0] for c in ORDER_CASES])
async def test_bad_orders_are_refused_and_change_nothing(
    node: httpx.AsyncClient, case: str, body: Any, code: str
) -> None:
    response = await node.post("/orders", json=body)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["code"] == code
    assert set(response.json()) == {"code", "message", "details"}
    product = (await node.get("/products/GOOD")).json()
    assert (product["reserved"], product["version"]) == (0, 1)


@pytest.mark.parametrize(
    "raw",
    [b"{bad json", b"", b"\xff\xfe", b'{"items": [{"sku": "GOOD", "quantity": 1}]'],
    ids=["malformed", "empty", "not utf-8", "truncated"],
)
async def test_malformed_json_is_a_422(node: httpx.AsyncClient, raw: bytes) -> None:
    response = await node.post("/orders", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["code"] in {"INVALID_JSON", "VALIDATION_ERROR"}


async def test_unicode_names_and_customers_round_trip(node: httpx.AsyncClient) -> None:
    name = "Café crème — 咖啡 ☕"
    created = await node.post("/products", json={"sku": "CAFE", "name": name, "price_cents": 350})
    assert created.status_code == 201
    assert (await node.get("/products/CAFE")).json()["name"] == name
    await node.post("/products/CAFE/adjustments", json={"delta": 2, "reason": "restock"})
    order = await node.post(
        "/orders", json={"items": [{"sku": "CAFE", "quantity": 1}], "customer_id": "Zoë 🎉"}
    )
    assert order.status_code == 201
    assert order.json()["customer_id"] == "Zoë 🎉"


PRODUCT_CASES: list[tuple[str, str, str, Any]] = [
    ("post", "/products", "negative price", {"sku": "P1", "name": "n", "price_cents": -1}),
    ("post", "/products", "bad sku", {"sku": "has space", "name": "n", "price_cents": 1}),
    ("post", "/products", "empty name", {"sku": "P2", "name": "  ", "price_cents": 1}),
    ("post", "/products", "long name", {"sku": "P3", "name": LONG, "price_cents": 1}),
    ("post", "/products", "nul in name", {"sku": "P4", "name": "a\u0000b", "price_cents": 1}),
    (
        "post",
        "/products",
        "on_hand too big",
        {"sku": "P5", "name": "n", "price_cents": 1, "on_hand": 2**31},
    ),
    ("post", "/products/GOOD/adjustments", "zero delta", {"delta": 0, "reason": "restock"}),
    ("post", "/products/GOOD/adjustments", "bad reason", {"delta": 1, "reason": "gift"}),
    ("post", "/products/GOOD/adjustments", "overflow", {"delta": 2**31 - 1, "reason": "restock"}),
    ("put", "/products/GOOD/stock", "negative set", {"on_hand": -5}),
    ("put", "/products/GOOD/stock", "version zero", {"on_hand": 5, "expected_version": 0}),
    ("patch", "/products/GOOD", "empty patch", {}),
    ("post", "/availability", "no skus", {"skus": []}),
]


@pytest.mark.parametrize(
    ("method", "path", "case", "body"), PRODUCT_CASES, ids=[c[2] for c in PRODUCT_CASES]
)
async def test_bad_catalog_input_is_refused(
    node: httpx.AsyncClient, method: str, path: str, case: str, body: Any
) -> None:
    response = await node.request(method, path, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["code"] in {"VALIDATION_ERROR", "INVALID_INPUT"}
    product = (await node.get("/products/GOOD")).json()
    assert (product["on_hand"], product["version"]) == (10, 1)


@pytest.mark.parametrize(
    "path",
    [
        "/orders/not-a-uuid",
        "/orders?limit=0",
        "/orders?status=shipped",
        "/orders?cursor=garbage",
        "/products?limit=100000",
        "/products/GOOD/events?before=-1",
    ],
)
async def test_bad_query_and_path_values(node: httpx.AsyncClient, path: str) -> None:
    response = await node.get(path)
    assert response.status_code == 422, response.text
    assert response.json()["code"] in {"VALIDATION_ERROR", "INVALID_CURSOR"}


async def test_unknown_things_are_404_with_a_code(node: httpx.AsyncClient) -> None:
    for path in ("/products/NOPE", "/orders/00000000-0000-0000-0000-000000000000", "/nowhere"):
        response = await node.get(path)
        assert (response.status_code, response.json()["code"]) == (404, "NOT_FOUND")
    for method, path in (("post", "/products/NOPE/adjustments"), ("put", "/products/NOPE/stock")):
        body = {"delta": 1, "reason": "restock"} if method == "post" else {"on_hand": 1}
        response = await node.request(method, path, json=body)
        assert (response.status_code, response.json()["code"]) == (404, "NOT_FOUND")
