-- Three holes between the ledger and the nodes' caches:
-- * the catch-up cursor moves by snapshots, so a transaction left open can
--   neither stall it nor be skipped by it;
-- * the catalog snapshot carries the deleted SKUs, so a late message cannot
--   bring a deleted product back into a node's cache;
-- * place_order works on the rows it locked, never on a SKU looked up again.

-- The ledger ------------------------------------------------------------

-- A catch-up cursor, parsed. Forms:
--   ''/null              nothing read yet: the whole ledger
--   <lo>                 every transaction visible in snapshot lo was read
--   <lo>/<hi>/<txid>/<seq>
--                        inside the window (lo, hi]: its rows up to (txid, seq) were read
--   <txid>:<seq>         the earlier form: every transaction below txid was read
-- A snapshot is pg_snapshot's text, 'xmin:xmax:xip,...'.
create function private.ledger_cursor(
  p_cursor text,
  out lo pg_snapshot, out hi pg_snapshot, out after_txid xid8, out after_seq bigint
)
language plpgsql immutable set search_path = '' as $$
declare
  v_parts text[] := string_to_array(p_cursor, '/');
begin
  after_txid := '0';
  after_seq := 0;
  begin
    if coalesce(p_cursor, '') = '' then
      lo := '1:1:';
    elsif p_cursor ~ '^[0-9]+:[0-9]+$' then
      lo := format('%1$s:%1$s:', split_part(p_cursor, ':', 1))::pg_snapshot;
    elsif cardinality(v_parts) = 1 then
      lo := p_cursor::pg_snapshot;
    elsif cardinality(v_parts) = 4 then
      lo := v_parts[1]::pg_snapshot;
      hi := v_parts[2]::pg_snapshot;
      after_txid := v_parts[3]::xid8;
      after_seq := v_parts[4]::bigint;
    end if;
  exception when data_exception then
    lo := null;
  end;
  if lo is null then
    perform private.fail(422, 'INVALID_CURSOR', 'cursor is not one this server gave out');
  end if;
end
$$;

