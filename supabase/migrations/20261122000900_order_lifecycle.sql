-- The order lifecycle after the reservation: payment, refunds, receipts and
-- the events that announce each step.
--
-- * Every state change of an order appends an order_events row in the same
--   transaction as the change (the outbox). A relay moves committed rows to a
--   Redis Stream; workers consume them and make their effects idempotent by
--   (consumer, event_id) in processed_events, written in the effect's own
--   transaction.
-- * stock.low is in the same outbox: a product whose available stock falls
--   under its threshold announces it once, and again only after it has risen
--   back above the threshold by a margin (hysteresis).
-- * Payment outcomes, refunds, notifications and webhook deliveries are
--   functions here, like every other change.

-- Tables --------------------------------------------------------------------

create table public.customers (
  id text primary key constraint customers_id_length check (char_length(id) between 1 and 100),
  email text constraint customers_email_length check (char_length(email) <= 320),
  name text constraint customers_name_length check (char_length(name) <= 200),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.customers is
  'Who orders: the Supabase Auth user id (sub) when signed in.';

alter table public.orders drop constraint orders_status;
alter table public.orders add constraint orders_status check (status in (
  'pending', 'confirmed', 'cancelled', 'expired', 'refunded', 'partially_refunded'));
alter table public.orders
  add column payment_method text
    constraint orders_payment_method_format check (payment_method ~ '^[a-z][a-z0-9_]{0,31}$'),
  add column payment_ref text
    constraint orders_payment_ref_length check (char_length(payment_ref) between 1 and 200),
  add column paid_cents bigint not null default 0,
  add column refunded_cents bigint not null default 0,
  add column cancel_reason text,
  add constraint orders_refund_within_paid check (refunded_cents between 0 and paid_cents);
create unique index orders_payment_ref on public.orders (payment_ref) where payment_ref is not null;

alter table public.order_items
  add column refunded_quantity integer not null default 0,
  add constraint order_items_refund_within_quantity
    check (refunded_quantity between 0 and quantity);

alter table public.products add column low_alerted boolean not null default false;

create table public.order_events (
  seq bigint generated always as identity primary key,
  event_id uuid not null unique default gen_random_uuid(),
  type text not null constraint order_events_type check (type in (
    'order.placed', 'payment.succeeded', 'payment.failed', 'order.confirmed',
    'order.cancelled', 'order.expired', 'order.refunded', 'notification.sent', 'stock.low')),
  order_id uuid references public.orders,
  sku text,
  at timestamptz not null default now(),
  node text not null,
  body jsonb not null default '{}',
  relayed_at timestamptz,
  constraint order_events_subject check ((order_id is null) <> (type <> 'stock.low'))
);
create index order_events_unrelayed on public.order_events (seq) where relayed_at is null;
create index order_events_by_order on public.order_events (order_id, seq);

-- Which consumer has applied which event: an effect and its row commit together.
create table public.processed_events (
  consumer text not null,
  event_id uuid not null,
  processed_at timestamptz not null default now(),
  primary key (consumer, event_id)
);

create table public.dead_letters (
  id bigint generated always as identity primary key,
  consumer text not null,
  event_id uuid,
  stream_id text not null,
  payload jsonb not null,
  error text not null,
  attempts integer not null,
  created_at timestamptz not null default now(),
  replayed_at timestamptz
);
create index dead_letters_waiting on public.dead_letters (id) where replayed_at is null;

-- The relay's lease: one node at a time moves the outbox to the stream.
create table public.relay_leases (
  name text primary key,
  holder text not null,
  expires_at timestamptz not null
);

create table public.refunds (
  id uuid primary key default gen_random_uuid(),
  order_id uuid not null references public.orders,
  caller text not null,
  idempotency_key text
    constraint refunds_idempotency_key_length check (char_length(idempotency_key) between 1 and 255),
  request_hash text not null,
  items jsonb not null,
  restock boolean not null,
  reason text not null constraint refunds_reason_length check (char_length(reason) between 1 and 500),
  subtotal_cents bigint not null,
  fee_cents bigint not null,
  total_cents bigint not null,
  node_id text not null,
  created_at timestamptz not null default now(),
  constraint refunds_caller_idempotency_key_key unique (caller, idempotency_key)
);
create index refunds_by_order on public.refunds (order_id, created_at);

create table public.notifications (
  id uuid primary key default gen_random_uuid(),
  event_id uuid not null unique,
  order_id uuid not null references public.orders,
  channel text not null default 'email',
  recipient text,
  subject text not null,
  receipt text,
  status text not null default 'sending'
    constraint notifications_status check (status in ('sending', 'sent', 'skipped')),
  created_at timestamptz not null default now(),
  sent_at timestamptz
);

create table public.webhook_endpoints (
  id uuid primary key default gen_random_uuid(),
  url text not null constraint webhook_endpoints_url check (
    url ~ '^https?://[^\s]+$' and char_length(url) <= 2000),
  event_types text[] not null constraint webhook_endpoints_types check (cardinality(event_types) > 0),
  secret text not null,
  description text constraint webhook_endpoints_description_length
    check (char_length(description) <= 200),
  created_at timestamptz not null default now(),
  disabled_at timestamptz
);

create table public.webhook_deliveries (
  id uuid primary key default gen_random_uuid(),
  endpoint_id uuid not null references public.webhook_endpoints,
  event_id uuid not null,
  event_type text not null,
  status text not null default 'pending'
    constraint webhook_deliveries_status check (status in ('pending', 'delivered', 'dead')),
  attempts integer not null default 0,
  last_status_code integer,
  last_error text,
  created_at timestamptz not null default now(),
  delivered_at timestamptz,
  constraint webhook_deliveries_once unique (endpoint_id, event_id)
);
create index webhook_deliveries_by_time on public.webhook_deliveries (created_at desc);

alter table public.customers enable row level security;
alter table public.order_events enable row level security;
alter table public.processed_events enable row level security;
alter table public.dead_letters enable row level security;
alter table public.relay_leases enable row level security;
alter table public.refunds enable row level security;
alter table public.notifications enable row level security;
alter table public.webhook_endpoints enable row level security;
alter table public.webhook_deliveries enable row level security;
revoke all on public.customers, public.order_events, public.processed_events,
  public.dead_letters, public.relay_leases, public.refunds, public.notifications,
  public.webhook_endpoints, public.webhook_deliveries
  from public, anon, authenticated;
-- As 20261122000400_sequence_privileges.sql: Supabase's default privileges
-- would let the browser roles draw from the new identity sequences.
revoke all on sequence public.order_events_seq_seq, public.dead_letters_id_seq
  from public, anon, authenticated;
grant select on public.customers, public.order_events, public.processed_events,
  public.dead_letters, public.refunds, public.notifications, public.webhook_deliveries
  to service_role;

-- Events --------------------------------------------------------------------

create function private.event_json(e public.order_events) returns jsonb
language sql immutable set search_path = '' as $$
  select jsonb_build_object(
    'event_id', e.event_id, 'seq', e.seq, 'type', e.type, 'order_id', e.order_id,
    'sku', e.sku, 'at', e.at, 'node', e.node, 'body', e.body)
$$;

-- Appends one event to the outbox, in the caller's transaction.
create function private.emit(
  p_type text, p_order_id uuid, p_node text, p_body jsonb default '{}'
) returns void
language sql set search_path = '' as $$
  insert into public.order_events (type, order_id, node, body)
  values (p_type, p_order_id, coalesce(p_node, 'unknown'), coalesce(p_body, '{}'))
$$;

-- stock.low, with hysteresis: announced when available stock falls under the
-- threshold, re-armed once it is back at threshold + max(1, threshold / 5).
create function private.watch_low_stock() returns trigger
language plpgsql set search_path = '' as $$
begin
  if not old.low_alerted then
    new.low_alerted := true;
    insert into public.order_events (type, sku, node, body)
    values ('stock.low', new.sku,
            coalesce(nullif(current_setting('orderflow.node', true), ''), 'database'),
            jsonb_build_object('sku', new.sku, 'name', new.name,
                               'available', new.on_hand - new.reserved,
                               'threshold', new.low_stock_threshold));
  else
    new.low_alerted := false;
  end if;
  return new;
end
$$;

create trigger products_low_stock
  before update on public.products
  for each row
  when ((not old.low_alerted and new.deleted_at is null
         and new.on_hand - new.reserved < new.low_stock_threshold)
     or (old.low_alerted
         and new.on_hand - new.reserved
             >= new.low_stock_threshold + greatest(1, new.low_stock_threshold / 5)))
  execute function private.watch_low_stock();

create function private.refund_json(r public.refunds) returns jsonb
language sql immutable set search_path = '' as $$
  select jsonb_build_object(
    'id', r.id, 'order_id', r.order_id, 'items', r.items, 'restock', r.restock,
    'reason', r.reason, 'subtotal_cents', r.subtotal_cents, 'fee_cents', r.fee_cents,
    'total_cents', r.total_cents, 'created_at', r.created_at)
$$;

-- The order document grows its payment and refunds.
create or replace function private.order_json(p_order_id uuid) returns jsonb
language sql stable set search_path = '' as $$
  select jsonb_build_object(
    'id', o.id, 'status', o.status, 'customer_id', o.customer_id,
    'items', coalesce((
      select jsonb_agg(jsonb_build_object(
        'sku', i.sku, 'quantity', i.quantity, 'unit_price_cents', i.unit_price_cents,
        'line_total_cents', i.quantity * i.unit_price_cents,
        'refunded_quantity', i.refunded_quantity) order by i.line)
      from public.order_items i where i.order_id = o.id), '[]'),
    'subtotal_cents', o.subtotal_cents, 'fee_cents', o.fee_cents,
    'total_cents', o.total_cents, 'node_id', o.node_id, 'expires_at', o.expires_at,
    'created_at', o.created_at, 'updated_at', o.updated_at,
    'payment_method', o.payment_method, 'paid_cents', o.paid_cents,
    'refunded_cents', o.refunded_cents, 'cancel_reason', o.cancel_reason,
    'refunds', coalesce((
      select jsonb_agg(private.refund_json(r) order by r.created_at, r.id)
        from public.refunds r where r.order_id = o.id), '[]'))
  from public.orders o
  where o.id = p_order_id
$$;


-- Settling an order announces it; a cancellation says why.
drop function private.settle_order(uuid, text, text);
create function private.settle_order(
  p_order_id uuid, p_status text, p_node text, p_reason text default null
) returns jsonb
language plpgsql set search_path = '' as $$
declare
  v_changes jsonb := '[]';
  v_sign integer := case p_status when 'confirmed' then -1 else 0 end;
  v_reason text := case p_status
    when 'confirmed' then 'sold' when 'cancelled' then 'released' else 'expired' end;
  r record;
begin
  perform set_config('orderflow.node', coalesce(p_node, ''), true);
  perform 1 from public.products
   where id in (select product_id from public.order_items where order_id = p_order_id)
   order by id
   for update;
  for r in
    select product_id, sum(quantity)::integer as quantity
      from public.order_items where order_id = p_order_id
     group by product_id order by product_id
  loop
    v_changes := v_changes || private.move_stock(
      r.product_id, v_sign * r.quantity, -r.quantity, v_reason, p_order_id, p_node);
  end loop;
  update public.orders
     set status = p_status, updated_at = now(),
         paid_cents = case when p_status = 'confirmed' then total_cents else paid_cents end,
         cancel_reason = case when p_status = 'cancelled' then coalesce(p_reason, 'cancelled')
                              when p_status = 'expired' then 'hold_expired' end
   where id = p_order_id;
  perform private.emit('order.' || p_status, p_order_id, p_node,
    case when p_status = 'confirmed' then '{}'::jsonb
         else jsonb_build_object('reason', coalesce(p_reason, case p_status
                when 'expired' then 'hold_expired' else 'cancelled' end)) end);
  return v_changes;
end
$$;

-- place_orders as 20261122000800_group_commit.sql left it, with each placed
-- order announced in the same statement that writes it, its payment method
-- kept, and its signed-in customer remembered.
create or replace function private.place_one(
  p_order jsonb, p_stock jsonb, p_node text, p_hold_seconds integer, p_fee_bps integer
) returns jsonb
language plpgsql set search_path = '' set plan_cache_mode = force_generic_plan as $$
declare
  v_items jsonb := p_order -> 'items';
  v_customer text := p_order ->> 'customer_id';
  v_key text := p_order ->> 'idempotency_key';
  v_caller text := coalesce(p_order ->> 'caller', 'anonymous');
  v_method text := p_order ->> 'payment_method';
  v_hash text := '';
  v_ids bigint[];
  v_quantities integer[];
  v_unknown jsonb;
  v_short jsonb;
  v_subtotal bigint;
  v_fee bigint;
  v_result jsonb;
begin
  if v_key is not null then
    v_hash := encode(sha256(convert_to(
      jsonb_build_object('items', v_items, 'customer_id', v_customer)::text
      || coalesce(' ' || v_method, ''), 'UTF8')), 'hex');
    v_result := private.replayed_order(v_caller, v_key, v_hash);
    if v_result is not null then
      return v_result;
    end if;
  end if;

  -- The lines summed per SKU, against the stock the batch has left.
  -- (A sum past what an integer holds is past any stock: out of stock, below.)
  select array_agg(s.id order by s.id),
         array_agg(least(l.quantity, 2147483647)::integer order by s.id),
         jsonb_agg(l.sku order by l.sku) filter (where s.id is null),
         jsonb_agg(jsonb_build_object(
           'sku', l.sku, 'requested', l.quantity, 'available', s.available) order by l.sku)
           filter (where l.quantity > s.available),
         sum(l.quantity * s.price)
    into v_ids, v_quantities, v_unknown, v_short, v_subtotal
    from (select x ->> 'sku' as sku, sum((x ->> 'quantity')::bigint) as quantity
            from jsonb_array_elements(v_items) x group by 1) l
    cross join lateral (
      select (p_stock -> l.sku ->> 0)::bigint as id, (p_stock -> l.sku ->> 1)::bigint as available,
             (p_stock -> l.sku ->> 2)::bigint as price) s;
  if v_unknown is not null then
    return private.error_json(422, 'UNKNOWN_SKU', 'the order names products that do not exist',
                              jsonb_build_object('skus', v_unknown));
  end if;
  if v_short is not null then
    return private.error_json(409, 'OUT_OF_STOCK', 'not enough stock for every line',
                              jsonb_build_object('lines', v_short));
  end if;
  v_fee := round(v_subtotal * p_fee_bps / 10000.0);

  -- The order, its lines, the held units, their ledger rows and the order's
  -- event, in one statement; the documents are built from what it wrote (a
  -- statement does not see its own writes in the tables). Nothing is written
  -- when another transaction placed this caller's key first.
  with placed as (
    insert into public.orders (
      caller, idempotency_key, request_hash, customer_id, node_id, expires_at,
      subtotal_cents, fee_cents, total_cents, payment_method)
    values (v_caller, v_key, v_hash, v_customer, p_node,
            now() + make_interval(secs => p_hold_seconds), v_subtotal, v_fee,
            v_subtotal + v_fee, v_method)
    on conflict (caller, idempotency_key) do nothing
    returning *
  ), lines as (
    insert into public.order_items (order_id, line, product_id, sku, quantity, unit_price_cents)
    select o.id, x.line, (p_stock -> (x.item ->> 'sku') ->> 0)::bigint, x.item ->> 'sku',
           (x.item ->> 'quantity')::integer, (p_stock -> (x.item ->> 'sku') ->> 2)::bigint
      from placed o, jsonb_array_elements(v_items) with ordinality as x(item, line)
    returning *
  ), moved as (
    update public.products p
       set reserved = p.reserved + l.quantity, version = p.version + 1, updated_at = now()
      from unnest(v_ids, v_quantities) as l(id, quantity), placed o
     where p.id = l.id
    returning p, l.quantity, o.id as order_id
  ), logged as (
    insert into public.stock_events (
      product_id, sku, delta_on_hand, delta_reserved, on_hand, reserved,
      version, reason, order_id, node_id)
    select (m.p).id, (m.p).sku, 0, m.quantity, (m.p).on_hand, (m.p).reserved,
           (m.p).version, 'reserved', m.order_id, p_node
      from moved m
     order by (m.p).id
    returning *
  ), announced as (
    insert into public.order_events (type, order_id, node, body)
    select 'order.placed', o.id, p_node, jsonb_build_object(
             'customer_id', o.customer_id, 'total_cents', o.total_cents,
             'payment_method', o.payment_method)
      from placed o
  )
  select jsonb_build_object(
           'order', jsonb_build_object(
             'id', o.id, 'status', o.status, 'customer_id', o.customer_id,
             'items', (select jsonb_agg(jsonb_build_object(
                         'sku', i.sku, 'quantity', i.quantity,
                         'unit_price_cents', i.unit_price_cents,
                         'line_total_cents', i.quantity * i.unit_price_cents,
                         'refunded_quantity', 0) order by i.line)
                         from lines i),
             'subtotal_cents', o.subtotal_cents, 'fee_cents', o.fee_cents,
             'total_cents', o.total_cents, 'node_id', o.node_id, 'expires_at', o.expires_at,
             'created_at', o.created_at, 'updated_at', o.updated_at,
             'payment_method', o.payment_method, 'paid_cents', 0, 'refunded_cents', 0,
             'cancel_reason', null, 'refunds', '[]'::jsonb),
           'changes', (select jsonb_agg(private.change_json(e, m.p) order by e.seq)
                         from logged e join moved m on (m.p).id = e.product_id),
           'replayed', false,
           'stock', (select jsonb_object_agg((m.p).sku, jsonb_build_array(
                              (m.p).id, (m.p).available, (m.p).price_cents))
                       from moved m))
    into v_result
    from placed o;
  -- No row: another transaction placed this caller's key first and has committed.
  return coalesce(v_result, private.replayed_order(v_caller, v_key, v_hash));
end
$$;

-- An order's shape, now with its payment method's.
create or replace function private.order_shape_problem(p_order jsonb, p_max_lines integer)
returns jsonb
language plpgsql immutable set search_path = '' as $$
declare
  v_items jsonb := case when jsonb_typeof(p_order) = 'object' then p_order -> 'items' end;
begin
  if jsonb_typeof(v_items) is distinct from 'array' or jsonb_array_length(v_items) = 0 then
    return private.error_json(422, 'INVALID_INPUT', 'items must be a non-empty array');
  end if;
  if jsonb_array_length(v_items) > p_max_lines then
    return private.error_json(422, 'TOO_MANY_LINES',
      format('an order has at most %s lines', p_max_lines),
      jsonb_build_object('max_lines', p_max_lines));
  end if;
  if exists (select 1 from jsonb_array_elements(v_items) x where not private.valid_line(x)) then
    return private.error_json(422, 'INVALID_INPUT',
      'each item needs a sku and a whole quantity from 1 to 2147483647');
  end if;
  if (jsonb_typeof(p_order -> 'customer_id') not in ('string', 'null')
      or char_length(p_order ->> 'customer_id') > 100
      or jsonb_typeof(p_order -> 'idempotency_key') not in ('string', 'null')
      or char_length(p_order ->> 'idempotency_key') not between 1 and 255
      or jsonb_typeof(p_order -> 'caller') not in ('string', 'null')
      or char_length(p_order ->> 'caller') not between 1 and 200
      or jsonb_typeof(p_order -> 'payment_method') not in ('string', 'null')
      or (p_order ->> 'payment_method') !~ '^[a-z][a-z0-9_]{0,31}$') then
    return private.error_json(422, 'INVALID_INPUT',
      'customer_id, idempotency_key, caller and payment_method are strings of a bounded form');
  end if;
  return null;
end
$$;

-- The batch names its node for the low-stock events its updates announce.
create or replace function public.place_orders(
  p_orders jsonb, p_node text default null, p_hold_seconds integer default 900,
  p_fee_bps integer default 0, p_max_lines integer default 100
) returns jsonb
language plpgsql security definer set search_path = '' set plan_cache_mode = force_generic_plan
as $$
declare
  v_node text := coalesce(p_node, 'unknown');
  v_skus text[];
  v_stock jsonb;  -- sku -> [id, available, price_cents], as the batch has left it
  v_results jsonb := '[]';
  v_order jsonb;
  v_result jsonb;
begin
  if jsonb_typeof(p_orders) is distinct from 'array' then
    perform private.fail(422, 'INVALID_INPUT', 'orders must be an array');
  end if;
  perform set_config('orderflow.node', v_node, true);

  select coalesce(array_agg(distinct x ->> 'sku'), '{}') into v_skus
    from jsonb_array_elements(p_orders) o,
         jsonb_array_elements(case jsonb_typeof(o -> 'items')
                                when 'array' then o -> 'items' else '[]' end) x
   where jsonb_typeof(x -> 'sku') = 'string';
  select coalesce(jsonb_object_agg(l.sku, jsonb_build_array(l.id, l.available, l.price_cents)),
                  '{}')
    into v_stock
    from (select p.id, p.sku, p.available, p.price_cents
            from public.products p
           where p.deleted_at is null and p.sku = any(v_skus)
           order by p.id
             for update) l;

  for v_order in select * from jsonb_array_elements(p_orders) loop
    v_result := coalesce(private.order_shape_problem(v_order, p_max_lines),
                         private.place_one(v_order, v_stock, v_node, p_hold_seconds, p_fee_bps));
    if v_result ? 'stock' then
      v_stock := v_stock || (v_result -> 'stock');
      v_result := v_result - 'stock';
    end if;
    v_results := v_results || jsonb_build_array(v_result);
  end loop;
  return v_results;
end
$$;

drop function public.place_order(jsonb, text, text, text, integer, integer, integer, text);
create function public.place_order(
  p_items jsonb, p_customer_id text default null, p_idempotency_key text default null,
  p_node text default null, p_hold_seconds integer default 900,
  p_fee_bps integer default 0, p_max_lines integer default 100,
  p_caller text default null, p_payment_method text default null
) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  v_result jsonb := public.place_orders(
    jsonb_build_array(jsonb_build_object(
      'items', p_items, 'customer_id', p_customer_id,
      'idempotency_key', p_idempotency_key, 'caller', p_caller,
      'payment_method', p_payment_method)),
    p_node, p_hold_seconds, p_fee_bps, p_max_lines) -> 0;
  v_error jsonb := v_result -> 'error';
begin
  if v_error is not null then
    perform private.fail((v_error ->> 'status')::integer, v_error ->> 'code',
                         v_error ->> 'message', v_error -> 'details');
  end if;
  return v_result;
end
$$;

drop function public.cancel_order(uuid, text, text);
create function public.cancel_order(
  p_order_id uuid, p_node text default null, p_customer_id text default null,
  p_reason text default null
) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  v public.orders := private.lock_pending_order(p_order_id, 'cancelled', p_customer_id);
  v_changes jsonb := private.settle_order(
    v.id, 'cancelled', p_node,
    coalesce(p_reason, case when p_customer_id is null then 'cancelled_by_staff'
                            else 'cancelled_by_customer' end));
begin
  return jsonb_build_object('order', private.order_json(v.id), 'changes', v_changes);
end
$$;

-- Customers -----------------------------------------------------------------

-- The signed-in customer as Supabase Auth names them; a later sign-in updates
-- what it says (an empty value keeps what was known).
create function public.upsert_customer(
  p_id text, p_email text default null, p_name text default null
) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  v public.customers;
begin
  insert into public.customers (id, email, name)
  values (p_id, nullif(p_email, ''), nullif(p_name, ''))
  on conflict (id) do update
     set email = coalesce(excluded.email, public.customers.email),
         name = coalesce(excluded.name, public.customers.name),
         updated_at = case when (excluded.email, excluded.name)
                                is distinct from (public.customers.email, public.customers.name)
                           then now() else public.customers.updated_at end
  returning * into v;
  return jsonb_build_object('id', v.id, 'email', v.email, 'name', v.name,
                            'created_at', v.created_at);
end
$$;

create function public.get_customer(p_id text) returns jsonb
language sql stable security definer set search_path = '' as $$
  select jsonb_build_object('id', c.id, 'email', c.email, 'name', c.name,
                            'created_at', c.created_at)
    from public.customers c where c.id = p_id
$$;

-- The order's timeline, oldest first; with p_customer_id, only that customer's.
create function public.order_timeline(p_order_id uuid, p_customer_id text default null)
returns jsonb
language plpgsql stable security definer set search_path = '' as $$
begin
  if not exists (select 1 from public.orders
                  where id = p_order_id
                    and (p_customer_id is null or customer_id = p_customer_id)) then
    perform private.fail(404, 'NOT_FOUND', 'no such order',
                         jsonb_build_object('order_id', p_order_id));
  end if;
  return jsonb_build_object('items', coalesce((
    select jsonb_agg(private.event_json(e) order by e.seq)
      from public.order_events e where e.order_id = p_order_id), '[]'));
end
$$;

-- The outbox relay ----------------------------------------------------------

-- Takes or renews the relay lease for p_holder and returns the oldest events
-- not yet relayed; another holder's live lease answers {"leased": false}.
-- Each event says whether a webhook endpoint wants its type as it is relayed
-- (`webhooks`), so the webhooks consumer asks the database only for those.
create function public.claim_outbox(
  p_holder text, p_limit integer default 100, p_lease_seconds integer default 10
) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  v_holder text;
  v_hooked text[];  -- the event types some enabled webhook endpoint wants
begin
  insert into public.relay_leases (name, holder, expires_at)
  values ('outbox', p_holder, now() + make_interval(secs => p_lease_seconds))
  on conflict (name) do update
     set holder = excluded.holder, expires_at = excluded.expires_at
   where public.relay_leases.holder = excluded.holder
      or public.relay_leases.expires_at < now()
  returning holder into v_holder;
  if v_holder is null then
    return jsonb_build_object('leased', false, 'events', '[]'::jsonb);
  end if;
  select coalesce(array_agg(distinct t), '{}') into v_hooked
    from public.webhook_endpoints w, unnest(w.event_types) t
   where w.disabled_at is null;
  return jsonb_build_object('leased', true, 'events', coalesce((
    select jsonb_agg(private.event_json(e)
                     || jsonb_build_object('webhooks', e.type = any(v_hooked)) order by e.seq)
      from (select * from public.order_events
             where relayed_at is null
             order by seq
             limit private.page_size(p_limit, 100, 1000)) e), '[]'));
end
$$;

-- Marks relayed what the lease holder has put on the stream.
create function public.mark_relayed(p_holder text, p_seqs bigint[]) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  v_count integer;
begin
  if not exists (select 1 from public.relay_leases
                  where name = 'outbox' and holder = p_holder) then
    perform private.fail(409, 'LEASE_LOST', 'another node holds the relay lease');
  end if;
  update public.order_events set relayed_at = now()
   where seq = any(p_seqs) and relayed_at is null;
  get diagnostics v_count = row_count;
  return jsonb_build_object('relayed', v_count);
end
$$;

-- Payment -------------------------------------------------------------------

-- A payment's outcome, once per (consumer, event): 'succeeded' sells a pending
-- order's held units; on an order that is no longer pending (its hold
-- expired, or it was cancelled) the payment is refunded at once, so nothing
-- is sold twice. 'failed' releases a pending order's hold.
create function public.record_payment(
  p_order_id uuid, p_outcome text, p_consumer text, p_event_id uuid,
  p_ref text default null, p_node text default null, p_detail text default null
) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  v public.orders;
  v_changes jsonb := '[]';
