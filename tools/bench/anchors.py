"""What a user would compare OrderFlow with, run beside it on the same machine.

- `starlette_app`: a bare Starlette app returning a product's JSON from a dict.
- `naive_app`: the endpoint anyone would write first, FastAPI + asyncpg, one
  transaction per order (BEGIN; SELECT ... FOR UPDATE; UPDATE; INSERT; COMMIT)
  on copies of the tables in schema `bench`, with a node's pool size. It keeps
  no ledger, no idempotency, no versions published: that is the point.
- `pgbench`: Postgres's own load generator calling `place_order`, one order per
  transaction, to show what the SQL function costs with no node in front.

Both apps run under uvicorn with a node's flags (`cluster.Server`, `--factory`),
configured by environment variables.
"""

import json
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import asyncpg
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from tools.bench import BenchError
from tools.bench.wrk import run_tool

DOCUMENTS_ENV = "BENCH_DOCUMENTS"  # a JSON object: sku -> product document
DATABASE_ENV = "BENCH_DATABASE_URL"
POOL_ENV = "BENCH_POOL_MAX"


def starlette_app() -> Starlette:
    documents: dict[str, Any] = json.loads(os.environ[DOCUMENTS_ENV])

    async def product(request: Request) -> JSONResponse:
        found = documents.get(request.path_params["sku"])
        if found is None:
            return JSONResponse({"code": "NOT_FOUND"}, status_code=404)
        return JSONResponse(found)

    return Starlette(routes=[Route("/products/{sku}", product)])


class Line(BaseModel):
    sku: Annotated[str, Field(min_length=1, max_length=64)]
    quantity: Annotated[int, Field(ge=1, le=2_147_483_647)]


class OrderIn(BaseModel):
    items: Annotated[list[Line], Field(min_length=1, max_length=100)]


def naive_app() -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        pool = await asyncpg.create_pool(
            os.environ[DATABASE_ENV], min_size=1, max_size=int(os.environ[POOL_ENV])
        )
        try:
            yield {"pool": pool}
        finally:
            await pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/orders", status_code=201)
    async def place_order(body: OrderIn, request: Request) -> Any:
        pool: asyncpg.Pool = request.state.pool
        try:
            async with pool.acquire() as conn, conn.transaction():
                return await _place(conn, body)
        except Refused as exc:
            return JSONResponse({"code": exc.code}, status_code=exc.status)

    return app


class Refused(Exception):
    """The order cannot be placed; raised inside the transaction so that it rolls back."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(code)
        self.status, self.code = status, code


async def _place(conn: "asyncpg.pool.PoolConnectionProxy[asyncpg.Record]", body: OrderIn) -> Any:
    lines, subtotal = [], 0
    for line in sorted(body.items, key=lambda item: item.sku):
        row = await conn.fetchrow(
            "select id, available, price_cents from bench.products"
            " where sku = $1 and deleted_at is null for update",
            line.sku,
        )
        if row is None:
            raise Refused(422, "UNKNOWN_SKU")
        if row["available"] < line.quantity:
            raise Refused(409, "OUT_OF_STOCK")
        await conn.execute(
            "update bench.products set reserved = reserved + $2, version = version + 1,"
            " updated_at = now() where id = $1",
            row["id"],
            line.quantity,
        )
        lines.append((row["id"], line.sku, line.quantity, row["price_cents"]))
        subtotal += line.quantity * row["price_cents"]
    order = await conn.fetchrow(
        "insert into bench.orders (request_hash, subtotal_cents, total_cents, node_id,"
        " expires_at) values ('', $1, $1, 'naive', now() + interval '15 minutes')"
        " returning id, status, created_at, expires_at",
        subtotal,
    )
    assert order is not None
    await conn.executemany(
        "insert into bench.order_items (order_id, line, product_id, sku, quantity,"
        " unit_price_cents) values ($1, $2, $3, $4, $5, $6)",
        [(order["id"], i + 1, *line) for i, line in enumerate(lines)],
    )
    return {
        "id": str(order["id"]),
        "status": order["status"],
        "items": [{"sku": sku, "quantity": q, "unit_price_cents": p} for _, sku, q, p in lines],
        "total_cents": subtotal,
        "created_at": order["created_at"].isoformat(),
        "expires_at": order["expires_at"].isoformat(),
    }


_COPY_TABLES = """
drop schema if exists bench cascade;
create schema bench;
create table bench.products
  (like public.products including defaults including constraints including indexes
   including generated);
