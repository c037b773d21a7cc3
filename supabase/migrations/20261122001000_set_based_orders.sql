-- A batch of orders written with one statement per table, not one per order.
--
-- `place_orders` used to run `place_one` for each order of a batch: five
-- data-modifying statements per order, each with its own executor start, its
-- own plan and its own documents. Now the outcomes are still decided one
-- order at a time (a line can only take what the orders before it left), but
-- from the stock the batch locked, in memory; the orders that get through are
-- then written together: one insert of orders, one of their lines, one update
-- of each product touched (its version moves once per order, as before), one
-- insert of ledger rows (each order's own row per product, with the figures
-- after that order) and one of `order.placed` events. Row locks, the ledger,
-- the outbox, every order's own outcome, key and answer are as before.
--
-- The careful path, one order at a time through `place_one`, still answers
-- every batch the set can not: a key already used (a replay, or a mismatch)
-- or a key twice in one batch. Two batches with one key take turns: each
-- holds a transaction-level advisory lock on each of its keys, taken after
-- its product locks and in one order, so the second sees the first's order
-- once it may go on. (No subtransaction: the hot row's update under one
-- would make every later locker of that row pay for a multixact.)

create function private.place_set(
  p_orders jsonb, p_stock jsonb, p_node text, p_hold_seconds integer, p_fee_bps integer,
  p_max_lines integer
) returns jsonb
language plpgsql set search_path = '' set plan_cache_mode = force_generic_plan as $$
declare
  v_stock jsonb := p_stock;  -- sku -> [id, available, price_cents], as the batch has left it
  v_errors jsonb := '{}';  -- batch index -> the refused order's error
  v_accepted jsonb := '[]';  -- the orders that get through, in batch order
  v_order jsonb;
  v_index integer := -1;
  v_items jsonb;
  v_customer text;
  v_key text;
  v_method text;
  v_problem jsonb;
  v_unknown jsonb;
  v_short jsonb;
  v_subtotal bigint;
  v_lines jsonb;
  v_left jsonb;
  v_written integer;
  v_ids bigint[];
  v_quantities integer[];
  v_counts integer[];
  v_results jsonb;
