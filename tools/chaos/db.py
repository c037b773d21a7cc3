"""The database's rows, read straight from Postgres in one consistent snapshot."""

import asyncpg

from tools.chaos.model import DbState, EventRow, OrderRow, ProductRow

_PRODUCTS = """
select id, sku, on_hand, reserved, version, deleted_at is not null as deleted
  from public.products order by id
"""
_EVENTS = """
select seq, product_id, sku, delta_on_hand, delta_reserved, on_hand, reserved, version,
       reason, order_id::text
  from public.stock_events order by seq
"""
_ORDERS = """
select o.id::text, o.status, o.idempotency_key,
       coalesce(array_agg(array[i.product_id, i.quantity::bigint] order by i.line)
                filter (where i.line is not null), '{}') as lines
  from public.orders o left join public.order_items i on i.order_id = o.id
 group by o.id order by o.created_at, o.id
"""


async def read_state(conn: asyncpg.Connection, *, events: bool = True) -> DbState:
    """Products, orders and (unless `events` is false) the whole ledger, as of one moment."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        products = tuple(ProductRow(**dict(row)) for row in await conn.fetch(_PRODUCTS))
        orders = tuple(
            OrderRow(row["id"], row["status"], row["idempotency_key"], _lines(row["lines"]))
            for row in await conn.fetch(_ORDERS)
        )
        ledger = tuple(EventRow(**dict(row)) for row in await conn.fetch(_EVENTS)) if events else ()
    return DbState(products, ledger, orders)


def _lines(pairs: list[list[int]]) -> tuple[tuple[int, int], ...]:
    return tuple((int(product_id), int(quantity)) for product_id, quantity in pairs)
