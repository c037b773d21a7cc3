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


async def test_an_empty_body_is_a_missing_body(node: httpx.AsyncClient) -> None:
    response = await node.post("/orders", content=b"", headers={"content-type": "application/json"})
    assert (response.status_code, response.json()["code"]) == (422, "VALIDATION_ERROR")


UNREADABLE_BODIES = {
    "malformed": b"{bad json",
    "truncated": b'{"items": [{"sku": "GOOD", "quantity": 1}]',
    "not utf-8": b"\xff\xfe",
    "invalid utf-8 inside a string": b'{"on_hand": 1, "x": "\xc3\x28"}',
    "nested 100k deep": b"[" * 100_000 + b"]" * 100_000,
    "a 5,000-digit integer": b'{"on_hand": ' + b"7" * 5000 + b"}",
}
BODY_ROUTES = [
    ("post", "/orders"),
    ("post", "/products"),
    ("patch", "/products/GOOD"),
    ("put", "/products/GOOD/stock"),
    ("post", "/products/GOOD/adjustments"),
    ("post", "/availability"),
]


@pytest.mark.parametrize("raw", UNREADABLE_BODIES.values(), ids=UNREADABLE_BODIES.keys())
async def test_every_unreadable_body_is_422_invalid_json(
    node: httpx.AsyncClient, raw: bytes
) -> None:
    headers = {"content-type": "application/json"}
    for method, path in BODY_ROUTES:
        response = await node.request(method, path, content=raw, headers=headers)
        assert response.status_code == 422, (method, path, response.text)
        assert response.json()["code"] == "INVALID_JSON", (method, path, response.text)
        assert response.json()["details"]["errors"][0]["location"][0] == "body"
    product = (await node.get("/products/GOOD")).json()
    assert (product["on_hand"], product["version"]) == (10, 1)


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
    ("post", "/products", "name padded", {"sku": "P6", "name": " n ", "price_cents": 1}),
    ("post", "/products", "name ends in NEL", {"sku": "P9", "name": "n\u0085", "price_cents": 1}),
    ("post", "/products", "fractional price", {"sku": "P7", "name": "n", "price_cents": 1.5}),
    ("post", "/products", "price as string", {"sku": "P8", "name": "n", "price_cents": "1"}),
    ("put", "/products/GOOD/stock", "negative set", {"on_hand": -5}),
    ("put", "/products/GOOD/stock", "version zero", {"on_hand": 5, "expected_version": 0}),
    ("put", "/products/GOOD/stock", "version 2^63", {"on_hand": 5, "expected_version": 2**63}),
    ("put", "/products/GOOD/stock", "version 2^53", {"on_hand": 5, "expected_version": 2**53}),
    ("patch", "/products/GOOD", "version 2^63", {"name": "n", "expected_version": 2**63}),
    ("patch", "/products/GOOD", "empty patch", {}),
    ("patch", "/products/GOOD", "only nulls", {"name": None, "price_cents": None}),
    ("patch", "/products/GOOD", "only a version", {"expected_version": 1}),
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
        "/products/GOOD/events?before=99999999999999999999",
        "/events?before=99999999999999999999",
        f"/events?before={2**53}",
        "/orders?customer_id=%00",
        "/products/has%20space",
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


async def test_bounds_are_inclusive_and_whole_floats_are_integers(node: httpx.AsyncClient) -> None:
    """JSON Schema's integer includes 5.0; the largest version the schema allows reaches SQL."""
    largest = {"on_hand": 5, "expected_version": 2**53 - 1}
    conflict = await node.put("/products/GOOD/stock", json=largest)
    assert (conflict.status_code, conflict.json()["code"]) == (409, "VERSION_CONFLICT")
    assert (await node.get(f"/events?before={2**53 - 1}")).status_code == 200
    stock = await node.put("/products/GOOD/stock", json={"on_hand": 7.0, "expected_version": 1.0})
    assert stock.status_code == 200, stock.text
    assert (stock.json()["on_hand"], stock.json()["version"]) == (7, 2)


