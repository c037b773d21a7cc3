-- Every change of stock is one call of one of these functions.
--
-- Conventions:
-- * Each public function is SECURITY DEFINER with an empty search_path and
--   returns jsonb, so asyncpg and PostgREST's /rpc see the same document.
-- * Mutations return {"changes": [...]} with one stock change per ledger row
--   they appended, in order, so the caller publishes exactly what changed.
-- * Errors are raised with SQLSTATE 'PT' || http_status (PostgREST turns that
--   into the HTTP status), the machine code as message, JSON details as
--   detail and a human sentence as hint.
-- * Products are locked in id order, orders before products, so concurrent
--   orders cannot deadlock.

-- Helpers ---------------------------------------------------------------

create function private.fail(
  p_status integer, p_code text, p_message text, p_details jsonb default '{}'
) returns void
language plpgsql set search_path = '' as $$
begin
  raise exception using
    errcode = 'PT' || p_status::text, message = p_code,
    detail = p_details::text, hint = p_message;
end
$$;

-- A page size from a caller's limit: its default when null, within 1..p_max.
create function private.page_size(p_limit integer, p_default integer, p_max integer)
returns integer
language sql immutable set search_path = '' as $$
  select greatest(1, least(coalesce(p_limit, p_default), p_max))
$$;

create function private.product_json(p public.products) returns jsonb
language sql stable set search_path = '' as $$
  select jsonb_build_object(
    'id', p.id, 'sku', p.sku, 'name', p.name, 'price_cents', p.price_cents,
    'on_hand', p.on_hand, 'reserved', p.reserved, 'available', p.available,
    'low_stock_threshold', p.low_stock_threshold, 'version', p.version,
    'created_at', p.created_at, 'updated_at', p.updated_at)
$$;

-- The shape of a stock change: the ledger row plus the product's catalog
-- fields. It is the Redis message, the WebSocket `stock` message and a
-- catch-up event alike. Writers render it from the product row they hold.
create function private.change_json(e public.stock_events, p public.products) returns jsonb
language sql immutable set search_path = '' as $$
  select jsonb_build_object(
    'sku', e.sku, 'product_id', e.product_id,
    'name', p.name, 'price_cents', p.price_cents,
    'low_stock_threshold', p.low_stock_threshold,
    'on_hand', e.on_hand, 'reserved', e.reserved, 'available', e.on_hand - e.reserved,
    'delta_on_hand', e.delta_on_hand, 'delta_reserved', e.delta_reserved,
    'version', e.version, 'seq', e.seq, 'reason', e.reason, 'order_id', e.order_id,
    'node', e.node_id, 'committed_at', e.created_at, 'deleted', e.reason = 'deleted')
$$;

create function private.order_json(p_order_id uuid) returns jsonb
language sql stable set search_path = '' as $$
  select jsonb_build_object(
    'id', o.id, 'status', o.status, 'customer_id', o.customer_id,
    'items', coalesce((
      select jsonb_agg(jsonb_build_object(
        'sku', i.sku, 'quantity', i.quantity, 'unit_price_cents', i.unit_price_cents,
        'line_total_cents', i.quantity * i.unit_price_cents) order by i.line)
      from public.order_items i where i.order_id = o.id), '[]'),
    'subtotal_cents', o.subtotal_cents, 'fee_cents', o.fee_cents,
    'total_cents', o.total_cents, 'node_id', o.node_id, 'expires_at', o.expires_at,
    'created_at', o.created_at, 'updated_at', o.updated_at)
  from public.orders o
  where o.id = p_order_id
$$;

-- Appends the ledger row for a product row that was just written.
create function private.log_change(
  v public.products, p_delta_on_hand integer, p_delta_reserved integer,
  p_reason text, p_order_id uuid, p_node text
) returns jsonb
language plpgsql set search_path = '' as $$
declare
  e public.stock_events;
begin
  insert into public.stock_events (
    product_id, sku, delta_on_hand, delta_reserved, on_hand, reserved,
    version, reason, order_id, node_id)
  values (
    v.id, v.sku, p_delta_on_hand, p_delta_reserved, v.on_hand, v.reserved,
    v.version, p_reason, p_order_id, coalesce(p_node, 'unknown'))
  returning * into e;
  return private.change_json(e, v);
end
$$;

