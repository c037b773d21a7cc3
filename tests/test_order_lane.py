"""`POST /orders` answered in front of the route: the same answers, only sooner.

Two real nodes on one database, one of them built without the lane, are asked
the same questions and must answer byte for byte alike, but for what must
differ between two orders: their ids and times (a field's value, in place).
"""

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from annotated_types import MaxLen, MinLen
from fastapi.datastructures import DefaultPlaceholder
from fastapi.routing import APIRoute
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from backend import deps, schemas
from backend.app import create_app
from backend.auth import keys
from backend.embedded import EmbeddedRedis
from backend.order_lane import OrderLane
from backend.routers import orders
from backend.settings import Settings
from backend.tracing import Tracing
from database import PostgresDatabase
from tests.support import ADMIN_TOKEN, Node, make_product, node_settings, run_node, token

SKU, SCARCE = "LANE-1", "LANE-SCARCE"
CUSTOMER = f"Bearer {token('cust-1')}"
# What differs between two orders placed alike, wherever it appears in a body.
VARYING = ("id", "created_at", "updated_at", "expires_at", "order_id", "retry_after")


@dataclass
class Pair:
    with_lane: Node
    route_only: Node


def without_lane(settings: Settings) -> Any:
    app = create_app(settings)
    app.user_middleware = [m for m in app.user_middleware if getattr(m, "cls", None) != OrderLane]
    return app


def pair_of(with_lane: Settings, route_only: Settings) -> AbstractAsyncContextManager[Pair]:
    @asynccontextmanager
    async def running() -> AsyncIterator[Pair]:
        async with (
            run_node(with_lane) as lane,
            run_node(route_only, app=without_lane(route_only)) as route,
        ):
            yield Pair(lane, route)

    return running()


@pytest.fixture
async def pair(database_url: str, db: PostgresDatabase) -> AsyncIterator[Pair]:
    await make_product(db, on_hand=1000, sku=SKU)
    await make_product(db, on_hand=1, sku=SCARCE)
    async with pair_of(*[node_settings(database_url, max_order_lines=3)] * 2) as both:
        yield both


def normalised(content: bytes) -> bytes:
    """The body with each varying field's value replaced where it stands."""
    try:
        document = json.loads(content)
    except ValueError:
        return content
    if not isinstance(document, dict):
        return content
    for where in (document, document.get("details") or {}):
        for field in VARYING:
            if field in where:
                value = json.dumps(where[field], ensure_ascii=False, separators=(",", ":"))
                content = content.replace(f'"{field}":{value}'.encode(), f'"{field}":"*"'.encode())
    return content