begin
  if p_outcome not in ('succeeded', 'failed') then
    perform private.fail(422, 'INVALID_INPUT', 'a payment outcome is succeeded or failed');
  end if;
  insert into public.processed_events (consumer, event_id) values (p_consumer, p_event_id)
  on conflict do nothing;
  if not found then
    return jsonb_build_object('duplicate', true, 'order', private.order_json(p_order_id),
                              'changes', '[]'::jsonb);
  end if;
  select * into v from public.orders where id = p_order_id for update;
  if not found then
    perform private.fail(404, 'NOT_FOUND', 'no such order',
                         jsonb_build_object('order_id', p_order_id));
  end if;

  if p_outcome = 'failed' then
    perform private.emit('payment.failed', v.id, p_node,
      jsonb_build_object('ref', p_ref, 'detail', p_detail));
    if v.status = 'pending' then
      v_changes := private.settle_order(v.id, 'cancelled', p_node, 'payment_declined');
    end if;
  elsif v.paid_cents > 0 then
    -- Paid already (a second capture of the same order): refund this one whole.
    perform private.emit('payment.succeeded', v.id, p_node,
      jsonb_build_object('ref', p_ref, 'amount_cents', v.total_cents, 'duplicate', true));
    perform private.emit('order.refunded', v.id, p_node,
      jsonb_build_object('reason', 'duplicate_payment', 'total_cents', v.total_cents,
                         'ref', p_ref));
  else
    update public.orders
       set paid_cents = total_cents, payment_ref = coalesce(p_ref, payment_ref),
           updated_at = now()
     where id = v.id;
    perform private.emit('payment.succeeded', v.id, p_node,
      jsonb_build_object('ref', p_ref, 'amount_cents', v.total_cents));
    if v.status = 'pending' and v.expires_at > now() then
      v_changes := private.settle_order(v.id, 'confirmed', p_node);
    else
      -- Too late: the hold is gone (expired, or about to be), so is the sale.
      if v.status = 'pending' then
        v_changes := private.settle_order(v.id, 'expired', p_node);
      end if;
      perform private.refund_whole(v.id, 'paid_after_hold_released', p_node);
    end if;
  end if;
  return jsonb_build_object('duplicate', false, 'order', private.order_json(v.id),
                            'changes', v_changes);
