"""The migrations on a database prepared like Supabase's, and on a bare one.

A Supabase project has the roles anon, authenticated and service_role before
any migration runs, and default privileges that grant them everything later
created in `public`: the migrations must take that back. On a bare Postgres
they create the roles themselves. Either way, anon and authenticated (the
browser's keys) may call no function and see no row, and service_role (the
nodes' key) may do everything a node does.
"""

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from backend.embedded import EmbeddedPostgres
from backend.migrate import migrate
from database import SupabaseDatabase
from tests.postgrest import SERVICE_ROLE_KEY, SUPABASE_URL, supabase_api

# What Supabase has done before a project's first migration: the API roles, and
# default privileges for whatever the migrating role creates in public. Roles
# are cluster-wide (and exist here already: other databases' migrations made
# them); privileges and default privileges belong to each database.
SUPABASE_PREPARATION = """
do $$
begin
  if not exists (select from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
end
$$;
grant usage on schema public to anon, authenticated, service_role;
alter default privileges in schema public
  grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public
  grant all on functions to anon, authenticated, service_role;
alter default privileges in schema public
  grant all on sequences to anon, authenticated, service_role;
"""

API_ROLES = ["anon", "authenticated"]
MUTATING = [
    "place_order",
    "adjust_stock",
    "set_stock",
    "create_product",
    "update_product",
    "delete_product",
    "confirm_order",
    "cancel_order",
    "expire_holds",
]
TABLES = ["products", "orders", "order_items", "stock_events", "api_keys"]
API_KEY_FUNCTIONS = ["create_api_key", "list_api_keys", "revoke_api_key", "authenticate_api_key"]
KEY_HASH = "ab" * 32


@pytest.fixture(params=["supabase", "bare"])
async def migrated(
    request: pytest.FixtureRequest, pg_server: EmbeddedPostgres
) -> AsyncIterator[tuple[str, asyncpg.Connection]]:
    """A fresh database, prepared like `request.param`, migrated, with a product and an order."""
    name = f"roles_{request.param}_{uuid.uuid4().hex[:12]}"
    url = await pg_server.create_database(name)
    conn = await asyncpg.connect(url)
    try:
        if request.param == "supabase":
            await conn.execute(SUPABASE_PREPARATION)
        await migrate(conn)
        await conn.execute(
            "select public.create_product('ROLE-1', 'Role test', 100, 5, 1, 'test');"
            """select public.place_order('[{"sku": "ROLE-1", "quantity": 1}]', 'c-1', 'k-1');"""
            f"select public.create_api_key('0123456789abcdef', '{KEY_HASH}', 'till',"
            " array['orders:write']);"
        )
        yield url, conn
    finally:
        await conn.close()
        await pg_server.drop_database(name)


async def as_role(conn: asyncpg.Connection, role: str, sql: str) -> str | int:
    """Run `sql` as `role`, rolled back; the error's SQLSTATE, or the row count / value."""
    try:
        async with conn.transaction():
            await conn.execute(f"set local role {role}")
            value: int = await conn.fetchval(sql)
            raise _Rollback(value)
    except _Rollback as done:
        return done.value
    except asyncpg.PostgresError as exc:
        return str(exc.sqlstate)


