"""An in-memory `Database`, so the sync logic has millisecond tests.

`FakeDatabase` keeps a tiny catalog and its ledger and answers the calls
`Sync` makes (`catalog_snapshot`, `stock_events_since`, `list_stock_events`)
with the documents the SQL functions return, plus the writes a test needs to
append to the ledger (`create_product`, `adjust_stock`, `delete_product`).
Every write commits at once and in order, so the catch-up cursor is simply
the last seq read. A test can make the next call of a function fail, or hold
it after it has read (`gate`) to stage a race. The real functions are held to
the same documents by tests/test_contract.py.
"""

import asyncio
import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backend.errors import AppError, not_found, unavailable
from database import Database, Json

_COMMITTED_AT = "2026-01-01T00:00:00+00:00"


@dataclass
class Gate:
    """Holds a call after it has read the data: `entered` is set, then it waits for `release`."""

    entered: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


class FakeDatabase(Database):
    mode = "memory"

    def __init__(self) -> None:
        self.products: dict[int, Json] = {}  # by id, deleted ones too
        self.ledger: list[Json] = []  # changes in commit order; seq is the index + 1
        self.calls: list[str] = []
        self._ids = itertools.count(1)
        self._failures: dict[str, tuple[AppError, asyncio.Event]] = {}
        self._gates: dict[str, Gate] = {}

    @property
    def target(self) -> str:
        return "memory"

    async def connect(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def fail(self, function: str, error: AppError | None = None) -> asyncio.Event:
        """Make the next call of `function` raise `error` (unavailable, unless told).

        The event is set as it raises: once a test wakes on it, the caller has
        handled the error as far as it could without awaiting anything.
        """
        raised = asyncio.Event()
        self._failures[function] = (error or unavailable("the fake database refused"), raised)
        return raised

    def gate(self, function: str) -> Gate:
        """Hold the next call of `function` once it has read, until the test releases it."""
        gate = self._gates[function] = Gate()
        return gate

    def count(self, function: str) -> int:
        return self.calls.count(function)

    async def call(self, function: str, **arguments: Any) -> Any:
        self.calls.append(function)
        if function in self._failures:
            error, raised = self._failures.pop(function)
            raised.set()
            raise error
        handler: Callable[..., Any] | None = getattr(self, f"_{function}", None)
        if handler is None:
            raise AppError(503, "SCHEMA_OUT_OF_DATE", f"the fake has no {function}")
        result = copy.deepcopy(handler(**arguments))
        gate = self._gates.pop(function, None)
        if gate is not None:
            gate.entered.set()
            await gate.release.wait()
        return result

    # Reads

    def _catalog_snapshot(self) -> Json:
        return {
            "products": [self._product_json(p) for p in sorted(self._live(), key=_sku)],
            "tombstones": self._tombstones(),
            "cursor": str(len(self.ledger)),
        }

    def _stock_events_since(self, cursor: str | None, limit: int, compact: bool = False) -> Json:
        start = _position(cursor)
        rows = self.ledger[start : start + limit + 1]
        events = rows[:limit]
        page = {"more": len(rows) > limit, "cursor": str(start + len(events))}
        if compact:
            return page | {
                "events": [[e["sku"], e["product_id"], e["version"], e["order_id"]] for e in events]
            }
        return page | {"events": events}

    def _list_stock_events(self, sku: str | None, before: int | None, limit: int) -> Json:
        rows = [
            e
            for e in reversed(self.ledger)
            if (sku is None or e["sku"] == sku) and (before is None or e["seq"] < before)
        ][:limit]
        return {"items": rows, "next": rows[-1]["seq"] if len(rows) == limit else None}

    # Writes

    def _create_product(
        self,
        sku: str,
        name: str,
        price_cents: int,
        on_hand: int,
        low_stock_threshold: int,
        node: str,
    ) -> Json:
        if self._find(sku) is not None:
            raise AppError(409, "SKU_EXISTS", f"a product with sku {sku} exists", {"sku": sku})
        product: Json = {
            "id": next(self._ids),
            "sku": sku,
            "name": name,
            "price_cents": price_cents,
            "on_hand": on_hand,
            "reserved": 0,
            "low_stock_threshold": low_stock_threshold,
            "version": 1,
            "deleted": False,
        }
        self.products[product["id"]] = product
        change = self._log(product, on_hand, "created", node)
        return {"product": self._product_json(product), "changes": [change]}

    def _adjust_stock(self, sku: str, delta: int, reason: str, node: str) -> Json:
        product = self._locate(sku)
        product["on_hand"] += delta
        product["version"] += 1
        return {"changes": [self._log(product, delta, reason, node)]}

    def _delete_product(self, sku: str, node: str) -> Json:
        product = self._locate(sku)
        product["deleted"] = True
        product["version"] += 1
        change = self._log(product, 0, "deleted", node)
        return {"product": self._product_json(product), "changes": [change]}

    # Helpers

    def _live(self) -> list[Json]:
        return [p for p in self.products.values() if not p["deleted"]]

    def _find(self, sku: str) -> Json | None:
        return next((p for p in self._live() if p["sku"] == sku), None)

    def _locate(self, sku: str) -> Json:
        product = self._find(sku)
        if product is None:
            raise not_found(f"no product with sku {sku}", sku=sku)
        return product

    def _tombstones(self) -> list[Json]:
        live = {p["sku"] for p in self._live()}
        latest: dict[str, Json] = {}
        for product in sorted(self.products.values(), key=lambda p: p["id"]):
            if product["sku"] not in live:
                latest[product["sku"]] = product
        return [
            {"sku": sku, "product_id": p["id"], "version": p["version"]}
            for sku, p in sorted(latest.items())
        ]

    def _log(self, product: Json, delta_on_hand: int, reason: str, node: str) -> Json:
        change = {
            "sku": product["sku"],
            "product_id": product["id"],
            "name": product["name"],
            "price_cents": product["price_cents"],
            "low_stock_threshold": product["low_stock_threshold"],
            "on_hand": product["on_hand"],
            "reserved": product["reserved"],
            "available": product["on_hand"] - product["reserved"],
            "delta_on_hand": delta_on_hand,
            "delta_reserved": 0,
            "version": product["version"],
            "seq": len(self.ledger) + 1,
            "reason": reason,
            "order_id": None,
            "node": node,
            "committed_at": _COMMITTED_AT,
            "deleted": reason == "deleted",
        }
        self.ledger.append(change)
        return copy.deepcopy(change)

    @staticmethod
    def _product_json(product: Json) -> Json:
        fields = ("id", "sku", "name", "price_cents", "on_hand", "reserved")
        return {
            **{name: product[name] for name in fields},
            "available": product["on_hand"] - product["reserved"],
            "low_stock_threshold": product["low_stock_threshold"],
            "version": product["version"],
            "created_at": _COMMITTED_AT,
            "updated_at": _COMMITTED_AT,
        }


def _sku(product: Json) -> str:
    sku: str = product["sku"]
    return sku


def _position(cursor: str | None) -> int:
    if not cursor:
        return 0
    if not cursor.isdigit():
        raise AppError(422, "INVALID_CURSOR", "cursor is not one this server gave out")
    return int(cursor)