end
$$;

-- A full refund of money only (nothing to restock: the units were released).
create function private.refund_whole(p_order_id uuid, p_reason text, p_node text)
returns void
language plpgsql set search_path = '' as $$
declare
  v public.orders;
  v_refund public.refunds;
begin
  select * into v from public.orders where id = p_order_id;
  insert into public.refunds (order_id, caller, request_hash, items, restock, reason,
                              subtotal_cents, fee_cents, total_cents, node_id)
  values (v.id, 'system', '', '[]', false, p_reason,
          v.subtotal_cents, v.fee_cents, v.paid_cents - v.refunded_cents,
          coalesce(p_node, 'unknown'))
  returning * into v_refund;
  update public.orders set refunded_cents = paid_cents, status = 'refunded', updated_at = now()
   where id = v.id;
  perform private.emit('order.refunded', v.id, p_node,
    jsonb_build_object('refund_id', v_refund.id, 'reason', p_reason,
                       'total_cents', v_refund.total_cents, 'restock', false));
end
$$;

-- Finds the order a provider's reference names (the webhook provider's case).
create function public.order_for_payment_ref(p_ref text) returns jsonb
language sql stable security definer set search_path = '' as $$
  select jsonb_build_object('order_id', o.id, 'status', o.status)
    from public.orders o where o.payment_ref = p_ref