-- Moves stock of a product the caller has locked, bumps its version and logs it.
create function private.move_stock(
  p_product_id bigint, p_delta_on_hand integer, p_delta_reserved integer,
  p_reason text, p_order_id uuid, p_node text
) returns jsonb
language plpgsql set search_path = '' as $$
declare
  v public.products;
begin
  update public.products
     set on_hand = on_hand + p_delta_on_hand,
         reserved = reserved + p_delta_reserved,
         version = version + 1,
         updated_at = now()
   where id = p_product_id
  returning * into v;
  return private.log_change(v, p_delta_on_hand, p_delta_reserved, p_reason, p_order_id, p_node);
end
$$;

create function private.lock_live_product(p_sku text) returns public.products
language plpgsql set search_path = '' as $$
declare
  v public.products;
begin
  select * into v from public.products
   where sku = p_sku and deleted_at is null
   for update;
  if not found then
    perform private.fail(404, 'NOT_FOUND', format('no product with sku %s', p_sku),
                         jsonb_build_object('sku', p_sku));
  end if;
  return v;
end
$$;

-- Turns a pending order into its final status: confirmed sells the held
-- units, cancelled and expired release them. The caller holds the order lock.
create function private.settle_order(p_order_id uuid, p_status text, p_node text)
returns jsonb
language plpgsql set search_path = '' as $$
declare
  v_changes jsonb := '[]';
  v_sign integer := case p_status when 'confirmed' then -1 else 0 end;
  v_reason text := case p_status
    when 'confirmed' then 'sold' when 'cancelled' then 'released' else 'expired' end;
  r record;
begin
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
  update public.orders set status = p_status, updated_at = now() where id = p_order_id;
  return v_changes;
end
$$;

create function private.lock_pending_order(p_order_id uuid, p_to text)
returns public.orders
language plpgsql set search_path = '' as $$
declare
  v public.orders;
begin
  select * into v from public.orders where id = p_order_id for update;
  if not found then
    perform private.fail(404, 'NOT_FOUND', 'no such order',
                         jsonb_build_object('order_id', p_order_id));
  end if;
  if v.status <> 'pending' then
    perform private.fail(409, 'INVALID_TRANSITION',
      format('a %s order cannot become %s', v.status, p_to),
      jsonb_build_object('order_id', v.id, 'status', v.status, 'to', p_to));
  end if;
  return v;
end
$$;

create function private.valid_line(x jsonb) returns boolean
language plpgsql immutable set search_path = '' as $$
begin
  if jsonb_typeof(x) <> 'object' or jsonb_typeof(x -> 'sku') is distinct from 'string'
     or jsonb_typeof(x -> 'quantity') is distinct from 'number' then
    return false;
  end if;
  return (x ->> 'quantity')::numeric = trunc((x ->> 'quantity')::numeric)
     and (x ->> 'quantity')::numeric between 1 and 2147483647;
end
$$;

-- Catalog -----------------------------------------------------------------

create function public.create_product(
  p_sku text, p_name text, p_price_cents bigint,
  p_on_hand integer default 0, p_low_stock_threshold integer default 5,
  p_node text default null
) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  v public.products;
begin
  insert into public.products (sku, name, price_cents, on_hand, low_stock_threshold)
  values (p_sku, p_name, p_price_cents, coalesce(p_on_hand, 0), coalesce(p_low_stock_threshold, 5))
  returning * into v;
  return jsonb_build_object(
    'product', private.product_json(v),
    'changes', jsonb_build_array(private.log_change(v, v.on_hand, 0, 'created', null, p_node)));
exception when unique_violation then
  perform private.fail(409, 'SKU_EXISTS', format('a product with sku %s exists', p_sku),
                       jsonb_build_object('sku', p_sku));
end
$$;

create function public.update_product(
  p_sku text, p_name text default null, p_price_cents bigint default null,
  p_low_stock_threshold integer default null, p_expected_version bigint default null,
  p_node text default null
) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  v public.products := private.lock_live_product(p_sku);
begin
  if p_name is null and p_price_cents is null and p_low_stock_threshold is null then
    perform private.fail(422, 'INVALID_INPUT', 'nothing to update');
  end if;
  if p_expected_version is not null and p_expected_version <> v.version then
    perform private.fail(409, 'VERSION_CONFLICT', 'the product changed since that version',
      jsonb_build_object('sku', p_sku, 'expected_version', p_expected_version,
                         'current_version', v.version));
  end if;
  update public.products
     set name = coalesce(p_name, name),
         price_cents = coalesce(p_price_cents, price_cents),
         low_stock_threshold = coalesce(p_low_stock_threshold, low_stock_threshold),
         version = version + 1, updated_at = now()
   where id = v.id
  returning * into v;
  return jsonb_build_object(
    'product', private.product_json(v),
    'changes', jsonb_build_array(private.log_change(v, 0, 0, 'updated', null, p_node)));
