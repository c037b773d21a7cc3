"""Who may do what, on a real node: the README's rules table, caller by caller.

The expected answers are written out here, not read from `backend.auth.policy`,
so a wrong rule in the policy fails this test.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from backend.app import create_app
from backend.auth import keys
from backend.auth.policy import POLICY
from backend.auth.principal import SCOPES
from database import PostgresDatabase
from tests.support import ADMIN, Node, bearer, make_product, node_settings, run_node, token

ORDER = "00000000-0000-0000-0000-000000000001"
KEY = "00000000-0000-0000-0000-000000000002"
HOOK = "00000000-0000-0000-0000-000000000003"
DEAD = "424242"  # a dead letter's id

# Callers, in the order of the columns below.
CALLERS = ("anonymous", "customer", "staff", "admin", "key_all", "key_none")

OK = "ok"  # anything but 401 and 403: the route ran (it may still say 404 or 422)
ALL = (401, OK, OK, OK, OK, OK)  # any signed-in caller
WRITE = (401, 403, OK, OK, OK, 403)  # staff, admins and keys with the scope
OWN = (401, OK, OK, OK, OK, 403)  # customers (their own), staff, admins, scoped keys
ADMINS = (401, 403, 403, OK, OK, 403)  # admins and keys with the scope, not staff

EXPECTED: dict[tuple[str, str], tuple[int | str, ...]] = {
    ("GET", "/health"): (OK,) * 6,
    ("GET", "/ready"): (OK,) * 6,
    ("GET", "/info"): (OK,) * 6,
    ("GET", "/openapi.json"): (OK,) * 6,
    ("GET", "/docs"): (OK,) * 6,
    ("GET", "/"): (OK,) * 6,
    ("GET", "/products"): (OK,) * 6,
    ("GET", "/products/SKU-1"): (OK,) * 6,
    ("POST", "/availability"): (OK,) * 6,
    ("POST", "/products"): WRITE,
    ("PATCH", "/products/SKU-1"): WRITE,
    ("DELETE", "/products/SKU-1"): WRITE,
    ("POST", "/products/SKU-1/adjustments"): WRITE,
    ("PUT", "/products/SKU-1/stock"): WRITE,
    ("GET", "/products/SKU-1/events"): WRITE,
    ("GET", "/events"): WRITE,
    ("POST", "/orders"): OWN,
    ("GET", "/orders"): OWN,
    ("GET", f"/orders/{ORDER}"): OWN,
    ("POST", f"/orders/{ORDER}/cancel"): OWN,
    ("POST", f"/orders/{ORDER}/confirm"): WRITE,
    ("POST", f"/orders/{ORDER}/refunds"): WRITE,
    ("GET", f"/orders/{ORDER}/events"): OWN,
    ("GET", f"/orders/{ORDER}/receipt"): OWN,
    ("POST", "/admin/webhooks"): ADMINS,
    ("GET", "/admin/webhooks"): ADMINS,
    ("GET", "/admin/webhooks/deliveries"): ADMINS,
    ("DELETE", f"/admin/webhooks/{HOOK}"): ADMINS,
    ("GET", "/admin/dead-letters"): ADMINS,
    ("POST", "/admin/dead-letters/replay"): ADMINS,
    ("POST", f"/admin/dead-letters/{DEAD}/replay"): ADMINS,
    ("GET", "/admin/lifecycle"): ADMINS,
    ("POST", "/payments/webhook"): (OK,) * 6,  # the signature is the credential
    ("GET", "/metrics"): WRITE,
    ("GET", "/whoami"): ALL,
    ("POST", "/keys"): (401, 403, 403, OK, OK, 403),
    ("GET", "/keys"): (401, 403, 403, OK, OK, 403),
    ("DELETE", f"/keys/{KEY}"): (401, 403, 403, OK, OK, 403),
}

BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/availability"): {"skus": ["SKU-1"]},
    ("POST", "/products"): {"sku": "NEW-1", "name": "New", "price_cents": 1, "on_hand": 1},
    ("PATCH", "/products/SKU-1"): {"name": "Renamed"},
    ("POST", "/products/SKU-1/adjustments"): {"delta": 1, "reason": "restock"},
    ("PUT", "/products/SKU-1/stock"): {"on_hand": 50},
    ("POST", "/orders"): {"items": [{"sku": "SKU-1", "quantity": 1}]},
    ("POST", f"/orders/{ORDER}/refunds"): {"reason": "matrix"},
    ("POST", "/keys"): {"name": "matrix", "scopes": ["orders:read"]},
    ("POST", "/admin/webhooks"): {"url": "https://example.com/h", "event_types": ["stock.low"]},
}


@dataclass
class World:
    node: Node
    headers: dict[str, dict[str, str]]


@pytest.fixture
async def world(database_url: str, db: PostgresDatabase) -> AsyncIterator[World]:
    await make_product(db, on_hand=100, sku="SKU-1")
    key_all = (await keys.create(db, "all", SCOPES))["key"]
    key_none = (await keys.create(db, "none", ["metrics:read"]))["key"]
    headers = {
        "anonymous": {},
        "customer": bearer(token("cust-1")),
        "staff": bearer(token("staff-1", "staff")),
        "admin": ADMIN,
        "key_all": bearer(key_all),
        # A key with a scope none of these routes needs (but /metrics, which it may read).
        "key_none": bearer(key_none),
    }
    async with run_node(node_settings(database_url)) as node:
        yield World(node, headers)


async def test_every_caller_gets_what_the_rules_table_says(world: World) -> None:
    wrong = []
    for (method, path), expected in EXPECTED.items():
        for caller, want in zip(CALLERS, expected, strict=True):
            if (method, path) == ("GET", "/metrics") and caller == "key_none":
                want = OK  # that key holds metrics:read
            response = await world.node.client.request(
                method,
                path,
                json=BODIES.get((method, path)),
                headers={"Authorization": ""} | world.headers[caller],
            )
            got = response.status_code
            if (want == OK and got in (401, 403)) or (want != OK and got != want):
                wrong.append(f"{caller} {method} {path}: {got}, expected {want}")
    assert wrong == []


async def test_a_refusal_says_why_in_the_error_shape(world: World) -> None:
    client = world.node.client
    anonymous = await client.post("/products", json={}, headers={"Authorization": ""})
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert anonymous.json()["code"] == "UNAUTHENTICATED"
    customer = await client.post("/products", json={}, headers=world.headers["customer"])
    assert (customer.status_code, customer.json()["code"]) == (403, "FORBIDDEN")
    bad = await client.get("/products", headers=bearer("not-a-token"))
    assert (bad.status_code, bad.json()["code"]) == (401, "UNAUTHENTICATED")
    assert "not-a-token" not in bad.text


async def test_the_catalog_can_be_closed_to_anonymous_callers(database_url: str) -> None:
    async with run_node(node_settings(database_url, public_catalog=False)) as node:
        anonymous = await node.client.get("/products", headers={"Authorization": ""})
        assert anonymous.status_code == 401
        customer = await node.client.get("/products", headers=bearer(token("cust-1")))
        assert customer.status_code == 200


async def test_the_metrics_token_reads_metrics_and_nothing_else(database_url: str) -> None:
    settings = node_settings(database_url, metrics_token="scrape-me-please")
    async with run_node(settings) as node:
        scraper = bearer("scrape-me-please")
        assert (await node.client.get("/metrics", headers=scraper)).status_code == 200
        assert (await node.client.get("/events", headers=scraper)).status_code == 403


def test_every_route_of_the_app_has_a_rule_and_every_rule_a_route() -> None:
    app = create_app(node_settings("postgresql://nobody@127.0.0.1:1/none"))
    routes = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    unlisted = {("GET", "/"), ("GET", "/docs"), ("GET", "/docs/oauth2-redirect")}
    unlisted |= {("GET", "/redoc"), ("GET", "/openapi.json"), ("WEBSOCKET", "/ws")}
    assert routes | unlisted == set(POLICY)
    templates = {ORDER: "{order_id}", KEY: "{key_id}", HOOK: "{endpoint_id}", "SKU-1": "{sku}"}
    templates[DEAD] = "{dead_letter_id}"
    assert {(m, _template(p, templates)) for m, p in EXPECTED} | {
        ("GET", "/docs/oauth2-redirect"),
        ("GET", "/redoc"),
        ("WEBSOCKET", "/ws"),
    } == set(POLICY)


async def test_a_route_without_a_rule_is_refused(database_url: str) -> None:
    settings = node_settings(database_url)
    app = create_app(settings)

    @app.get("/unruled")
    async def unruled() -> dict[str, str]:
        return {"open": "no"}

    async with run_node(settings, app=app) as node:
        response = await node.client.get("/unruled")
    assert (response.status_code, response.json()["code"]) == (403, "FORBIDDEN")


def _template(path: str, values: dict[str, str]) -> str:
    for value, name in values.items():
        path = path.replace(value, name)
    return path