$$;

-- Refunds -------------------------------------------------------------------

-- A full or partial refund of a confirmed (or partly refunded) order. Lines
-- default to everything not yet refunded; amounts come from the order's own
-- unit prices and fee rate, never past what was paid. With p_restock the
-- units go back on hand through the ledger (reason 'return').
create function public.refund_order(
  p_order_id uuid, p_items jsonb default null, p_restock boolean default false,
  p_reason text default null, p_idempotency_key text default null,
  p_caller text default null, p_node text default null
) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  v public.orders;
  v_caller text := coalesce(p_caller, 'anonymous');
  v_hash text := encode(sha256(convert_to(jsonb_build_object(
    'order_id', p_order_id, 'items', p_items, 'restock', p_restock,
    'reason', p_reason)::text, 'UTF8')), 'hex');
  v_existing public.refunds;
  v_lines jsonb;
  v_problem jsonb;
  v_subtotal bigint;
  v_fee bigint;
  v_total bigint;
  v_refund public.refunds;
  v_changes jsonb := '[]';
  r record;
begin
  if p_reason is null or char_length(p_reason) not between 1 and 500 then
    perform private.fail(422, 'INVALID_INPUT', 'a refund needs a reason of 1 to 500 characters');
  end if;
  if p_items is not null and (jsonb_typeof(p_items) <> 'array'
     or jsonb_array_length(p_items) = 0
     or exists (select 1 from jsonb_array_elements(p_items) x where not private.valid_line(x)))
  then
    perform private.fail(422, 'INVALID_INPUT',
      'items, when given, is a non-empty array of {sku, quantity}');
  end if;
  select * into v from public.orders where id = p_order_id for update;
  if not found then
    perform private.fail(404, 'NOT_FOUND', 'no such order',
                         jsonb_build_object('order_id', p_order_id));
  end if;
  if p_idempotency_key is not null then
    select * into v_existing from public.refunds
     where caller = v_caller and idempotency_key = p_idempotency_key;
    if found then
      if v_existing.request_hash <> v_hash then
        perform private.fail(409, 'IDEMPOTENCY_MISMATCH',
          'this Idempotency-Key was already used with a different request',
          jsonb_build_object('refund_id', v_existing.id));
      end if;
      return jsonb_build_object('refund', private.refund_json(v_existing),
        'order', private.order_json(v.id), 'changes', '[]'::jsonb, 'replayed', true);
    end if;
  end if;
  if v.status not in ('confirmed', 'partially_refunded') then
    perform private.fail(409, 'INVALID_TRANSITION',
      format('a %s order cannot be refunded', v.status),
      jsonb_build_object('order_id', v.id, 'status', v.status, 'to', 'refunded'));
  end if;

  -- Per SKU: what is asked (all that is left when no items are named) and
  -- what is left to refund.
  with asked as (
    select x ->> 'sku' as sku, sum((x ->> 'quantity')::bigint) as quantity
      from jsonb_array_elements(p_items) x group by 1
  ), held as (
    select i.sku, min(i.product_id) as product_id,
           sum(i.quantity - i.refunded_quantity) as left_quantity,
           max(i.unit_price_cents) as unit_price_cents
      from public.order_items i where i.order_id = v.id group by i.sku
  )
  select jsonb_agg(jsonb_build_object(
           'sku', coalesce(a.sku, h.sku),
           'quantity', coalesce(a.quantity, h.left_quantity),
           'left', coalesce(h.left_quantity, 0),
           'product_id', h.product_id,
           'unit_price_cents', h.unit_price_cents) order by coalesce(a.sku, h.sku))
    into v_lines
    from held h full join asked a on a.sku = h.sku
   where (p_items is null and h.left_quantity > 0) or a.sku is not null;

  select jsonb_agg(jsonb_build_object('sku', l ->> 'sku', 'requested', (l ->> 'quantity')::bigint,
                                      'refundable', (l ->> 'left')::bigint) order by l ->> 'sku')
    into v_problem
    from jsonb_array_elements(v_lines) l
   where (l ->> 'quantity')::bigint > (l ->> 'left')::bigint;
  if v_lines is null or v_problem is not null then
    perform private.fail(422, 'REFUND_TOO_LARGE',
      'a refund cannot return more than was bought and not yet refunded',
      jsonb_build_object('lines', coalesce(v_problem, '[]'::jsonb)));
  end if;

  select sum((l ->> 'quantity')::bigint * (l ->> 'unit_price_cents')::bigint) into v_subtotal
    from jsonb_array_elements(v_lines) l;
  -- The fee in the order's own proportion; the last refund takes what is left,
  -- so rounding never refunds more (or less) than was paid.
  if not exists (select 1 from jsonb_array_elements(v_lines) l
                  where (l ->> 'quantity')::bigint < (l ->> 'left')::bigint)
     and (select count(*) from jsonb_array_elements(v_lines))
         = (select count(distinct sku) from public.order_items
             where order_id = v.id and quantity > refunded_quantity) then
    v_total := v.paid_cents - v.refunded_cents;
    v_fee := v_total - v_subtotal;
  else
    v_fee := case when v.subtotal_cents = 0 then 0
                  else round(v_subtotal::numeric * v.fee_cents / v.subtotal_cents) end;
    v_total := least(v_subtotal + v_fee, v.paid_cents - v.refunded_cents);
    v_fee := v_total - v_subtotal;
  end if;

  insert into public.refunds (order_id, caller, idempotency_key, request_hash, items, restock,
                              reason, subtotal_cents, fee_cents, total_cents, node_id)
  values (v.id, v_caller, p_idempotency_key, v_hash,
          (select jsonb_agg(jsonb_build_object(
                    'sku', l ->> 'sku', 'quantity', (l ->> 'quantity')::bigint,
                    'unit_price_cents', (l ->> 'unit_price_cents')::bigint,
                    'amount_cents', (l ->> 'quantity')::bigint * (l ->> 'unit_price_cents')::bigint)
                  order by l ->> 'sku')
             from jsonb_array_elements(v_lines) l),
          p_restock, p_reason, v_subtotal, v_fee, v_total, coalesce(p_node, 'unknown'))
  returning * into v_refund;

  -- Mark the refunded units on the order's lines, first lines first.
  for r in select l ->> 'sku' as sku, (l ->> 'quantity')::integer as quantity,
                  (l ->> 'product_id')::bigint as product_id
             from jsonb_array_elements(v_lines) l order by 3
  loop
    perform private.mark_refunded_units(v.id, r.sku, r.quantity);
  end loop;
  if p_restock then
    perform set_config('orderflow.node', coalesce(p_node, ''), true);
    perform 1 from public.products
     where id in (select (l ->> 'product_id')::bigint from jsonb_array_elements(v_lines) l)
     order by id for update;
    for r in select (l ->> 'product_id')::bigint as product_id,
                    (l ->> 'quantity')::integer as quantity
               from jsonb_array_elements(v_lines) l order by 1
    loop
      v_changes := v_changes || private.move_stock(
        r.product_id, r.quantity, 0, 'return', v.id, p_node);
    end loop;
  end if;

  update public.orders
     set refunded_cents = refunded_cents + v_total,
         status = case when refunded_cents + v_total >= paid_cents
                        and not exists (select 1 from public.order_items
                                         where order_id = v.id and quantity > refunded_quantity)
                       then 'refunded' else 'partially_refunded' end,
         updated_at = now()
   where id = v.id;
  perform private.emit('order.refunded', v.id, p_node,
    jsonb_build_object('refund_id', v_refund.id, 'reason', p_reason,
                       'total_cents', v_total, 'restock', p_restock));
  return jsonb_build_object('refund', private.refund_json(v_refund),
    'order', private.order_json(v.id), 'changes', v_changes, 'replayed', false);