end
$$;

-- A soft delete: the row stays for the ledger and order history, its SKU is
-- freed. Refused while orders hold units of it.
create function public.delete_product(p_sku text, p_node text default null) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  v public.products := private.lock_live_product(p_sku);
begin
  if v.reserved > 0 then
    perform private.fail(409, 'HAS_HOLDS',
      format('%s units of %s are held by pending orders', v.reserved, p_sku),
      jsonb_build_object('sku', p_sku, 'reserved', v.reserved));
  end if;
  update public.products
     set deleted_at = now(), version = version + 1, updated_at = now()
   where id = v.id
  returning * into v;
  return jsonb_build_object(
    'product', private.product_json(v),
    'changes', jsonb_build_array(private.log_change(v, 0, 0, 'deleted', null, p_node)));
end
$$;

create function public.get_product(p_sku text) returns jsonb
language plpgsql stable security definer set search_path = '' as $$
declare
  v public.products;
begin
  select * into v from public.products where sku = p_sku and deleted_at is null;
  if not found then
    perform private.fail(404, 'NOT_FOUND', format('no product with sku %s', p_sku),
                         jsonb_build_object('sku', p_sku));
  end if;
  return private.product_json(v);
end
$$;

-- Keyset pagination by SKU: pass the last SKU of a page as p_after.
create function public.list_products(p_after text default null, p_limit integer default 50)
returns jsonb
language sql stable security definer set search_path = '' as $$
  with page as (
    select p, p.sku from public.products p
     where p.deleted_at is null and (p_after is null or p.sku > p_after)
     order by p.sku
     limit private.page_size(p_limit, 50, 1000)
  )
  select jsonb_build_object(
    'items', coalesce(jsonb_agg(private.product_json(page.p) order by page.sku), '[]'),
    'next', case when count(*) = private.page_size(p_limit, 50, 1000)
                 then max(page.sku) end)
  from page
$$;

-- The whole live catalog and the ledger cursor it is consistent with.
create function public.catalog_snapshot() returns jsonb
language sql stable security definer set search_path = '' as $$
  select jsonb_build_object(
    'products', coalesce((
      select jsonb_agg(private.product_json(p) order by p.sku)
        from public.products p where p.deleted_at is null), '[]'),
    'cursor', pg_snapshot_xmin(pg_current_snapshot())::text || ':0')
$$;

-- Stock -----------------------------------------------------------------

create function public.adjust_stock(
  p_sku text, p_delta integer, p_reason text, p_node text default null
) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  v public.products;
begin
  if p_reason is null or p_reason not in ('restock', 'damage', 'count', 'return', 'correction') then
    perform private.fail(422, 'INVALID_INPUT',
      'reason must be one of restock, damage, count, return, correction',
      jsonb_build_object('reason', p_reason));
  end if;
  if p_delta is null or p_delta = 0 then
    perform private.fail(422, 'INVALID_INPUT', 'delta must be a non-zero whole number');
  end if;
  v := private.lock_live_product(p_sku);
  if v.on_hand::bigint + p_delta > 2147483647 then
    perform private.fail(422, 'INVALID_INPUT', 'on_hand would exceed 2147483647');
  end if;
  if v.on_hand + p_delta < v.reserved then
    perform private.fail(409, 'OUT_OF_STOCK', 'the change would push available below zero',
      jsonb_build_object('sku', p_sku, 'on_hand', v.on_hand, 'reserved', v.reserved,
                         'available', v.available, 'delta', p_delta));
  end if;
  return jsonb_build_object(
    'changes', jsonb_build_array(private.move_stock(v.id, p_delta, 0, p_reason, null, p_node)));
end
$$;