def answer(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = []
    for name, value in response.headers.multi_items():
        if name == "content-length":
            assert int(value) == len(response.content)
            value = "*"
        elif name == "retry-after":
            value = "*"  # seconds to the next minute: one may tick between the two nodes
        if name != "date":
            headers.append((name, value))
    return response.status_code, headers, normalised(response.content)


def order(*lines: tuple[str, int], **fields: Any) -> bytes:
    items = [{"sku": sku, "quantity": quantity} for sku, quantity in lines]
    return json.dumps({"items": items, **fields}).encode()


async def ask_both(
    pair: Pair,
    body: bytes,
    authorization: str | None = f"Bearer {ADMIN_TOKEN}",
    content_type: str = "application/json",
    key: str | None = None,
) -> Any:
    """The same request of each node; a key is made each node's own (one caller's key
    is one order, on any node)."""
    got = []
    for name, node in (("a", pair.with_lane), ("b", pair.route_only)):
        headers = {"X-Request-ID": "same-for-both", "Content-Type": content_type}
        headers["Authorization"] = authorization or ""
        if key is not None:
            headers["Idempotency-Key"] = f"{key}-{name}" if key else ""
        response = await node.client.post("/orders", content=body, headers=headers)
        got.append(answer(response))
    assert got[0] == got[1], f"{body!r} as {authorization!r}, {content_type}, key {key!r}"
    return got[0]


async def test_every_order_gets_the_answer_the_route_gives(
    pair: Pair, db: PostgresDatabase
) -> None:
    writer = await keys.create(db, "shop", ["orders:write"])
    reader = await keys.create(db, "reader", ["orders:read"])
    plain = order((SKU, 1))
    cases: dict[str, tuple[bytes, str | None, str]] = {
        "customer": (plain, CUSTOMER, "application/json"),
        "customer naming themselves": (order((SKU, 1), customer_id="cust-1"), CUSTOMER, ""),
        "customer for another": (order((SKU, 1), customer_id="cust-2"), CUSTOMER, ""),
        "staff for a customer": (order((SKU, 2), customer_id="cust-9"), None, ""),
        "key with orders:write": (plain, f"Bearer {writer['key']}", ""),
        "key without": (plain, f"Bearer {reader['key']}", ""),
        "anonymous": (plain, "", ""),
        "bad token": (plain, "Bearer not-a-token", ""),
        "basic": (plain, "Basic dXNlcjpwYXNz", ""),
        "invalid JSON": (b'{"items": [', CUSTOMER, ""),
        "not UTF-8": (b'{"items": "\xff"}', CUSTOMER, ""),
        "no body": (b"", CUSTOMER, ""),
        "a list": (b"[]", CUSTOMER, ""),
        "no lines": (order(), CUSTOMER, ""),
        "bad SKU": (order(("-bad", 1)), CUSTOMER, ""),
        "anonymous, invalid JSON": (b"{", "", ""),
        "text/plain": (plain, CUSTOMER, "text/plain"),
        "with a charset": (plain, CUSTOMER, "application/json; charset=utf-8"),
        "a JSON subtype": (plain, CUSTOMER, "application/merge-patch+json"),
        "unknown SKU": (order(("NOPE-1", 1)), CUSTOMER, ""),
        "out of stock": (order((SCARCE, 5)), CUSTOMER, ""),
        "too many lines": (order(*[(SKU, 1)] * 4), CUSTOMER, ""),
    }
    statuses = {}
    for case, (body, authorization, content_type) in cases.items():
        if authorization is None:
            authorization = f"Bearer {ADMIN_TOKEN}"
        status, _, _ = await ask_both(pair, body, authorization, content_type or "application/json")
        statuses[case] = status
    assert statuses == {
        "customer": 201,
        "customer naming themselves": 201,
        "customer for another": 403,
        "staff for a customer": 201,
        "key with orders:write": 201,
        "key without": 403,
        "anonymous": 401,
        "bad token": 401,
        "basic": 401,
        "invalid JSON": 422,
        "not UTF-8": 422,
        "no body": 422,
        "a list": 422,
        "no lines": 422,
        "bad SKU": 422,
        "anonymous, invalid JSON": 422,
        "text/plain": 422,
        "with a charset": 201,
        "a JSON subtype": 201,
        "unknown SKU": 422,
        "out of stock": 409,
        "too many lines": 422,
    }


async def test_a_key_is_replayed_refused_or_bounded_as_the_route_does(pair: Pair) -> None:
    first = await ask_both(pair, order((SKU, 1)), CUSTOMER, key="k1")
    again = await ask_both(pair, order((SKU, 1)), CUSTOMER, key="k1")
    other = await ask_both(pair, order((SKU, 2)), CUSTOMER, key="k1")
    assert (first[0], again[0], other[0]) == (201, 201, 409)
    assert ("idempotent-replayed", "true") in again[1]
    assert ("idempotent-replayed", "true") not in first[1]
    assert json.loads(other[2])["code"] == "IDEMPOTENCY_MISMATCH"
    for bad in ("", "k" * 256):
        refused = await ask_both(pair, order((SKU, 1)), CUSTOMER, key=bad)
        assert refused[0] == 422
    longest = await ask_both(pair, order((SKU, 1)), CUSTOMER, key="k" * 253)  # 255 with "-a"
    assert longest[0] == 201


async def test_a_streamed_body_is_the_route_s(pair: Pair) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield order((SKU, 1))

    for node in (pair.with_lane, pair.route_only):
        headers = {"Content-Type": "application/json", "Authorization": CUSTOMER}
        placed = await node.client.post("/orders", content=chunks(), headers=headers)
        assert placed.status_code == 201, placed.text


def next_window_if_it_ends_soon() -> float:
    """Seconds to wait so that a few requests fall in one rate-limit window (a minute)."""
    left = 60 - time.time() % 60
    return left + 0.1 if left < 3 else 0.0


async def test_the_rate_limit_counts_each_request_once(
    database_url: str, db: PostgresDatabase, redis_server: EmbeddedRedis
) -> None:
    await make_product(db, on_hand=100, sku=SKU)
    each: dict[str, Any] = {"redis_url": redis_server.url, "rate_limit_writes_per_minute": 3}
    settings = [  # a count of each node's own: the same caller on both
        node_settings(database_url, channel_prefix=f"t{uuid.uuid4().hex[:8]}:", **each)
        for _ in range(2)
    ]
    requests = [
        order((SKU, 1)),  # the lane's own
        order(),  # the route's: counted by its authorize, then refused
        order((SKU, 1), customer_id="cust-2"),  # the route's: counted, then forbidden
        order((SKU, 1)),  # the fourth write of the minute
        order(("NOPE-1", 1)),
    ]
    async with pair_of(*settings) as both:
        await asyncio.sleep(next_window_if_it_ends_soon())
        answers = [await ask_both(both, body, CUSTOMER) for body in requests]
    assert [status for status, _, _ in answers] == [201, 422, 403, 429, 429]
    assert json.loads(answers[3][2])["code"] == "RATE_LIMITED"
    assert ("retry-after", "*") in answers[3][1]


async def test_the_lane_answers_a_plain_order_itself_and_passes_on_the_rest(
    pair: Pair,
) -> None:
    passed_on: list[tuple[bytes, str]] = []

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        body = await Request(scope, receive).body()
        passed_on.append((body, (await receive())["type"]))

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    def chunked(body: bytes) -> Receive:
        """The body in two messages, then the client gone."""
        messages: Iterator[Message] = iter(
            [
                {"type": "http.request", "body": body[:5], "more_body": True},
                {"type": "http.request", "body": body[5:], "more_body": False},
            ]
        )

        async def receive() -> Message:
            return next(messages, {"type": "http.disconnect"})

        return receive

    lane = OrderLane(route)
    node = pair.with_lane.app.state.node
    admin = (b"authorization", f"Bearer {ADMIN_TOKEN}".encode())
    json_type = (b"content-type", b"application/json")

    async def post(body: bytes, *headers: tuple[bytes, bytes], loaded: bool = True) -> None:
        length = (b"content-length", str(len(body)).encode())
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/orders",
            "headers": [length, *headers],
            "state": dict(pair.with_lane.state),
        }
        node.loaded = loaded
        try:
            await lane(scope, chunked(body), send)
        finally:
            node.loaded = True

    plain = order((SKU, 1), customer_id="cust-9")
    await post(plain, admin, json_type)
    assert (passed_on, [message["type"] for message in sent]) == (
        [],
        ["http.response.start", "http.response.body"],
    )
    assert sent[0]["status"] == 201
    assert schemas.Order.model_validate_json(sent[1]["body"]).customer_id == "cust-9"

    for_another = order((SKU, 1), customer_id="cust-2")
    await post(b'{"items": [', admin, json_type)
    await post(plain, admin, (b"content-type", b"text/plain"))
    await post(for_another, (b"authorization", CUSTOMER.encode()), json_type)
    await post(plain, json_type)  # anonymous
    await post(plain, admin, json_type, loaded=False)
    assert passed_on == [
        (b'{"items": [', "http.disconnect"),
        (plain, "http.disconnect"),
        (for_another, "http.disconnect"),
        (plain, "http.disconnect"),
        (plain, "http.disconnect"),
    ]
    assert len(sent) == 2