end
$$;

create function private.mark_refunded_units(p_order_id uuid, p_sku text, p_quantity integer)
returns void
language plpgsql set search_path = '' as $$
declare
  v_left integer := p_quantity;
  r record;
begin
  for r in select line, quantity - refunded_quantity as open
             from public.order_items
            where order_id = p_order_id and sku = p_sku and quantity > refunded_quantity
            order by line
  loop
    exit when v_left = 0;
    update public.order_items
       set refunded_quantity = refunded_quantity + least(v_left, r.open)
     where order_id = p_order_id and line = r.line;
    v_left := v_left - least(v_left, r.open);
  end loop;
end
$$;

-- Notifications -------------------------------------------------------------

-- Claims the notification for an event before it is sent: the first claim
-- answers {"claimed": true}; a later one sees what happened ({"claimed":
-- false, "status": ...}), so a redelivered event sends nothing twice. A claim
-- that is not the caller's says how old it is, so that a worker finding
-- another's claim still `sending` can tell a sender at work from one that
-- died between its claim and its finish, and send again only after the
-- claim idle time.
create function public.claim_notification(
  p_event_id uuid, p_order_id uuid, p_recipient text, p_subject text
) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  v public.notifications;
begin
  insert into public.notifications (event_id, order_id, recipient, subject)
  values (p_event_id, p_order_id, p_recipient, p_subject)
  on conflict (event_id) do nothing
  returning * into v;
  if v.id is not null then
    return jsonb_build_object('claimed', true, 'id', v.id);
  end if;
  select * into v from public.notifications where event_id = p_event_id;
  return jsonb_build_object('claimed', false, 'id', v.id, 'status', v.status,
                            'claimed_at', v.created_at,
                            'age_seconds', extract(epoch from now() - v.created_at));