-- Compare-and-set: with p_expected_version, refuses when the product moved on.
create function public.set_stock(
  p_sku text, p_on_hand integer, p_expected_version bigint default null,
  p_node text default null
) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  v public.products := private.lock_live_product(p_sku);
begin
  if p_on_hand is null or p_on_hand < 0 then
    perform private.fail(422, 'INVALID_INPUT', 'on_hand must be zero or more');
  end if;
  if p_expected_version is not null and p_expected_version <> v.version then
    perform private.fail(409, 'VERSION_CONFLICT', 'the stock changed since that version',
      jsonb_build_object('sku', p_sku, 'expected_version', p_expected_version,
                         'current_version', v.version));
  end if;
  if p_on_hand < v.reserved then
    perform private.fail(409, 'OUT_OF_STOCK', 'on_hand cannot go below the reserved units',
      jsonb_build_object('sku', p_sku, 'on_hand', v.on_hand, 'reserved', v.reserved,
                         'requested_on_hand', p_on_hand));
  end if;
  return jsonb_build_object(
    'changes', jsonb_build_array(
      private.move_stock(v.id, p_on_hand - v.on_hand, 0, 'set', null, p_node)));
end
$$;

-- Orders ----------------------------------------------------------------

-- All or nothing over the lines; lines of one SKU are summed before the
-- check. With an idempotency key, a repeat of the same request returns the
-- first response and a different request with that key is refused.
create function public.place_order(
  p_items jsonb, p_customer_id text default null, p_idempotency_key text default null,
  p_node text default null, p_hold_seconds integer default 900,
  p_fee_bps integer default 0, p_max_lines integer default 100
) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  v_hash text := encode(sha256(convert_to(
    jsonb_build_object('items', p_items, 'customer_id', p_customer_id)::text, 'UTF8')), 'hex');
  v_order_id uuid;
  v_existing public.orders;
  v_skus text[];
  v_quantities bigint[];
  v_problem jsonb;
  v_changes jsonb := '[]';
  v_subtotal bigint;
  r record;
begin
  if jsonb_typeof(p_items) is distinct from 'array' or jsonb_array_length(p_items) = 0 then
    perform private.fail(422, 'INVALID_INPUT', 'items must be a non-empty array');
  end if;
  if jsonb_array_length(p_items) > p_max_lines then
    perform private.fail(422, 'TOO_MANY_LINES',
      format('an order has at most %s lines', p_max_lines),
      jsonb_build_object('max_lines', p_max_lines));
  end if;
  if exists (select 1 from jsonb_array_elements(p_items) x where not private.valid_line(x)) then
    perform private.fail(422, 'INVALID_INPUT',
      'each item needs a sku and a whole quantity from 1 to 2147483647');
  end if;

  insert into public.orders (idempotency_key, request_hash, customer_id, node_id, expires_at)
  values (p_idempotency_key, v_hash, p_customer_id, coalesce(p_node, 'unknown'),
          now() + make_interval(secs => p_hold_seconds))
  on conflict (idempotency_key) do nothing
  returning id into v_order_id;
  if v_order_id is null then
    select * into v_existing from public.orders where idempotency_key = p_idempotency_key;
    if v_existing.request_hash <> v_hash then
      perform private.fail(409, 'IDEMPOTENCY_MISMATCH',
        'this Idempotency-Key was already used with a different request',
        jsonb_build_object('order_id', v_existing.id));
    end if;
    -- The first response, as it was: only status and updated_at ever change.
    return jsonb_build_object(
      'order', private.order_json(v_existing.id)
               || jsonb_build_object('status', 'pending', 'updated_at', v_existing.created_at),
      'changes', '[]'::jsonb, 'replayed', true);
  end if;

  select array_agg(sku order by sku), array_agg(quantity order by sku)
    into v_skus, v_quantities
    from (select x ->> 'sku' as sku, sum((x ->> 'quantity')::bigint) as quantity
            from jsonb_array_elements(p_items) x group by 1) lines;

  perform 1 from public.products
   where deleted_at is null and sku = any(v_skus)
   order by id
   for update;

  select jsonb_agg(l.sku order by l.sku) into v_problem
    from unnest(v_skus) as l(sku)
   where not exists (
     select 1 from public.products p where p.sku = l.sku and p.deleted_at is null);
  if v_problem is not null then
    perform private.fail(422, 'UNKNOWN_SKU', 'the order names products that do not exist',
                         jsonb_build_object('skus', v_problem));
  end if;

  select jsonb_agg(jsonb_build_object(
           'sku', l.sku, 'requested', l.quantity, 'available', p.available) order by l.sku)
    into v_problem
    from unnest(v_skus, v_quantities) as l(sku, quantity)
    join public.products p on p.sku = l.sku and p.deleted_at is null
   where l.quantity > p.available;
  if v_problem is not null then
    perform private.fail(409, 'OUT_OF_STOCK', 'not enough stock for every line',
                         jsonb_build_object('lines', v_problem));
  end if;

  for r in
    select p.id, l.quantity::integer as quantity
      from unnest(v_skus, v_quantities) as l(sku, quantity)
      join public.products p on p.sku = l.sku and p.deleted_at is null
     order by p.id
  loop
    v_changes := v_changes || private.move_stock(r.id, 0, r.quantity, 'reserved', v_order_id, p_node);
  end loop;

  insert into public.order_items (order_id, line, product_id, sku, quantity, unit_price_cents)
  select v_order_id, x.line, p.id, p.sku, (x.item ->> 'quantity')::integer, p.price_cents
    from jsonb_array_elements(p_items) with ordinality as x(item, line)
    join public.products p on p.sku = x.item ->> 'sku' and p.deleted_at is null;

  select sum(quantity * unit_price_cents) into v_subtotal
    from public.order_items where order_id = v_order_id;
  update public.orders
     set subtotal_cents = v_subtotal,
         fee_cents = round(v_subtotal * p_fee_bps / 10000.0),
         total_cents = v_subtotal + round(v_subtotal * p_fee_bps / 10000.0)
   where id = v_order_id;
  return jsonb_build_object(
    'order', private.order_json(v_order_id), 'changes', v_changes, 'replayed', false);