create table bench.orders
  (like public.orders including defaults including constraints including indexes);
create table bench.order_items
  (like public.order_items including defaults including constraints including indexes);
"""


async def copy_tables(conn: asyncpg.Connection, sku_prefix: str) -> int:
    """The naive endpoint's tables: copies of the real ones (columns, checks, indexes),
    holding the live products whose SKU starts with `sku_prefix`, as they are now."""
    await conn.execute(_COPY_TABLES)
    copied: str = await conn.execute(
        "insert into bench.products (id, sku, name, price_cents, on_hand, reserved,"
        " low_stock_threshold, version, created_at, updated_at, deleted_at)"
        " select id, sku, name, price_cents, on_hand, reserved, low_stock_threshold, version,"
        " created_at, updated_at, deleted_at from public.products"
        " where deleted_at is null and starts_with(sku, $1)",
        sku_prefix,
    )
    await conn.execute("analyze bench.products")
    return int(copied.split()[-1])


PGBENCH_SCRIPT = """\\set key random(1, 1000000000000)
select public.place_order(
  p_items => '[{"sku": "%(sku)s", "quantity": 1}]'::jsonb,
  p_idempotency_key => concat('pgbench-', :client_id, '-', :key),
  p_node => 'pgbench', p_hold_seconds => 86400, p_caller => 'pgbench');
"""


async def pgbench(
    database_url: str, sku: str, clients: int, seconds: float, folder: Path
) -> dict[str, Any]:
    """`place_order` of one unit of `sku`, one order per transaction, `clients` at once."""
    script = folder / "pgbench.sql"
    script.write_text(PGBENCH_SCRIPT % {"sku": sku})
    host_port = re.search(r"@([^:/]+):(\d+)/(\w+)", database_url)
    if host_port is None:
        raise BenchError(f"cannot read host and port from {database_url!r}")
    host, port, database = host_port.groups()
    command = ["pgbench", "-n", "-h", host, "-p", port, "-U", "postgres", "-f", str(script)]
    command += [
        "-c",
        str(clients),
        "-j",
        str(min(2, clients)),
        "-T",
        str(max(1, round(seconds))),
        database,
    ]
    code, output, cpu = await run_tool(command, seconds + 60.0)
    if code != 0:
        raise BenchError(f"pgbench exited with {code}: {output.strip()[-500:]}")
    return {"clients": clients, "cpu": cpu, **parse_pgbench(output)}


def parse_pgbench(output: str) -> dict[str, Any]:
    """tps, mean latency (s) and counts from pgbench's summary."""
    tps = re.search(r"^tps = ([\d.]+)", output, re.MULTILINE)
    if tps is None:
        raise BenchError(f"pgbench printed no tps: {output.strip()[-500:]!r}")
    latency = re.search(r"^latency average = ([\d.]+) ms", output, re.MULTILINE)
    done = re.search(r"^number of transactions actually processed: (\d+)", output, re.MULTILINE)
    failed = re.search(r"^number of failed transactions: (\d+)", output, re.MULTILINE)
    return {
        "tps": float(tps.group(1)),
        "latency_mean": float(latency.group(1)) / 1000 if latency else None,
        "transactions": int(done.group(1)) if done else None,
        "failed": int(failed.group(1)) if failed else 0,
    }