end
$$;

-- The notification went out (or there was nobody to send it to): recorded
-- once, with its notification.sent event.
create function public.finish_notification(
  p_event_id uuid, p_status text, p_receipt text default null, p_node text default null
) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  v public.notifications;
begin
  if p_status not in ('sent', 'skipped') then
    perform private.fail(422, 'INVALID_INPUT', 'a notification is sent or skipped');
  end if;
  update public.notifications
     set status = p_status, receipt = coalesce(p_receipt, receipt), sent_at = now()
   where event_id = p_event_id and status = 'sending'
  returning * into v;
  if v.id is not null and p_status = 'sent' then
    perform private.emit('notification.sent', v.order_id, p_node,
      jsonb_build_object('notification_id', v.id, 'channel', v.channel,
                         'subject', v.subject, 'for_event', p_event_id));
  end if;
  return jsonb_build_object('finished', v.id is not null);
end
$$;

-- Dead letters --------------------------------------------------------------

create function public.add_dead_letter(
  p_consumer text, p_event_id uuid, p_stream_id text, p_payload jsonb, p_error text,
  p_attempts integer
) returns jsonb
language sql security definer set search_path = '' as $$
  insert into public.dead_letters (consumer, event_id, stream_id, payload, error, attempts)
  values (p_consumer, p_event_id, p_stream_id, p_payload, left(p_error, 2000), p_attempts)
  returning jsonb_build_object('id', id)