-- Ledger rows after a cursor, for the nodes' catch-up, each committed row
-- exactly once (PgQ's batches). The cursor carries the snapshot lo of the
-- previous read; a read takes the current snapshot hi and returns the rows of
-- the transactions visible in hi but not in lo, in (txid, seq) order. Those
-- transactions have all ended, so the window's rows are fixed and pages
-- inside it resume after the last (txid, seq) read, with lo and hi carried in
-- the cursor, while `more` is true; the last page's cursor is hi, the next
-- window's lo. Windows never overlap and every commit lands in one, so a
-- transaction left open only keeps its own rows back, until it commits.
-- The transactions new since lo are those in progress at lo (its xip list)
-- and those from lo's xmax up to hi's xmax: a few point lookups and one range
-- of the txid index, however old lo's xmin is. The range's lower bound is a
-- (txid, seq) row comparison alone: beside a plain txid bound, the index scan
-- would start at the row comparison and walk the ledger from there.
-- A function that only reads, so it runs in the READ ONLY transactions
-- PostgREST gives STABLE functions; its statements share one snapshot, the
-- one pg_current_snapshot() returns.
create or replace function public.stock_events_since(
  p_cursor text default null, p_limit integer default 1000
) returns jsonb
language plpgsql stable security definer set search_path = '' as $$
declare
  c record;
  v_limit integer := private.page_size(p_limit, 1000, 10000);
  v_hi pg_snapshot;
  v_from_txid xid8;
  v_from_seq bigint;
  v_events jsonb;
  v_more boolean;
  v_last_txid xid8;
  v_last_seq bigint;
begin
  select * into c from private.ledger_cursor(p_cursor);
  v_hi := coalesce(c.hi, pg_current_snapshot());
  -- Where the range from lo's xmax resumes: seq starts at 1, so (xmax, 0) is
  -- before every row of that transaction.
  if c.after_txid < pg_snapshot_xmax(c.lo) then
    v_from_txid := pg_snapshot_xmax(c.lo);
    v_from_seq := 0;
  else
    v_from_txid := c.after_txid;
    v_from_seq := c.after_seq;
  end if;
  select coalesce(jsonb_agg(private.change_json(w.e, p) order by w.txid, w.seq)
                    filter (where w.n <= v_limit), '[]'),
         count(*) > v_limit,
         max(w.txid) filter (where w.n = v_limit),
         max(w.seq) filter (where w.n = v_limit)
    into v_events, v_more, v_last_txid, v_last_seq
    from (select x.e, x.txid, x.seq, row_number() over (order by x.txid, x.seq) as n
            from ((select e, e.txid, e.seq from public.stock_events e
                    where e.txid = any(array(select pg_snapshot_xip(c.lo)))
                      and (e.txid, e.seq) > (c.after_txid, c.after_seq)
                      and pg_visible_in_snapshot(e.txid, v_hi)
                    order by e.txid, e.seq
                    limit v_limit + 1)
                  union all
                  (select e, e.txid, e.seq from public.stock_events e
                    where (e.txid, e.seq) > (v_from_txid, v_from_seq)
                      and e.txid < pg_snapshot_xmax(v_hi)
                      and pg_visible_in_snapshot(e.txid, v_hi)
                    order by e.txid, e.seq
                    limit v_limit + 1)
                  order by txid, seq
                  limit v_limit + 1) x) w
    join public.products p on p.id = (w.e).product_id;
  return jsonb_build_object(
    'events', v_events,
    'more', v_more,
    'cursor', case when v_more then concat_ws('/', c.lo, v_hi, v_last_txid, v_last_seq)
                   else v_hi::text end);
end
$$;

-- The whole live catalog, the tombstones of the SKUs whose latest product is
-- deleted (a node must not let an older change of those bring them back),
-- and the catch-up cursor of the snapshot the statement read them in.
create or replace function public.catalog_snapshot() returns jsonb
language sql stable security definer set search_path = '' as $$
  select jsonb_build_object(
    'products', coalesce((
      select jsonb_agg(private.product_json(p) order by p.sku)
        from public.products p where p.deleted_at is null), '[]'),
    'tombstones', coalesce((
      select jsonb_agg(jsonb_build_object(
               'sku', t.sku, 'product_id', t.id, 'version', t.version) order by t.sku)
        from (select distinct on (d.sku) d.sku, d.id, d.version
                from public.products d
               where d.deleted_at is not null
                 and not exists (select from public.products l
                                  where l.sku = d.sku and l.deleted_at is null)
               order by d.sku, d.id desc) t), '[]'),
    'cursor', pg_current_snapshot()::text)
$$;

-- Orders ----------------------------------------------------------------

-- All or nothing over the lines; lines of one SKU are summed before the
-- check. With an idempotency key, a repeat of the same request returns the
-- first response and a different request with that key is refused.
-- One statement locks the live products of the order's SKUs, in id order,
-- and reads them; the rest works on those ids, stock levels and prices only.
-- Looking a SKU up again could find a product created meanwhile (its SKU
-- freed by a delete the lock waited for) that this transaction never locked.
create or replace function public.place_order(
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
  v_locked text[];
  v_ids bigint[];
  v_available integer[];
  v_prices bigint[];
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

  -- Arrays in SKU order, like v_skus: the rows as locked (a row updated while
  -- the lock waited is read as committed; one deleted meanwhile drops out).
  select coalesce(array_agg(l.sku order by l.sku), '{}'), array_agg(l.id order by l.sku),
         array_agg(l.available order by l.sku), array_agg(l.price_cents order by l.sku)
    into v_locked, v_ids, v_available, v_prices
    from (select p.id, p.sku, p.available, p.price_cents
            from public.products p
           where p.deleted_at is null and p.sku = any(v_skus)
           order by p.id
             for update) l;

  if v_locked <> v_skus then
    select jsonb_agg(s order by s) into v_problem
      from unnest(v_skus) s where s <> all(v_locked);
    perform private.fail(422, 'UNKNOWN_SKU', 'the order names products that do not exist',
                         jsonb_build_object('skus', v_problem));
  end if;

  select jsonb_agg(jsonb_build_object(
           'sku', l.sku, 'requested', l.quantity, 'available', l.available) order by l.sku)
    into v_problem
    from unnest(v_skus, v_quantities, v_available) as l(sku, quantity, available)
   where l.quantity > l.available;
  if v_problem is not null then
    perform private.fail(409, 'OUT_OF_STOCK', 'not enough stock for every line',
                         jsonb_build_object('lines', v_problem));
  end if;

  for r in
    select l.id, l.quantity::integer as quantity
      from unnest(v_ids, v_quantities) as l(id, quantity)
     order by l.id
  loop
    v_changes := v_changes || private.move_stock(r.id, 0, r.quantity, 'reserved', v_order_id, p_node);
  end loop;

  insert into public.order_items (order_id, line, product_id, sku, quantity, unit_price_cents)
  select v_order_id, x.line, l.id, l.sku, (x.item ->> 'quantity')::integer, l.price_cents
    from jsonb_array_elements(p_items) with ordinality as x(item, line)
    join unnest(v_skus, v_ids, v_prices) as l(sku, id, price_cents) on l.sku = x.item ->> 'sku';

  select sum(l.quantity * l.price_cents) into v_subtotal
    from unnest(v_quantities, v_prices) as l(quantity, price_cents);
  update public.orders
     set subtotal_cents = v_subtotal,
         fee_cents = round(v_subtotal * p_fee_bps / 10000.0),
         total_cents = v_subtotal + round(v_subtotal * p_fee_bps / 10000.0)
   where id = v_order_id;
  return jsonb_build_object(
    'order', private.order_json(v_order_id), 'changes', v_changes, 'replayed', false);
end
$$;

-- Privileges, as 20261122000300_privileges.sql: replaced functions keep
-- theirs; the new helper is nobody's but its owner's.
revoke execute on function private.ledger_cursor(text) from public, anon, authenticated;
