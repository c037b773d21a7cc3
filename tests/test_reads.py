"""`GET /products/{sku}` answered in front of the route: the same answers, only sooner.

Two real nodes on one database, one of them built without the layer, are asked
the same questions by every kind of caller and must answer byte for byte alike.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.types import Message, Receive, Scope, Send

from backend import deps
from backend.app import create_app
from backend.auth import keys
from backend.reads import CachedReads
from backend.routers import products
from backend.schemas import SKU_PATTERN
from database import PostgresDatabase
from tests.support import ADMIN_TOKEN, Node, make_product, node_settings, run_node, token

SKU = "READ-1"


@dataclass
class Pair:
    with_layer: Node
    route_only: Node
    key: str
    key_id: str


@pytest.fixture
async def pair(database_url: str, db: PostgresDatabase) -> AsyncIterator[Pair]:
    await make_product(db, on_hand=7, sku=SKU)
    key = await keys.create(db, "reader", ["metrics:read"])  # no scope the catalog needs
    # The catalog closed to anonymous callers: one rule more for the layer to get right.
    settings = node_settings(database_url, public_catalog=False)
    route_only = create_app(settings)
    layers = route_only.user_middleware
    route_only.user_middleware = [m for m in layers if getattr(m, "cls", None) != CachedReads]
    async with (
        run_node(settings) as with_layer,
        run_node(settings, app=route_only) as without,
    ):
        yield Pair(with_layer, without, key["key"], key["id"])


def answer(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = [(name, value) for name, value in response.headers.multi_items() if name != "date"]
    return response.status_code, headers, response.content


async def ask_both(pair: Pair, method: str, path: str, authorization: str | None) -> Any:
    headers = {"Host": "orderflow.test", "X-Request-ID": "same-for-both"}
    headers["Authorization"] = authorization or ""
    got = [
        answer(await node.client.request(method, path, headers=headers))
        for node in (pair.with_layer, pair.route_only)
    ]
    assert got[0] == got[1], f"{method} {path} as {authorization!r}"
    return got[0]


async def test_every_caller_gets_the_answer_the_route_gives(pair: Pair) -> None:
    callers = {
        "anonymous": None,
        "admin": f"Bearer {ADMIN_TOKEN}",
        "customer": f"Bearer {token('cust-1')}",
        "staff": f"Bearer {token('staff-1', 'staff')}",
        "key": f"Bearer {pair.key}",
        "expired": f"Bearer {token('cust-1', minutes=-5)}",
        "forged": f"Bearer {ADMIN_TOKEN[:-4]}AAAA",
        "unknown key": "Bearer ofk_0000000000000000_" + "x" * 40,
        "basic": "Basic dXNlcjpwYXNz",
    }
    paths = [f"/products/{SKU}", "/products/NOPE-1", "/products/-bad", f"/products/{'A' * 65}"]
    paths += [f"/products/{SKU}?limit=3", f"/products/{SKU}/"]
    statuses = {}
    for caller, authorization in callers.items():
        for path in paths:
            status, _, _ = await ask_both(pair, "GET", path, authorization)
            statuses[caller, path] = status
        await ask_both(pair, "HEAD", f"/products/{SKU}", authorization)
    assert {caller: statuses[caller, f"/products/{SKU}"] for caller in callers} == {
        "anonymous": 401,
        "admin": 200,
        "customer": 200,
        "staff": 200,
        "key": 200,
        "expired": 401,
        "forged": 401,
        "unknown key": 401,
        "basic": 401,
    }
    assert statuses["admin", "/products/NOPE-1"] == 404
    assert statuses["admin", "/products/-bad"] == 422


async def test_a_change_is_read_at_once_and_a_revoked_key_refused_at_once(pair: Pair) -> None:
    admin = pair.with_layer.client
    restocked = await admin.post(
        f"/products/{SKU}/adjustments", json={"delta": 5, "reason": "restock"}
    )
    assert restocked.status_code == 200
    read = await admin.get(f"/products/{SKU}")
    assert (read.json()["on_hand"], read.json()["version"]) == (12, 2)

    as_key = {"Authorization": f"Bearer {pair.key}"}
    assert (await admin.get(f"/products/{SKU}", headers=as_key)).status_code == 200
    assert (await admin.delete(f"/keys/{pair.key_id}")).status_code == 200
    refused = await admin.get(f"/products/{SKU}", headers=as_key)
    assert (refused.status_code, refused.json()["code"]) == (401, "UNAUTHENTICATED")


async def test_the_layer_answers_a_plain_read_itself_and_passes_on_the_rest(pair: Pair) -> None:
    passed_on: list[str] = []

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        passed_on.append(scope["path"])

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    layer = CachedReads(route)
    state = dict(pair.with_layer.state)
    admin = [(b"authorization", f"Bearer {ADMIN_TOKEN}".encode())]
    for path, headers in [
        (f"/products/{SKU}", admin),
        ("/products/NOPE-1", admin),
        (f"/products/{SKU}", []),  # anonymous, and the catalog is closed
    ]:
        scope = {"type": "http", "method": "GET", "path": path, "headers": headers, "state": state}
        await layer(scope, receive, send)
    assert passed_on == ["/products/NOPE-1", f"/products/{SKU}"]
    assert [message["type"] for message in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 200
    read = await pair.route_only.client.get(f"/products/{SKU}")
    assert sent[1]["body"] == read.content


def test_the_route_depends_on_nothing_the_layer_does_not_do() -> None:
    """The layer stands in for the app's `authorize`, the route's cache and its SKU
    check: a dependency added to either must be added to the layer too."""
    app = create_app(node_settings("postgresql://nobody@127.0.0.1:1/none"))
    assert [depends.dependency for depends in app.router.dependencies] == [deps.authorize]
    (route,) = [
        route
        for route in products.router.routes
        if isinstance(route, APIRoute)
        and route.path == "/products/{sku}"
        and route.methods == {"GET"}
    ]
    dependant = route.dependant
    assert [sub.call for sub in dependant.dependencies] == [deps._cache]
    assert [param.name for param in dependant.path_params] == ["sku"]
    assert [m.pattern for m in dependant.path_params[0].field_info.metadata] == [SKU_PATTERN]
    assert dependant.query_params == dependant.header_params == dependant.cookie_params == []
    assert dependant.body_params == []