$$;

create function public.list_dead_letters(
  p_include_replayed boolean default false, p_limit integer default 100
) returns jsonb
language sql stable security definer set search_path = '' as $$
  select jsonb_build_object('items', coalesce(jsonb_agg(jsonb_build_object(
           'id', d.id, 'consumer', d.consumer, 'event_id', d.event_id,
           'stream_id', d.stream_id, 'payload', d.payload, 'error', d.error,
           'attempts', d.attempts, 'created_at', d.created_at,
           'replayed_at', d.replayed_at) order by d.id), '[]'))
    from (select * from public.dead_letters
           where p_include_replayed or replayed_at is null
           order by id limit private.page_size(p_limit, 100, 1000)) d
$$;

-- Takes dead letters back for replay (one, or every waiting one): they are
-- marked replayed and returned, for the caller to put on the stream again;
-- the webhook deliveries they had given up on are pending again.
create function public.take_dead_letters(p_id bigint default null) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  v_items jsonb;
begin
  if p_id is not null and not exists (
       select 1 from public.dead_letters where id = p_id and replayed_at is null) then
    perform private.fail(404, 'NOT_FOUND', 'no such dead letter waiting for a replay',
                         jsonb_build_object('id', p_id));
  end if;
  with taken as (
    update public.dead_letters set replayed_at = now()
     where replayed_at is null and (p_id is null or id = p_id)
    returning *
  )
  select jsonb_agg(jsonb_build_object(
           'id', t.id, 'consumer', t.consumer, 'event_id', t.event_id,
           'payload', t.payload) order by t.id)
    into v_items
    from taken t;
  -- A replayed event's webhook deliveries that had given up are owed again.
  update public.webhook_deliveries set status = 'pending'
   where status = 'dead'
     and event_id in (select (i ->> 'event_id')::uuid
                        from jsonb_array_elements(coalesce(v_items, '[]')) i
                       where i ->> 'consumer' = 'webhooks');
  return jsonb_build_object('items', coalesce(v_items, '[]'::jsonb));
end
$$;

-- Webhooks ------------------------------------------------------------------

