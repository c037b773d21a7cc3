"""Typed access to what the lifespan built, one line each."""

from typing import Annotated, cast

from fastapi import Depends, Request

from backend.cache import StockCache
from backend.settings import Settings
from backend.store import Store
from database import Database


def _settings(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


def _db(request: Request) -> Database:
    return cast(Database, request.state.db)


def _store(request: Request) -> Store:
    return cast(Store, request.state.store)


def _cache(request: Request) -> StockCache:
    return cast(StockCache, request.state.cache)


SettingsDep = Annotated[Settings, Depends(_settings)]
DatabaseDep = Annotated[Database, Depends(_db)]
StoreDep = Annotated[Store, Depends(_store)]
CacheDep = Annotated[StockCache, Depends(_cache)]
