"""The migrations on a database prepared like Supabase's, and on a bare one.

A Supabase project has the roles anon, authenticated and service_role and
the function auth.uid() before any migration runs, and default privileges
that grant the roles everything later created in `public`: the migrations
must take that back. On a bare Postgres they create the roles and auth.uid()
themselves. Either way, anon and authenticated (the browser's keys) may call
no function; anon sees no row; authenticated, with a user's JWT, sees that
user's orders and their lines and nothing else; and service_role (the nodes'
key) may do everything a node does.
"""

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

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
create schema if not exists auth;
grant usage on schema auth to anon, authenticated, service_role;
create function auth.uid() returns uuid language sql stable as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;
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


async def as_role(conn: asyncpg.Connection, role: str, sql: str, sub: str | None = None) -> Any:
    """Run `sql` as `role`, rolled back; the error's SQLSTATE, or the row count / value.

    With `sub`, the request carries a JWT for that user, as PostgREST sets it."""
    try:
        async with conn.transaction():
            await conn.execute(f"set local role {role}")
            if sub is not None:
                claims = json.dumps({"sub": sub, "role": role})
                await conn.execute("select set_config('request.jwt.claims', $1, true)", claims)
            value = await conn.fetchval(sql)
            raise _Rollback(value)
    except _Rollback as done:
        return done.value
    except asyncpg.PostgresError as exc:
        return str(exc.sqlstate)


class _Rollback(Exception):
    def __init__(self, value: Any) -> None:
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


ALICE = "0000a11c-0000-4000-8000-000000000001"
BOB = "00000b0b-0000-4000-8000-000000000002"
OWN_ORDERS = "select coalesce(array_agg(id::text order by id), '{}') from public.orders"
OWN_LINES = (
    "select coalesce(array_agg(order_id::text || '/' || line order by order_id, line), '{}')"
    " from public.order_items"
)
# What the API's order document shows: not who placed it, nor their key.
ORDER_COLUMNS = [
    "created_at", "customer_id", "expires_at", "fee_cents", "id", "node_id", "status",
    "subtotal_cents", "total_cents", "updated_at",
]  # fmt: skip


async def place_for(conn: asyncpg.Connection, customer: str, lines: int) -> str:
    items = json.dumps([{"sku": "ROLE-1", "quantity": 1}] * lines)
    order_id: str = await conn.fetchval(
        "select public.place_order($1::jsonb, $2, p_caller => $3) -> 'order' ->> 'id'",
        items,
        customer,
        f"user:{customer}",
    )
    return order_id


async def test_a_signed_in_user_reads_its_own_orders_and_their_lines_only(
    migrated: tuple[str, asyncpg.Connection],
) -> None:
    _, conn = migrated
    alice, bob = await place_for(conn, ALICE, 2), await place_for(conn, BOB, 1)
    assert await conn.fetchval("select count(*) from public.orders") == 3
    assert await as_role(conn, "authenticated", OWN_ORDERS, ALICE) == [alice]
    assert await as_role(conn, "authenticated", OWN_LINES, ALICE) == [f"{alice}/1", f"{alice}/2"]
    assert await as_role(conn, "authenticated", OWN_ORDERS, BOB) == [bob]
    assert await as_role(conn, "authenticated", OWN_LINES, BOB) == [f"{bob}/1"]
    shown = "select string_agg(status || ' ' || total_cents, ',') from public.orders"
    assert await as_role(conn, "authenticated", shown, ALICE) == "pending 200"
    for stranger in (str(uuid.uuid4()), None):
        assert await as_role(conn, "authenticated", OWN_ORDERS, stranger) == []
        assert await as_role(conn, "authenticated", OWN_LINES, stranger) == []


async def test_a_signed_in_user_reads_no_one_elses_bookkeeping_and_writes_nothing(
    migrated: tuple[str, asyncpg.Connection],
) -> None:
    _, conn = migrated
    alice = await place_for(conn, ALICE, 1)
    refused = [
        "select count(*) from (select * from public.orders) o",
        "select count(caller) from public.orders",
        "select count(idempotency_key) from public.orders",
        "select count(request_hash) from public.orders",
        "select count(*) from public.products",
        "select count(*) from public.stock_events",
        "select count(*) from public.api_keys",
        f"with w as (update public.orders set status = 'confirmed' where id = '{alice}'"
        " returning 1) select count(*) from w",
        f"with w as (delete from public.orders where id = '{alice}' returning 1)"
        " select count(*) from w",
        "insert into public.orders (request_hash, node_id, expires_at, customer_id)"
        f" values ('x', 'x', now(), '{ALICE}') returning 1",
        f"with w as (update public.order_items set quantity = 9 where order_id = '{alice}'"
        " returning 1) select count(*) from w",
        f"with w as (delete from public.order_items where order_id = '{alice}' returning 1)"
        " select count(*) from w",
        "insert into public.order_items (order_id, line, product_id, sku, quantity,"
        f" unit_price_cents) select '{alice}', 9, id, sku, 1, 0 from public.products returning 1",
        f"select public.get_order('{alice}')",
        f"select public.cancel_order('{alice}')",
        """select public.place_order('[{"sku": "ROLE-1", "quantity": 1}]')""",
    ]
    for sql in refused:
        assert await as_role(conn, "authenticated", sql, ALICE) == "42501", sql
    assert await conn.fetchval("select status from public.orders where id = $1", alice) == (
        "pending"
    )


async def test_the_browser_roles_hold_only_select_on_orders_and_their_lines(
    migrated: tuple[str, asyncpg.Connection],
) -> None:
    _, conn = migrated
    grants = await conn.fetch(
        "select grantee, table_name, privilege_type, array_agg(column_name::text order by"
        " column_name) as columns from information_schema.column_privileges"
        " where table_schema = 'public' and grantee in ('anon', 'authenticated')"
        " group by 1, 2, 3 order by 1, 2, 3"
    )
    assert [tuple(row) for row in grants] == [
        ("authenticated", "order_items", "SELECT",
         ["line", "order_id", "product_id", "quantity", "refunded_quantity", "sku",
          "unit_price_cents"]),
        ("authenticated", "orders", "SELECT", ORDER_COLUMNS),
    ]  # fmt: skip
    tables = await conn.fetch(
        "select grantee, table_name, privilege_type from information_schema.role_table_grants"
        " where table_schema = 'public' and grantee in ('anon', 'authenticated')"
    )
    assert [tuple(row) for row in tables] == [("authenticated", "order_items", "SELECT")]
    policies = await conn.fetch(
        "select tablename, cmd, roles::text[] as roles from pg_policies"
        " where schemaname = 'public' order by tablename"
    )
    assert [tuple(row) for row in policies] == [
        ("order_items", "SELECT", ["authenticated"]),
        ("orders", "SELECT", ["authenticated"]),
    ]


async def test_anon_sees_no_order_even_with_a_users_claims(
    migrated: tuple[str, asyncpg.Connection],
) -> None:
    _, conn = migrated
    await place_for(conn, ALICE, 1)
    assert await as_role(conn, "anon", OWN_ORDERS, ALICE) == "42501"
    assert await as_role(conn, "anon", OWN_LINES, ALICE) == "42501"


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