async def test_a_patch_changes_something(node: httpx.AsyncClient) -> None:
    patched = await node.patch("/products/GOOD", json={"name": None, "price_cents": 150})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["name"], patched.json()["price_cents"]) == ("Good", 150)
    document = (await node.get("/openapi.json")).json()
    patch = document["components"]["schemas"]["ProductPatch"]
    assert [branch["required"] for branch in patch["anyOf"]] == [
        ["name"],
        ["price_cents"],
        ["low_stock_threshold"],
    ]


async def test_the_document_states_this_nodes_order_line_cap(node: httpx.AsyncClient) -> None:
    document = (await node.get("/openapi.json")).json()
    items = document["components"]["schemas"]["OrderCreate"]["properties"]["items"]
    assert items["maxItems"] == 5  # the node's MAX_ORDER_LINES, not the default 100
    lines = {"items": [{"sku": "GOOD", "quantity": 1}] * 5}
    assert (await node.post("/orders", json=lines)).status_code == 201


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("options", "/products", "GET, POST"),
        ("put", "/products", "GET, POST"),
        ("post", "/products/GOOD", "DELETE, GET, PATCH"),
        ("get", "/products/GOOD/stock", "PUT"),
        ("delete", "/orders", "GET, POST"),
        ("get", "/orders/00000000-0000-0000-0000-000000000000/confirm", "POST"),
    ],
)
async def test_405_allows_every_method_of_the_path(
    node: httpx.AsyncClient, method: str, path: str, allowed: str
) -> None:
    response = await node.request(method, path)
    assert (response.status_code, response.json()["code"]) == (405, "METHOD_NOT_ALLOWED")
    assert response.headers["allow"] == allowed


REFUSALS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("patch", "/products/{sku}", "/products/NOPE", {"json": {"name": "n"}}),
    ("patch", "/products/{sku}", "/products/GOOD", {"json": {}}),
    ("put", "/products/{sku}/stock", "/products/GOOD/stock", {"json": {"on_hand": 1.5}}),
    (
        "put",
        "/products/{sku}/stock",
        "/products/GOOD/stock",
        {"json": {"on_hand": 1, "expected_version": 9}},
    ),
    ("post", "/orders", "/orders", {"json": {"items": [{"sku": "NO", "quantity": 1}]}}),
    ("post", "/orders", "/orders", {"json": {"items": [{"sku": "GOOD", "quantity": 11}]}}),
    ("get", "/orders", "/orders?cursor=x", {}),
    ("post", "/availability", "/availability", {"content": b"[" * 100_000}),
    ("get", "/products/{sku}/events", "/products/NOPE/events", {}),
]


@pytest.mark.parametrize(("method", "route", "path", "request_args"), REFUSALS)
async def test_each_refusal_is_declared_on_its_route(
    node: httpx.AsyncClient, method: str, route: str, path: str, request_args: dict[str, Any]
) -> None:
    """The status is in the route's responses, and the code in that response's enum."""
    document = (await node.get("/openapi.json")).json()
    response = await node.request(method, path, **request_args)
    assert response.status_code >= 400
    declared = document["paths"][route][method]["responses"][str(response.status_code)]
    schema = declared["content"]["application/json"]["schema"]
    assert response.json()["code"] in schema["properties"]["code"]["enum"], response.text
    assert set(schema["required"]) == {"code", "message", "details"}


async def test_every_error_response_has_the_error_shape(node: httpx.AsyncClient) -> None:
    document = (await node.get("/openapi.json")).json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if not {"products", "orders"} & set(operation["tags"]) and path != "/metrics":
                continue  # the health routes have bodies of their own
            answers = {int(status): answer for status, answer in operation["responses"].items()}
            assert 500 in answers, (method, path)  # INTERNAL: any route can fail unexpectedly
            for status, answer in answers.items():
                if status >= 400:
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema["properties"]["code"]["enum"], (method, path, status)