class _Rollback(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value


async def call_with_nulls(conn: asyncpg.Connection, function: str) -> str:
    """A call of public.`function` with a typed null for every argument."""
    types = await conn.fetchval(
        "select array(select format_type(t, null) from unnest(p.proargtypes::oid[])"
        " with ordinality a(t, i) order by i)"
        " from pg_proc p where p.oid = $1::regproc",
        f"public.{function}",
    )
    return f"select public.{function}({', '.join(f'null::{t}' for t in types)})"


@pytest.mark.parametrize("role", API_ROLES)
async def test_browser_roles_cannot_call_a_function(
    migrated: tuple[str, asyncpg.Connection], role: str
) -> None:
    _, conn = migrated
    callable_by_role = await conn.fetch(
        "select p.oid::regprocedure::text as function from pg_proc p"
        " join pg_namespace n on n.oid = p.pronamespace"
        " where n.nspname in ('public', 'private')"
        " and has_function_privilege($1, p.oid, 'execute')",
        role,
    )
    assert [row["function"] for row in callable_by_role] == []
    for function in MUTATING:
        assert await as_role(conn, role, await call_with_nulls(conn, function)) == "42501"
    for function in API_KEY_FUNCTIONS:
        assert await as_role(conn, role, await call_with_nulls(conn, function)) == "42501"
    authenticate = f"select public.authenticate_api_key('0123456789abcdef', '{KEY_HASH}')"
    assert await as_role(conn, "service_role", authenticate) != "42501"
    assert await as_role(conn, role, authenticate) == "42501"


@pytest.mark.parametrize("role", API_ROLES)
async def test_browser_roles_never_see_an_api_key_or_its_hash(
    migrated: tuple[str, asyncpg.Connection], role: str
) -> None:
    _, conn = migrated
    for column in ("key_hash", "public_id", "name", "scopes"):
        assert not await conn.fetchval(
            "select has_column_privilege($1, 'public.api_keys', $2, 'select')", role, column
        )
    assert await as_role(conn, role, "select key_hash from public.api_keys") == "42501"
    forged = (
        "insert into public.api_keys (public_id, key_hash, name, scopes)"
        f" values ('fedcba9876543210', '{KEY_HASH}', 'forged', array['keys:manage']) returning 1"
    )
    assert await as_role(conn, role, forged) == "42501"


@pytest.mark.parametrize("role", API_ROLES)
async def test_browser_roles_can_read_and_write_no_row(
    migrated: tuple[str, asyncpg.Connection], role: str
) -> None:
    _, conn = migrated
    for table in TABLES:
        assert await conn.fetchval(f"select count(*) from public.{table}") > 0
        assert await as_role(conn, role, f"select count(*) from public.{table}") in ("42501", 0)
        deleted = f"with gone as (delete from public.{table} returning 1) select count(*) from gone"
        assert await as_role(conn, role, deleted) in ("42501", 0)
    forged = "insert into public.products (sku, name, price_cents) values ('FORGED', 'x', 1)"
    assert await as_role(conn, role, forged + " returning 1") == "42501"
    for schema in ("private", "supabase_migrations"):
        assert not await conn.fetchval("select has_schema_privilege($1, $2, 'usage')", role, schema)
    sequences = await conn.fetch(
        "select c.oid::regclass::text as sequence from pg_class c"
        " join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname = 'public'"
        " and case c.relkind when 'S'"
        "     then has_sequence_privilege($1, c.oid, 'usage, select, update') end",
        role,
    )
    assert [row["sequence"] for row in sequences] == []


async def test_the_preparation_grants_like_supabase(pg_server: EmbeddedPostgres) -> None:
    """Without the migrations' revokes, Supabase's defaults would open everything."""
    name = f"roles_defaults_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(await pg_server.create_database(name))
    try:
        await conn.execute(SUPABASE_PREPARATION)
        await conn.execute(
            "create table public.probe (id bigint generated always as identity);"
            "create function public.probe() returns int language sql as 'select 1';"
        )
        granted = await conn.fetchrow(
            "select has_table_privilege('anon', 'public.probe', 'select') as t,"
            " has_function_privilege('anon', 'public.probe()', 'execute') as f,"
            " has_sequence_privilege('anon', 'public.probe_id_seq', 'usage') as s"
        )
        assert granted is not None
        assert dict(granted) == {"t": True, "f": True, "s": True}
    finally:
        await conn.close()
        await pg_server.drop_database(name)


async def test_service_role_reads_every_table(migrated: tuple[str, asyncpg.Connection]) -> None:
    _, conn = migrated
    for table in TABLES:
        assert await as_role(conn, "service_role", f"select count(*) from public.{table}") != 0


async def test_service_role_does_all_a_node_does_through_the_api(
    migrated: tuple[str, asyncpg.Connection],
) -> None:
    url, _ = migrated
    async with supabase_api(url):
        db = SupabaseDatabase(SUPABASE_URL, SERVICE_ROLE_KEY)
        await db.connect()
        try:
            snapshot = await db.catalog_snapshot()
            assert [p["sku"] for p in snapshot["products"]] == ["ROLE-1"]
            await db.stock_events_since(snapshot["cursor"], 100)
            await db.create_product("ROLE-2", "Second", 200, 4, 1, "node")
            await db.update_product("ROLE-2", "node", name="Renamed")
            await db.adjust_stock("ROLE-2", 2, "restock", "node")
            await db.set_stock("ROLE-2", 8, None, "node")
            items = [{"sku": "ROLE-2", "quantity": 1}]
            first = await db.place_order(items, "c-2", "k-2", "node", 900, 0, 100)
            second = await db.place_order(items, "c-2", None, "node", 0, 0, 100)
            await db.confirm_order(uuid.UUID(first["order"]["id"]), "node")
            assert (await db.expire_holds(10, "node"))["expired"] == [second["order"]["id"]]
            seeded = (await db.list_orders("c-1", None, 1, None))["items"][0]["id"]
            await db.cancel_order(uuid.UUID(seeded), "node")
            await db.get_product("ROLE-2")
            await db.list_products(None, 10)
            await db.get_order(uuid.UUID(first["order"]["id"]))
            await db.list_stock_events("ROLE-2", None, 10)
            assert await db.schema_versions()
            await db.delete_product("ROLE-2", "node")
            made = await db.create_api_key("0123456789abcdee", KEY_HASH, "node", ["orders:read"])
            await db.authenticate_api_key("0123456789abcdee", KEY_HASH)
            assert len((await db.list_api_keys())["items"]) == 2
            await db.revoke_api_key(uuid.UUID(made["id"]))
        finally:
            await db.close()
