"""`POST /orders`, the write every shopper makes, answered before FastAPI routes it.

Under a load of orders a node spent about half of its CPU per order in
FastAPI's routing, dependency solving and response model handling around a
handler that makes one call (0.60 to 0.67 ms of CPU per order without this
layer, 0.29 to 0.34 ms with it). So this layer, the innermost beside
`backend.reads`, takes the plain order itself with the steps the route and
the app's `authorize` take, in the same order where it matters: the body parsed as FastAPI parses it
(`json.loads`, then `OrderCreate`'s validation), the same gate and rule
(`backend.auth.policy`), the write rate limit, `Store.place_order` called as
the route calls it, and the order serialised as FastAPI serialises the route's
response model (validated, then dumped to JSON by pydantic). An `AppError` met
from the rate limit on becomes the answer `backend.handlers` gives it.

Anything unusual goes on to the route untouched (the body read ahead given
back) before anything is counted or written, so the route never does twice
what this layer did: a node not loaded, a body that is not exactly
`application/json` with a length, not JSON or not a valid order, an
`Idempotency-Key` the route's header would refuse, a caller the gate or the
rule refuses, a customer ordering for another. So does every request while
FastAPI's telemetry is on for it: its request span is named by the route that
FastAPI selects (`POST /orders`, with `http.route`), which no request this
layer answers would reach. Nothing else FastAPI does around the route is seen
by a client: `backend.metrics` counts orders in the store, not per request.

The route stays the API's description (OpenAPI, the error responses) and the
answer to every other case; `tests/test_order_lane.py` holds the two to the
same answers and the route to the dependencies this layer stands in for.
"""

import json
from dataclasses import dataclass
from typing import cast

from pydantic import TypeAdapter, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from backend import schemas
from backend.auth.policy import is_write, rule_for
from backend.auth.principal import Principal
from backend.errors import AppError
from backend.guards import first_header
from backend.handlers import error_response
from backend.node import Node
from backend.replies import read_body, replaying, send_json
from backend.store import Store

PATH = "/orders"
_RULE = rule_for("POST", PATH)
_COUNTED = is_write("POST", PATH)
_BODY = TypeAdapter(schemas.OrderCreate)
_ORDER = TypeAdapter(schemas.Order)
_KEY_LENGTHS = range(1, 256)  # the route's Header(min_length=1, max_length=255)
_REPLAYED = (b"idempotent-replayed", b"true")


@dataclass(frozen=True)
class _Order:
    """A request the route would take to `Store.place_order`, and what it would pass."""

    principal: Principal
    body: schemas.OrderCreate
    customer_id: str | None
    idempotency_key: str | None


class OrderLane:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        node = _node(scope) if _is_ours(scope) else None
        if node is None:
            await self.app(scope, receive, send)
            return
        body, messages = await read_body(receive)
        order = await _plain_order(node, scope, body) if body else None
        if order is None:
            await self.app(scope, replaying(messages, receive), send)
            return
        await _place(node, cast(Store, scope["state"]["store"]), order, scope, receive, send)


def _is_ours(scope: Scope) -> bool:
    """A `POST /orders` with a JSON body of declared length, FastAPI's telemetry off."""
    if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PATH:
        return False
    if scope.get("root_path") or scope.get("fastapi.telemetry") is not None:
        return False
    declared, content_type = False, None
    for name, value in scope["headers"]:
        if name == b"content-length":
            declared = True
        elif name == b"transfer-encoding":
            return False  # a streamed body is BodyLimit's and FastAPI's to count
        elif name == b"content-type" and content_type is None:
            content_type = value  # FastAPI reads the first
    return declared and content_type == b"application/json"


def _node(scope: Scope) -> Node | None:
    node: Node | None = scope.get("state", {}).get("node")
    return node if node is not None and node.loaded else None


async def _plain_order(node: Node, scope: Scope, body: bytes) -> _Order | None:
    """The order, if the route would place it; else None and the route says why."""
    try:
        parsed = _BODY.validate_python(json.loads(body), from_attributes=True)
    except (ValueError, RecursionError, ValidationError):
        return None
    key = first_header(scope["headers"], b"idempotency-key")
    if key is not None and len(key) not in _KEY_LENGTHS:
        return None
    try:
        principal = await node.gate.principal(first_header(scope["headers"], b"authorization"))
        _RULE.check(principal, node.settings.public_catalog)
    except AppError:
        return None
    customer_id = parsed.customer_id
    if principal.customer_id is not None:
        if customer_id not in (None, principal.customer_id):
            return None
        customer_id = principal.customer_id
    return _Order(principal, parsed, customer_id, key)


async def _place(
    node: Node, store: Store, order: _Order, scope: Scope, receive: Receive, send: Send
) -> None:
    """What `authorize` does from the rate limit on, then what the route does."""
    principal, body = order.principal, order.body
    try:
        if node.limiter is not None and _COUNTED:
            await node.limiter.hit(principal.caller)
        items = [line.model_dump() for line in body.items]
        result = await store.place_order(
            items, order.customer_id, order.idempotency_key, principal.caller, body.payment_method
        )
        if principal.role == "customer":
            await store.customers.remember(principal.id, principal.name)
    except AppError as exc:
        await error_response(exc)(scope, receive, send)
        return
    placed = _ORDER.validate_python(result["order"], from_attributes=True)
    payload = _ORDER.dump_json(placed, by_alias=True)
    await send_json(send, 201, payload, *([_REPLAYED] if result["replayed"] else []))
