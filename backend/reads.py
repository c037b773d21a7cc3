"""The catalog's hottest read, `GET /products/{sku}`, answered before FastAPI routes it.

A storefront asks for products far more often than for anything else, and the
answer is bytes the cache holds already encoded. Most of what such a request
costs is FastAPI's routing and dependency resolution around it: a few times
what the answer itself costs. So this, the innermost layer, answers the plain
case itself with the steps the route takes: the route's rule from
`backend.auth.policy`, the same gate, the same cached bytes. Everything else
goes on to the route, which has the last word: a SKU the route would refuse or
not find, a node still loading, a caller the rule refuses. This layer only
ever answers 200, with what the route would have sent; every layer in front of
the route (request id, CORS, body limit, errors) is in front of it too.

The route stays the API's description (OpenAPI, the error responses) and the
answer to every other case; `tests/test_reads.py` holds the two to the same
answers and the route to the dependencies this layer stands in for.
"""

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from backend.auth.policy import rule_for
from backend.errors import AppError
from backend.guards import first_header
from backend.node import Node
from backend.replies import send_json
from backend.schemas import SKU_PATTERN

PREFIX = "/products/"
ROUTE = "/products/{sku}"
_SKU = re.compile(SKU_PATTERN)
_RULE = rule_for("GET", ROUTE)


class CachedReads:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await self._cached(scope) if scope["type"] == "http" else None
        if body is None:
            await self.app(scope, receive, send)
            return
        await send_json(send, 200, body)

    async def _cached(self, scope: Scope) -> bytes | None:
        """The product's body, if this is a read the route would answer 200 with it."""
        path: str = scope["path"]
        if scope["method"] != "GET" or not path.startswith(PREFIX) or scope.get("root_path"):
            return None
        sku = path[len(PREFIX) :]
        node: Node | None = scope.get("state", {}).get("node")
        if node is None or not node.loaded or _SKU.fullmatch(sku) is None:
            return None
        body = node.cache.body(sku)
        if body is None:
            return None
        try:
            principal = await node.gate.principal(first_header(scope["headers"], b"authorization"))
            _RULE.check(principal, node.settings.public_catalog)
        except AppError:
            return None  # the route says why, in its own words
        return body