create function private.webhook_endpoint_json(w public.webhook_endpoints) returns jsonb
language sql immutable set search_path = '' as $$
  select jsonb_build_object('id', w.id, 'url', w.url, 'event_types', to_jsonb(w.event_types),
                            'description', w.description, 'created_at', w.created_at,
                            'disabled_at', w.disabled_at)
$$;

create function public.create_webhook_endpoint(
  p_url text, p_event_types text[], p_secret text, p_description text default null
) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  v public.webhook_endpoints;
begin
  if exists (select 1 from unnest(p_event_types) t
              where t not in ('order.placed', 'payment.succeeded', 'payment.failed',
                              'order.confirmed', 'order.cancelled', 'order.expired',
                              'order.refunded', 'notification.sent', 'stock.low')) then
    perform private.fail(422, 'INVALID_INPUT', 'an event type is not one this server sends');
  end if;
  insert into public.webhook_endpoints (url, event_types, secret, description)
  values (p_url, p_event_types, p_secret, p_description)
  returning * into v;
  return private.webhook_endpoint_json(v);
end
$$;

create function public.list_webhook_endpoints() returns jsonb
language sql stable security definer set search_path = '' as $$
  select jsonb_build_object('items', coalesce(jsonb_agg(
           private.webhook_endpoint_json(w) order by w.created_at, w.id), '[]'))
    from public.webhook_endpoints w
$$;

create function public.disable_webhook_endpoint(p_id uuid) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  v public.webhook_endpoints;
begin
  update public.webhook_endpoints set disabled_at = coalesce(disabled_at, now())
   where id = p_id returning * into v;
  if v.id is null then
    perform private.fail(404, 'NOT_FOUND', 'no such webhook endpoint',
                         jsonb_build_object('id', p_id));
  end if;
  return private.webhook_endpoint_json(v);
end
$$;

-- The deliveries an event owes: one per enabled endpoint that wants its type,
-- created once however often the event is delivered to the webhook worker.
-- Returns the pending ones with what a sender needs (url and secret).
create function public.webhook_deliveries_for(p_event_id uuid, p_type text) returns jsonb
language plpgsql security definer set search_path = '' as $$
begin
  insert into public.webhook_deliveries (endpoint_id, event_id, event_type)
  select w.id, p_event_id, p_type from public.webhook_endpoints w
   where w.disabled_at is null and p_type = any(w.event_types)
  on conflict (endpoint_id, event_id) do nothing;
  return jsonb_build_object('items', coalesce((
    select jsonb_agg(jsonb_build_object(
             'id', d.id, 'endpoint_id', d.endpoint_id, 'url', w.url, 'secret', w.secret,
             'attempts', d.attempts) order by d.created_at, d.id)
      from public.webhook_deliveries d join public.webhook_endpoints w on w.id = d.endpoint_id
     where d.event_id = p_event_id and d.status = 'pending'), '[]'));
end
$$;

create function public.record_webhook_attempt(
  p_delivery_id uuid, p_status text, p_status_code integer default null,
  p_error text default null
) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  v public.webhook_deliveries;
begin
  if p_status not in ('pending', 'delivered', 'dead') then
    perform private.fail(422, 'INVALID_INPUT', 'a delivery is pending, delivered or dead');
  end if;
  update public.webhook_deliveries
     set attempts = attempts + 1, status = p_status, last_status_code = p_status_code,
         last_error = left(p_error, 2000),
         delivered_at = case when p_status = 'delivered' then now() end
   where id = p_delivery_id and status = 'pending'
  returning * into v;
  return jsonb_build_object('updated', v.id is not null);
end
$$;

create function public.list_webhook_deliveries(
  p_endpoint_id uuid default null, p_limit integer default 100
) returns jsonb
language sql stable security definer set search_path = '' as $$
  select jsonb_build_object('items', coalesce(jsonb_agg(jsonb_build_object(
           'id', d.id, 'endpoint_id', d.endpoint_id, 'event_id', d.event_id,
           'event_type', d.event_type, 'status', d.status, 'attempts', d.attempts,
           'last_status_code', d.last_status_code, 'last_error', d.last_error,
           'created_at', d.created_at, 'delivered_at', d.delivered_at)
           order by d.created_at desc, d.id), '[]'))
    from (select * from public.webhook_deliveries
           where p_endpoint_id is null or endpoint_id = p_endpoint_id
           order by created_at desc, id
           limit private.page_size(p_limit, 100, 1000)) d
$$;

-- Lifecycle figures for /metrics and the dashboard.
create function public.lifecycle_stats() returns jsonb
language sql stable security definer set search_path = '' as $$
  select jsonb_build_object(
    'outbox_pending', (select count(*) from public.order_events where relayed_at is null),
    'outbox_oldest_seconds', coalesce((
      select extract(epoch from now() - min(at)) from public.order_events
       where relayed_at is null), 0),
    'dead_letters', (select count(*) from public.dead_letters where replayed_at is null))
$$;

-- API keys may carry the new scope (backend.auth.principal.SCOPES).
create or replace function private.api_key_scopes() returns text[]
language sql immutable set search_path = '' as $$
  select array['catalog:write', 'events:manage', 'keys:manage', 'ledger:read', 'metrics:read',
               'orders:manage', 'orders:read', 'orders:write']
$$;

-- Privileges, as 20261122000300_privileges.sql: only the nodes may call the
-- API functions; helpers are nobody's but their owner's.
do $$
declare
  f regprocedure;
begin
  for f in
    select p.oid::regprocedure
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where (n.nspname = 'public' and p.proname = any (array[
              'place_orders', 'place_order', 'cancel_order', 'upsert_customer',
              'get_customer', 'order_timeline', 'claim_outbox', 'mark_relayed',
              'record_payment', 'order_for_payment_ref', 'refund_order',
              'claim_notification', 'finish_notification', 'add_dead_letter',
              'list_dead_letters', 'take_dead_letters', 'create_webhook_endpoint',
              'list_webhook_endpoints', 'disable_webhook_endpoint',
              'webhook_deliveries_for', 'record_webhook_attempt',
              'list_webhook_deliveries', 'lifecycle_stats']))
        or n.nspname = 'private'
  loop
    execute format('revoke execute on function %s from public, anon, authenticated', f);
    if f::text not like 'private.%' then
      execute format('grant execute on function %s to service_role', f);
    end if;
  end loop;
end
$$;
