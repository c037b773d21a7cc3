-- OrderFlow schema: the catalog, orders and the append-only stock ledger.
-- Stock only ever changes through the functions of the next migration.

-- Roles that a Supabase project already has; created here when missing so the
-- same migrations run on a plain Postgres.
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

-- Helpers that are not part of the API live outside the schema PostgREST exposes.
create schema if not exists private;
revoke all on schema private from public;

create table public.products (
  id bigint generated always as identity primary key,
  sku text not null
    constraint products_sku_format check (sku ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
  name text not null
    constraint products_name_length check (char_length(name) between 1 and 200),
  price_cents bigint not null
    constraint products_price_range check (price_cents between 0 and 100000000000),
  on_hand integer not null default 0
    constraint products_on_hand_nonnegative check (on_hand >= 0),
  reserved integer not null default 0,
  available integer generated always as (on_hand - reserved) stored,
  low_stock_threshold integer not null default 5
    constraint products_threshold_nonnegative check (low_stock_threshold >= 0),
  version bigint not null default 1,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  deleted_at timestamptz,
  constraint products_reserved_within_on_hand check (reserved between 0 and on_hand)
);
comment on table public.products is
  'The catalog. Deleted products are kept (deleted_at) for the ledger and order history.';
-- A SKU is unique among live products; a deleted product frees its SKU.
create unique index products_live_sku on public.products (sku) where deleted_at is null;

create table public.orders (
  id uuid primary key default gen_random_uuid(),
  status text not null default 'pending'
    constraint orders_status check (status in ('pending', 'confirmed', 'cancelled', 'expired')),
  customer_id text constraint orders_customer_id_length check (char_length(customer_id) <= 100),
  idempotency_key text unique
    constraint orders_idempotency_key_length check (char_length(idempotency_key) between 1 and 255),
  request_hash text not null,
  subtotal_cents bigint not null default 0,
  fee_cents bigint not null default 0,
  total_cents bigint not null default 0,
  node_id text not null,
  expires_at timestamptz not null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index orders_due on public.orders (expires_at) where status = 'pending';
create index orders_by_customer on public.orders (customer_id, created_at desc, id desc);
create index orders_by_time on public.orders (created_at desc, id desc);

create table public.order_items (
  order_id uuid not null references public.orders on delete cascade,
  line integer not null,
  product_id bigint not null references public.products,
  sku text not null,
  quantity integer not null constraint order_items_quantity_positive check (quantity > 0),
  unit_price_cents bigint not null,
  primary key (order_id, line)
);
create index order_items_product on public.order_items (product_id);

-- The ledger: one row per change of one product, in the same transaction as
-- the change. txid orders rows for the catch-up cursor (see stock_events_since).
create table public.stock_events (
  seq bigint generated always as identity primary key,
  product_id bigint not null references public.products,
  sku text not null,
  delta_on_hand integer not null,
  delta_reserved integer not null,
  on_hand integer not null,
  reserved integer not null,
  version bigint not null,
  reason text not null constraint stock_events_reason check (reason in (
    'created', 'updated', 'deleted',
    'restock', 'damage', 'count', 'return', 'correction', 'set',
    'reserved', 'sold', 'released', 'expired'
  )),
  order_id uuid references public.orders,
  node_id text not null,
  txid xid8 not null default pg_current_xact_id(),
  created_at timestamptz not null default clock_timestamp()
);
create index stock_events_by_product on public.stock_events (product_id, seq);
create index stock_events_by_sku on public.stock_events (sku, seq desc);
create index stock_events_by_txid on public.stock_events (txid, seq);

create function private.forbid_ledger_rewrite() returns trigger
language plpgsql set search_path = '' as $$
begin
  raise exception using
    errcode = 'PT409', message = 'LEDGER_APPEND_ONLY',
    hint = 'stock_events is append-only', detail = '{}';
end
$$;

create trigger stock_events_append_only
  before update or delete or truncate on public.stock_events
  for each statement execute function private.forbid_ledger_rewrite();

-- Supabase exposes the public schema over its API: no row is readable or
-- writable there without a policy, and no policy is defined. service_role
-- (the nodes) bypasses RLS.
alter table public.products enable row level security;
alter table public.orders enable row level security;
alter table public.order_items enable row level security;
alter table public.stock_events enable row level security;

revoke all on public.products, public.orders, public.order_items, public.stock_events
  from public, anon, authenticated;
grant select on public.products, public.orders, public.order_items, public.stock_events
  to service_role;
