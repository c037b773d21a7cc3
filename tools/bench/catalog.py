"""The bench's products and what it reads back from the database.

Products are made through the same SQL functions the nodes call, so each has
its ledger row and version like any other; many at once in one statement.
"""

import json
from dataclasses import dataclass
from typing import Any

import asyncpg

GET_SKU = "GET-1"
HOT_SKU = "HOT-1"
MEMORY_SKU = "MEM-1"
SELLOUT_SKU = "LAST-1"  # little stock, many buyers: every unit sold once, none twice
SELLOUT_STOCK = 300
SPREAD_FORMAT = "S%05d"  # the 10,000 SKUs orders spread over
SPREAD_PREFIX = "S"
BIG_STOCK = 1_000_000_000  # no run sells it out: throughput is measured, not a sell-out


def propagation_skus(count: int) -> list[str]:
    return [f"P{i:03d}" for i in range(count)]


def fanout_skus(count: int) -> list[str]:
    return [f"F{i:03d}" for i in range(count)]


def spread_skus(count: int) -> list[str]:
    return [SPREAD_FORMAT % i for i in range(count)]


async def create(conn: asyncpg.Connection, skus: list[str], on_hand: int = BIG_STOCK) -> None:
    await conn.execute(
        "select count(public.create_product(s, 'Bench ' || s, 1999, $2, 5, 'bench'))"
        " from unnest($1::text[]) s",
        skus,
        on_hand,
    )


@dataclass(frozen=True)
class Stock:
    on_hand: int
    reserved: int
    version: int


async def stock(conn: asyncpg.Connection, sku: str) -> Stock:
    row = await conn.fetchrow(
        "select on_hand, reserved, version from public.products"
        " where sku = $1 and deleted_at is null",
        sku,
    )
    assert row is not None, f"no product {sku}"
    return Stock(row["on_hand"], row["reserved"], row["version"])


async def last_seq(conn: asyncpg.Connection) -> int:
    found: int = await conn.fetchval("select coalesce(max(seq), 0) from public.stock_events")
    return found


async def ledger_since(conn: asyncpg.Connection, seq: int) -> dict[int, tuple[str, int]]:
    """Every change committed after `seq`: seq -> (sku, version)."""
    rows = await conn.fetch(
        "select seq, sku, version from public.stock_events where seq > $1 order by seq", seq
    )
    return {row["seq"]: (row["sku"], row["version"]) for row in rows}


async def commit_times(conn: asyncpg.Connection, seq: int) -> dict[int, float]:
    """seq -> when its transaction committed (epoch seconds), for changes after `seq`."""
    rows = await conn.fetch(
        "select seq, extract(epoch from pg_xact_commit_timestamp(xmin))::float8 as at"
        " from public.stock_events where seq > $1",
        seq,
    )
    return {row["seq"]: row["at"] for row in rows if row["at"] is not None}


async def adjust_at_once(conn: asyncpg.Connection, skus: list[str]) -> list[dict[str, Any]]:
    """One restock of each SKU, all in one transaction: changes that become visible
    together. Returns the changes as the SQL functions describe them."""
    async with conn.transaction():
        documents = await conn.fetch(
            "select public.adjust_stock(s, 1, 'restock', 'bench') as result"
            " from unnest($1::text[]) with ordinality as x(s, n) order by n",
            skus,
        )
    changes = []
    for row in documents:
        result = row["result"]
        changes.extend(json.loads(result)["changes"] if isinstance(result, str) else result)
    return changes