async def test_with_traces_on_an_order_is_the_route_s_span(database_url: str) -> None:
    """FastAPI names a request's span by the route it selects: traced, the lane steps aside."""
    exporter = InMemorySpanExporter()
    settings = node_settings(database_url)
    async with run_node(settings, app=create_app(settings, span_exporter=exporter)) as node:
        placed = await node.client.post(
            "/orders", json={"items": [{"sku": "NOPE-1", "quantity": 1}]}
        )
        assert placed.status_code == 422
        tracing: Tracing = node.app.state.tracing
        assert tracing.flush()
    [span] = [span for span in exporter.get_finished_spans() if span.name == "POST /orders"]
    assert span.attributes is not None
    assert span.attributes["http.route"] == "/orders"


def test_the_route_depends_on_nothing_the_lane_does_not_do() -> None:
    """The lane stands in for the app's `authorize`, the route's dependencies, its body,
    its header and its response model: anything added to them must be added to it too."""
    app = create_app(node_settings("postgresql://nobody@127.0.0.1:1/none"))
    assert [depends.dependency for depends in app.router.dependencies] == [deps.authorize]
    (route,) = [
        route
        for route in orders.router.routes
        if isinstance(route, APIRoute) and route.path == "/orders" and route.methods == {"POST"}
    ]
    dependant = route.dependant
    assert [sub.call for sub in dependant.dependencies] == [deps._store, deps._principal]
    assert [(param.name, param.field_info.annotation) for param in dependant.body_params] == [
        ("body", schemas.OrderCreate)
    ]
    (header,) = dependant.header_params
    assert (header.name, header.alias) == ("idempotency_key", "Idempotency-Key")
    assert header.field_info.annotation == str | None
    assert header.field_info.metadata == [MinLen(1), MaxLen(255)]
    assert dependant.path_params == dependant.query_params == dependant.cookie_params == []
    assert dependant.response_param_name == "response"
    assert (dependant.request_param_name, dependant.background_tasks_param_name) == (None, None)
    assert (route.status_code, route.response_model) == (201, schemas.Order)
    assert route.response_model_include is route.response_model_exclude is None
    assert route.response_model_by_alias is True
    excluded = (
        route.response_model_exclude_unset,
        route.response_model_exclude_defaults,
        route.response_model_exclude_none,
    )
    assert excluded == (False, False, False)
    assert isinstance(route.response_class, DefaultPlaceholder)  # FastAPI's own JSON bytes