begin
  -- Keys already used, or used twice here, are the careful path's to answer.
  -- (A lateral probe with a limit: one index lookup per key, whatever the
  -- generic plan thinks of the table's size.)
  if exists (
       select 1
         from jsonb_array_elements(p_orders) o
         cross join lateral (
           select 1 from public.orders x
            where x.caller = coalesce(o ->> 'caller', 'anonymous')
              and x.idempotency_key = o ->> 'idempotency_key'
            limit 1) used
        where jsonb_typeof(o -> 'idempotency_key') = 'string')
     or exists (
       select 1
         from jsonb_array_elements(p_orders) o
        where jsonb_typeof(o -> 'idempotency_key') = 'string'
        group by coalesce(o ->> 'caller', 'anonymous'), o ->> 'idempotency_key'
       having count(*) > 1) then
    return null;
  end if;

  for v_order in select * from jsonb_array_elements(p_orders) loop
    v_index := v_index + 1;
    v_problem := private.order_shape_problem(v_order, p_max_lines);
    if v_problem is not null then
      v_errors := v_errors || jsonb_build_object(v_index::text, v_problem);
      continue;
    end if;
    v_items := v_order -> 'items';
    v_customer := v_order ->> 'customer_id';
    v_key := v_order ->> 'idempotency_key';
    v_method := v_order ->> 'payment_method';
    -- The lines summed per SKU, against the stock the batch has left.
    select jsonb_agg(l.sku order by l.sku) filter (where s.id is null),
           jsonb_agg(jsonb_build_object(
             'sku', l.sku, 'requested', l.quantity, 'available', s.available) order by l.sku)
             filter (where l.quantity > s.available),
           sum(l.quantity * s.price),
           jsonb_agg(jsonb_build_array(s.id, l.quantity) order by s.id),
           jsonb_object_agg(l.sku, jsonb_build_array(s.id, s.available - l.quantity, s.price))
             filter (where s.id is not null)
      into v_unknown, v_short, v_subtotal, v_lines, v_left
      from (select x ->> 'sku' as sku, sum((x ->> 'quantity')::bigint) as quantity
              from jsonb_array_elements(v_items) x group by 1) l
      cross join lateral (
        select (v_stock -> l.sku ->> 0)::bigint as id,
               (v_stock -> l.sku ->> 1)::bigint as available,
               (v_stock -> l.sku ->> 2)::bigint as price) s;
    if v_unknown is not null then
      v_errors := v_errors || jsonb_build_object(v_index::text, private.error_json(
        422, 'UNKNOWN_SKU', 'the order names products that do not exist',
        jsonb_build_object('skus', v_unknown)));
      continue;
    end if;
    if v_short is not null then
      v_errors := v_errors || jsonb_build_object(v_index::text, private.error_json(
        409, 'OUT_OF_STOCK', 'not enough stock for every line',
        jsonb_build_object('lines', v_short)));
      continue;
    end if;
    v_stock := v_stock || v_left;
    v_accepted := v_accepted || jsonb_build_array(jsonb_build_object(
      'i', v_index, 'id', gen_random_uuid(), 'caller', coalesce(v_order ->> 'caller', 'anonymous'),
      'key', v_key, 'customer', v_customer, 'method', v_method, 'items', v_items,
      'lines', v_lines, 'subtotal', v_subtotal,
      'fee', round(v_subtotal * p_fee_bps / 10000.0)::bigint,
      'hash', case when v_key is null then '' else encode(sha256(convert_to(
                jsonb_build_object('items', v_items, 'customer_id', v_customer)::text
                || coalesce(' ' || v_method, ''), 'UTF8')), 'hex') end));
  end loop;

  if jsonb_array_length(v_accepted) > 0 then
    insert into public.orders (
      id, caller, idempotency_key, request_hash, customer_id, node_id, expires_at,
      subtotal_cents, fee_cents, total_cents, payment_method)
    select (a ->> 'id')::uuid, a ->> 'caller', a ->> 'key', a ->> 'hash', a ->> 'customer',
           p_node, now() + make_interval(secs => p_hold_seconds), (a ->> 'subtotal')::bigint,
           (a ->> 'fee')::bigint, (a ->> 'subtotal')::bigint + (a ->> 'fee')::bigint,
           a ->> 'method'
      from jsonb_array_elements(v_accepted) a
     order by (a ->> 'i')::integer
    on conflict (caller, idempotency_key) do nothing;
    get diagnostics v_written = row_count;
    if v_written <> jsonb_array_length(v_accepted) then
      -- Only a writer of orders that skips the key locks could get here; the
      -- node then places the batch's orders one by one.
      perform private.fail(409, 'IDEMPOTENCY_CONFLICT',
                           'an idempotency key of this batch was taken meanwhile; retry');
    end if;

    insert into public.order_items (order_id, line, product_id, sku, quantity, unit_price_cents)
    select (a ->> 'id')::uuid, x.line, (v_stock -> (x.item ->> 'sku') ->> 0)::bigint,
           x.item ->> 'sku', (x.item ->> 'quantity')::integer,
           (v_stock -> (x.item ->> 'sku') ->> 2)::bigint
      from jsonb_array_elements(v_accepted) a,
           jsonb_array_elements(a -> 'items') with ordinality as x(item, line);

    insert into public.order_events (type, order_id, node, body)
    select 'order.placed', (a ->> 'id')::uuid, p_node, jsonb_build_object(
             'customer_id', a -> 'customer',
             'total_cents', (a ->> 'subtotal')::bigint + (a ->> 'fee')::bigint,
             'payment_method', a -> 'method')
      from jsonb_array_elements(v_accepted) a
     order by (a ->> 'i')::integer;
  end if;

  -- What each product gives the batch, as arrays: the update below then looks
  -- each one up by its key (a generic plan would scan the table for a join).
  select array_agg(d.product_id order by d.product_id),
         array_agg(d.quantity order by d.product_id),
         array_agg(d.n order by d.product_id)
    into v_ids, v_quantities, v_counts
    from (select (x ->> 0)::bigint as product_id, sum((x ->> 1)::integer)::integer as quantity,
                 count(*)::integer as n
            from jsonb_array_elements(v_accepted) a, jsonb_array_elements(a -> 'lines') x
           group by 1) d;

  -- Each product once, its version moved once per order; each order's ledger
  -- row per product, with the figures right after that order; then every
  -- order's answer, in batch order.
  with l as (
    select (a ->> 'i')::integer as i, (a ->> 'id')::uuid as order_id,
           (x ->> 0)::bigint as product_id, (x ->> 1)::integer as quantity
      from jsonb_array_elements(v_accepted) a, jsonb_array_elements(a -> 'lines') x
  ), moved as (
    update public.products p
       set reserved = p.reserved + d.quantity, version = p.version + d.n, updated_at = now()
      from unnest(v_ids, v_quantities, v_counts) as d(product_id, quantity, n)
     where p.id = d.product_id
    returning p, d.quantity, d.n
  ), logged as (
    insert into public.stock_events (
      product_id, sku, delta_on_hand, delta_reserved, on_hand, reserved,
      version, reason, order_id, node_id)
    select l.product_id, (m.p).sku, 0, l.quantity, (m.p).on_hand,
           (m.p).reserved - m.quantity + (sum(l.quantity) over w)::integer,
           (m.p).version - m.n + row_number() over w,
           'reserved', l.order_id, p_node
      from l join moved m on (m.p).id = l.product_id
    window w as (partition by l.product_id order by l.i)
     order by l.i, l.product_id
    returning *
  ), changes as (
    select e.order_id, jsonb_agg(private.change_json(e, m.p) order by e.seq) as changes
      from logged e join moved m on (m.p).id = e.product_id
     group by e.order_id
  )
  select coalesce(jsonb_agg(coalesce(v_errors -> g.i::text, jsonb_build_object(
           'order', jsonb_build_object(
             'id', a ->> 'id', 'status', 'pending', 'customer_id', a -> 'customer',
             'items', (select jsonb_agg(jsonb_build_object(
                         'sku', x.item ->> 'sku',
                         'quantity', (x.item ->> 'quantity')::integer,
                         'unit_price_cents', (v_stock -> (x.item ->> 'sku') ->> 2)::bigint,
                         'line_total_cents', (x.item ->> 'quantity')::integer
                                             * (v_stock -> (x.item ->> 'sku') ->> 2)::bigint,
                         'refunded_quantity', 0) order by x.line)
                         from jsonb_array_elements(a -> 'items')
                              with ordinality as x(item, line)),
             'subtotal_cents', (a ->> 'subtotal')::bigint, 'fee_cents', (a ->> 'fee')::bigint,
             'total_cents', (a ->> 'subtotal')::bigint + (a ->> 'fee')::bigint,
             'node_id', p_node, 'expires_at', now() + make_interval(secs => p_hold_seconds),
             'created_at', now(), 'updated_at', now(),
             'payment_method', a -> 'method', 'paid_cents', 0, 'refunded_cents', 0,
             'cancel_reason', null, 'refunds', '[]'::jsonb),
           'changes', c.changes,
           'replayed', false)) order by g.i), '[]')
    into v_results
    from generate_series(0, v_index) as g(i)
    left join jsonb_array_elements(v_accepted) a on (a ->> 'i')::integer = g.i
    left join changes c on c.order_id = (a ->> 'id')::uuid;
  return v_results;
end
$$;

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
  v_results jsonb;
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

  -- This batch's keys, one at a time across transactions (see the top).
  perform pg_advisory_xact_lock(k.lock)
     from (select distinct hashtextextended(
                    coalesce(o ->> 'caller', 'anonymous') || chr(10) || (o ->> 'idempotency_key'),
                    0) as lock
             from jsonb_array_elements(p_orders) o
            where jsonb_typeof(o -> 'idempotency_key') = 'string'
            order by 1) k;

  v_results := private.place_set(p_orders, v_stock, v_node, p_hold_seconds, p_fee_bps,
                                 p_max_lines);
  if v_results is not null then
    return v_results;
  end if;

  v_results := '[]';
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

revoke execute on function private.place_set(jsonb, jsonb, text, integer, integer, integer)
  from public, anon, authenticated;
