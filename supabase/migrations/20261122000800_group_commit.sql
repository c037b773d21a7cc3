-- Orders in batches: one call, one transaction, each order its own outcome.
--
-- * public.place_orders places a batch of orders in arrival order. An order
--   that fails (out of stock, unknown SKU, bad input, idempotency mismatch)
--   fails alone with an error document and writes nothing; its batch-mates
--   still commit. No savepoints: every check runs before the order's writes.
-- * public.place_order is a batch of one, so there is one implementation.
-- * Less work per order: one statement locks and reads every product of the
--   batch; one statement moves an order's stock and appends its ledger rows;
--   the request is hashed only when it carries an idempotency key; the ledger
--   stamps rows with the transaction's time, not a clock read per row.
-- * Two indexes no query reads are dropped.
-- * The batch functions use generic plans: a custom plan per call would plan
--   their statements on every call, which costs more than running them.
-- * private.change_json, a one-expression SQL function, loses its own
--   search_path so that Postgres inlines it into the statement that calls it
--   (a function with a SET clause is planned again at each call). Its callers
--   all run with an empty search_path and it names nothing unqualified.

drop index public.stock_events_by_product;
drop index public.order_items_product;
alter table public.stock_events alter column created_at set default now();
alter function private.change_json(public.stock_events, public.products) reset search_path;

-- The problem with an order's shape, as an error document; null when none.
create function private.order_shape_problem(p_order jsonb, p_max_lines integer)
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
      or char_length(p_order ->> 'caller') not between 1 and 200) then
    return private.error_json(422, 'INVALID_INPUT',
      'customer_id, idempotency_key and caller are strings of a bounded length');
  end if;
  return null;
end
$$;

-- An error as place_orders reports it; private.fail raises the same fields.
create function private.error_json(
  p_status integer, p_code text, p_message text, p_details jsonb default '{}'
) returns jsonb
language sql immutable set search_path = '' as $$
  select jsonb_build_object('error', jsonb_build_object(
    'status', p_status, 'code', p_code, 'message', p_message, 'details', p_details))
$$;

-- What an order with this caller and key already answered: the first
-- response as it was (only status and updated_at ever change), or a mismatch
-- when the key came with another request. Null when the key is unused.
create function private.replayed_order(p_caller text, p_key text, p_hash text)
returns jsonb
language plpgsql stable set search_path = '' as $$
declare
  v public.orders;
begin
  select * into v from public.orders where caller = p_caller and idempotency_key = p_key;
  if not found then
    return null;
  end if;
  if v.request_hash <> p_hash then
    return private.error_json(409, 'IDEMPOTENCY_MISMATCH',
      'this Idempotency-Key was already used with a different request',
      jsonb_build_object('order_id', v.id));
  end if;
  return jsonb_build_object(
    'order', private.order_json(v.id)
             || jsonb_build_object('status', 'pending', 'updated_at', v.created_at),
    'changes', '[]'::jsonb, 'replayed', true);
end
$$;

-- Places orders in arrival order, all in the caller's transaction. Each
-- element of p_orders is {items, customer_id?, idempotency_key?, caller?};
-- each element of the result is {order, changes, replayed} or {error}.
-- Lines of one SKU are summed before the check. One statement locks the live
-- products of every SKU the batch names, in id order, and reads them; the
-- orders work on those rows only (a SKU looked up again could find a product
-- created meanwhile that this transaction never locked), and each sees the
-- stock its batch-mates left.
create function public.place_orders(
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

-- One well-formed order against the batch's locked stock. Returns an error
-- document before any write, or the placed order with its changes and, under
-- 'stock', the products it left with less available. Few statements, each
-- doing much: in plpgsql every statement costs an executor start.
create function private.place_one(
  p_order jsonb, p_stock jsonb, p_node text, p_hold_seconds integer, p_fee_bps integer
) returns jsonb
language plpgsql set search_path = '' set plan_cache_mode = force_generic_plan as $$
declare
  v_items jsonb := p_order -> 'items';
  v_customer text := p_order ->> 'customer_id';
  v_key text := p_order ->> 'idempotency_key';
  v_caller text := coalesce(p_order ->> 'caller', 'anonymous');
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
      jsonb_build_object('items', v_items, 'customer_id', v_customer)::text, 'UTF8')), 'hex');
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

  -- The order, its lines, the held units and their ledger rows, in one
  -- statement; the documents are built from what it wrote (a statement does
  -- not see its own writes in the tables). Nothing is written when another
  -- transaction placed this caller's key first.
  with placed as (
    insert into public.orders (
      caller, idempotency_key, request_hash, customer_id, node_id, expires_at,
      subtotal_cents, fee_cents, total_cents)
    values (v_caller, v_key, v_hash, v_customer, p_node,
            now() + make_interval(secs => p_hold_seconds), v_subtotal, v_fee,
            v_subtotal + v_fee)
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
  )
  select jsonb_build_object(
           'order', jsonb_build_object(
             'id', o.id, 'status', o.status, 'customer_id', o.customer_id,
             'items', (select jsonb_agg(jsonb_build_object(
                         'sku', i.sku, 'quantity', i.quantity,
                         'unit_price_cents', i.unit_price_cents,
                         'line_total_cents', i.quantity * i.unit_price_cents) order by i.line)
                         from lines i),
             'subtotal_cents', o.subtotal_cents, 'fee_cents', o.fee_cents,
             'total_cents', o.total_cents, 'node_id', o.node_id, 'expires_at', o.expires_at,
             'created_at', o.created_at, 'updated_at', o.updated_at),
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

-- A batch of one; its error is raised, as every other function raises.
drop function public.place_order(jsonb, text, text, text, integer, integer, integer, text);
create function public.place_order(
  p_items jsonb, p_customer_id text default null, p_idempotency_key text default null,
  p_node text default null, p_hold_seconds integer default 900,
  p_fee_bps integer default 0, p_max_lines integer default 100,
  p_caller text default null
) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  v_result jsonb := public.place_orders(
    jsonb_build_array(jsonb_build_object(
      'items', p_items, 'customer_id', p_customer_id,
      'idempotency_key', p_idempotency_key, 'caller', p_caller)),
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

-- Privileges, as 20261122000300_privileges.sql: only the nodes may call the
-- functions; the helpers are nobody's but their owner's.
revoke execute on function
  public.place_orders(jsonb, text, integer, integer, integer),
  public.place_order(jsonb, text, text, text, integer, integer, integer, text),
  private.order_shape_problem(jsonb, integer), private.error_json(integer, text, text, jsonb),
  private.replayed_order(text, text, text),
  private.place_one(jsonb, jsonb, text, integer, integer)
  from public, anon, authenticated;
grant execute on function
  public.place_orders(jsonb, text, integer, integer, integer),
  public.place_order(jsonb, text, text, text, integer, integer, integer, text)
  to service_role;