end
$$;

create function public.confirm_order(p_order_id uuid, p_node text default null) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  v public.orders := private.lock_pending_order(p_order_id, 'confirmed');
  v_changes jsonb;
begin
  if v.expires_at <= now() then
    perform private.fail(409, 'INVALID_TRANSITION', 'the hold has expired',
      jsonb_build_object('order_id', v.id, 'status', 'expired', 'to', 'confirmed'));
  end if;
  v_changes := private.settle_order(v.id, 'confirmed', p_node);
  return jsonb_build_object('order', private.order_json(v.id), 'changes', v_changes);
end
$$;

create function public.cancel_order(p_order_id uuid, p_node text default null) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  v public.orders := private.lock_pending_order(p_order_id, 'cancelled');
  v_changes jsonb := private.settle_order(v.id, 'cancelled', p_node);
begin
  return jsonb_build_object('order', private.order_json(v.id), 'changes', v_changes);
end
$$;

-- Releases the holds of up to p_batch orders past expires_at. SKIP LOCKED
-- lets every node sweep at once without waiting on each other.
create function public.expire_holds(p_batch integer default 100, p_node text default null)
returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  v_ids uuid[];
  v_id uuid;
  v_changes jsonb := '[]';
begin
  select array_agg(id) into v_ids from (
    select id from public.orders
     where status = 'pending' and expires_at <= now()
     order by expires_at
     limit p_batch
     for update skip locked) due;
  if v_ids is null then
    return jsonb_build_object('expired', '[]'::jsonb, 'changes', '[]'::jsonb);
  end if;
  perform 1 from public.products
   where id in (select product_id from public.order_items where order_id = any(v_ids))
   order by id
   for update;
  foreach v_id in array v_ids loop
    v_changes := v_changes || private.settle_order(v_id, 'expired', p_node);
  end loop;
  return jsonb_build_object('expired', to_jsonb(v_ids), 'changes', v_changes);
end
$$;

create function public.get_order(p_order_id uuid) returns jsonb
language plpgsql stable security definer set search_path = '' as $$
declare
  v jsonb := private.order_json(p_order_id);
begin
  if v is null then
    perform private.fail(404, 'NOT_FOUND', 'no such order',
                         jsonb_build_object('order_id', p_order_id));
  end if;
  return v;
end
$$;

-- Newest first; the cursor is the `next` of the previous page.
create function public.list_orders(
  p_customer_id text default null, p_status text default null,
  p_limit integer default 50, p_cursor text default null
) returns jsonb
language plpgsql stable security definer set search_path = '' as $$
declare
  v_limit integer := private.page_size(p_limit, 50, 200);
  v_time timestamptz;
  v_id uuid;
