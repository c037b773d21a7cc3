"""Typed access to what the lifespan built, one line each.

The dependencies are `async`: FastAPI runs a plain `def` dependency in a worker
thread, which would cost a thread hop per request for a dictionary lookup.
"""

from typing import Annotated, cast

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from backend.auth.policy import OPEN, is_write, rule_for
from backend.auth.principal import ANONYMOUS, Principal
from backend.cache import StockCache
from backend.errors import AppError
from backend.node import Node
from backend.settings import Settings
from backend.store import Store
from database import Database


async def _settings(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


async def _node(request: Request) -> Node:
    return cast(Node, request.state.node)


async def _db(request: Request) -> Database:
    return cast(Database, request.state.db)


async def _store(request: Request) -> Store:
    return cast(Store, request.state.store)


async def _cache(request: Request) -> StockCache:
    """The catalog cache, once loaded: before that an empty cache would answer wrongly."""
    if not cast(Node, request.state.node).loaded:
        raise AppError(503, "NOT_READY", "this node is still loading the catalog; retry")
    return cast(StockCache, request.state.cache)


async def authorize(connection: HTTPConnection) -> None:
    """Every HTTP route, before its handler: who is calling, and may they call this?

    The rule comes from `backend.auth.policy` by the route's method and path
    template. Open routes (health, docs) read no credentials at all; others
    refuse a bad credential rather than treat its bearer as anonymous.
    """
    if connection.scope["type"] != "http":
        return  # /ws reads its token from its first message or the query: see routers.live
    method, route = connection.scope["method"], connection.scope.get("route")
    # The template as the policy and the OpenAPI document spell it: no `:uuid` convertor.
    path = route.path_format if route is not None else connection.url.path
    rule = rule_for(method, path)
    if rule is OPEN:
        return
    node = cast(Node, connection.state.node)
    principal = await node.gate.principal(connection.headers.get("authorization"))
    rule.check(principal, node.settings.public_catalog)
    connection.state.principal = principal
    if node.limiter is not None and is_write(method, path):
        await node.limiter.hit(principal.caller)


async def _principal(request: Request) -> Principal:
    return cast(Principal, getattr(request.state, "principal", ANONYMOUS))


SettingsDep = Annotated[Settings, Depends(_settings)]
NodeDep = Annotated[Node, Depends(_node)]
DatabaseDep = Annotated[Database, Depends(_db)]
StoreDep = Annotated[Store, Depends(_store)]
CacheDep = Annotated[StockCache, Depends(_cache)]
PrincipalDep = Annotated[Principal, Depends(_principal)]
