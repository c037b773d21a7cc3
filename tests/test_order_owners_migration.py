"""Orders placed before idempotency keys had callers, once the callers arrive.

They were placed through the path that names no caller; that path must
still replay them, and a caller who now brings the same key gets an order
of its own, learning nothing of the old one.
"""

import json
import uuid

import asyncpg

from backend.embedded import EmbeddedPostgres
from backend.migrate import load_migrations

OWNERS = "20261122000700"
BOOKKEEPING = """
create schema supabase_migrations;
create table supabase_migrations.schema_migrations (
    version text primary key, statements text[], name text
);
"""
ITEMS = json.dumps([{"sku": "OLD-1", "quantity": 2}])


async def test_an_order_from_before_stays_the_anonymous_callers(
    pg_server: EmbeddedPostgres,
) -> None:
    name = f"owners_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(await pg_server.create_database(name))
    try:
        await conn.execute(BOOKKEEPING)
        before = [m for m in load_migrations() if m.version < OWNERS]
        after = [m for m in load_migrations() if m.version >= OWNERS]
        assert [m.version for m in after][:1] == [OWNERS]
        for migration in before:
            await conn.execute(migration.sql)
        await conn.execute("select public.create_product('OLD-1', 'Old', 100, 9, 1, 'test')")
        old = await conn.fetchval(
            "select public.place_order($1::jsonb, null, 'old-key') -> 'order' ->> 'id'", ITEMS
        )
        for migration in after:
            await conn.execute(migration.sql)

        place = "select public.place_order($1::jsonb, null, 'old-key', p_caller => $2)::text"
        replayed = json.loads(await conn.fetchval(place, ITEMS, None))
        assert (replayed["order"]["id"], replayed["replayed"]) == (old, True)
        anonymous = json.loads(await conn.fetchval(place, ITEMS, "anonymous"))
        assert (anonymous["order"]["id"], anonymous["replayed"]) == (old, True)
        other = json.loads(await conn.fetchval(place, ITEMS, "user:someone"))
        assert other["replayed"] is False
        assert other["order"]["id"] != old
        assert await conn.fetchval("select reserved from public.products") == 4
    finally:
        await conn.close()
        await pg_server.drop_database(name)