begin
  if p_cursor is not null then
    begin
      v_time := split_part(p_cursor, '|', 1)::timestamptz;
      v_id := split_part(p_cursor, '|', 2)::uuid;
    exception when others then
      perform private.fail(422, 'INVALID_CURSOR', 'cursor is not one this server gave out');
    end;
  end if;
  return (
    with page as (
      select o.id, o.created_at from public.orders o
       where (p_customer_id is null or o.customer_id = p_customer_id)
         and (p_status is null or o.status = p_status)
         and (p_cursor is null or (o.created_at, o.id) < (v_time, v_id))
       order by o.created_at desc, o.id desc
       limit v_limit
    )
    select jsonb_build_object(
      'items', coalesce(jsonb_agg(private.order_json(page.id)
                                  order by page.created_at desc, page.id desc), '[]'),
      'next', case when count(*) = v_limit then (
        select to_char(l.created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
               || '|' || l.id
          from page l order by l.created_at, l.id limit 1) end)
    from page);
end
$$;

-- The ledger ------------------------------------------------------------

-- Ledger rows after a cursor, for the nodes' catch-up. The cursor orders rows
-- by (transaction id, seq) rather than seq alone: a transaction can take a
-- seq before another one and commit after it, so a plain "seq > last seen"
-- would skip it. Every transaction older than the snapshot's xmin is finished,
-- so the cursor only moves past those; rows of newer, already committed
-- transactions are returned again until they settle (callers drop repeats by
-- version).
create function public.stock_events_since(p_cursor text default null, p_limit integer default 1000)
returns jsonb
language plpgsql stable security definer set search_path = '' as $$
declare
  v_xmin xid8 := pg_snapshot_xmin(pg_current_snapshot());
  v_limit integer := private.page_size(p_limit, 1000, 10000);
  v_txid xid8 := '0';
  v_seq bigint := 0;
  v_events jsonb;
  v_count integer;
  v_last_txid xid8;
  v_last_seq bigint;
  v_next text;
begin
  if p_cursor is not null and p_cursor <> '' then
    begin
      v_txid := split_part(p_cursor, ':', 1)::xid8;
      v_seq := split_part(p_cursor, ':', 2)::bigint;
    exception when others then
      perform private.fail(422, 'INVALID_CURSOR', 'cursor is not one this server gave out');
    end;
  end if;
  with page as (
    select e, p, e.txid, e.seq
      from public.stock_events e join public.products p on p.id = e.product_id
     where (e.txid, e.seq) > (v_txid, v_seq)
     order by e.txid, e.seq
     limit v_limit
  )
  select jsonb_agg(private.change_json(page.e, page.p) order by page.txid, page.seq), count(*),
         (array_agg(page.txid order by page.txid desc, page.seq desc))[1],
         (array_agg(page.seq order by page.txid desc, page.seq desc))[1]
    into v_events, v_count, v_last_txid, v_last_seq
    from page;
  if v_count = v_limit and v_last_txid < v_xmin then
    v_next := v_last_txid::text || ':' || v_last_seq::text;
  else
    v_next := greatest(v_xmin, v_txid)::text || ':0';
  end if;
  return jsonb_build_object('events', coalesce(v_events, '[]'), 'cursor', v_next);
end
$$;

-- The ledger for people: newest first, for one SKU or all, before a seq.
create function public.list_stock_events(
  p_sku text default null, p_before bigint default null, p_limit integer default 50
) returns jsonb
language sql stable security definer set search_path = '' as $$
  with page as (
    select e, p, e.seq
      from public.stock_events e join public.products p on p.id = e.product_id
     where (p_sku is null or e.sku = p_sku) and (p_before is null or e.seq < p_before)
     order by e.seq desc
     limit private.page_size(p_limit, 50, 500)
  )
  select jsonb_build_object(
    'items', coalesce(jsonb_agg(private.change_json(page.e, page.p) order by page.seq desc), '[]'),
    'next', case when count(*) = private.page_size(p_limit, 50, 500)
                 then min(page.seq) end)
  from page
$$;

-- The migration versions applied, for a node's readiness check.
create function public.schema_versions() returns jsonb
language sql stable security definer set search_path = '' as $$
  select coalesce(jsonb_agg(version order by version), '[]')
    from supabase_migrations.schema_migrations
$$;
