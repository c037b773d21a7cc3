-- Orders belong to their customer, idempotency keys to their caller.
--
-- * Each caller (backend.auth.principal.Principal.caller: 'user:<sub>',
--   'key:<id>' or 'anonymous') has its own idempotency keys: the same key
--   from another caller is another order, and says nothing of the first.
-- * Given a customer id, get_order and cancel_order answer another
--   customer's order exactly as a missing one, so its existence is not revealed.
-- * A storefront reading Supabase directly with a user's JWT sees that user's
--   orders and their lines, and nothing else.

-- Idempotency keys per caller ---------------------------------------------

-- Orders placed before callers existed came through the path that names no
-- caller, which is 'anonymous': that path still replays them.
alter table public.orders
  add column caller text not null default 'anonymous'
    constraint orders_caller_length check (char_length(caller) between 1 and 200);
alter table public.orders drop constraint orders_idempotency_key_key;
alter table public.orders
  add constraint orders_caller_idempotency_key_key unique (caller, idempotency_key);

-- As 20261122000500_sync_holes.sql left it, with the key looked up and stored
-- in the caller's scope. A new parameter is a new signature: the old one goes,
-- so neither PostgREST nor a named call ever sees two candidates.
drop function public.place_order(jsonb, text, text, text, integer, integer, integer);

-- All or nothing over the lines; lines of one SKU are summed before the
-- check. With an idempotency key, a repeat of the same request by the same
-- caller returns the first response and a different request with that key is
-- refused; another caller's key is theirs alone.
-- One statement locks the live products of the order's SKUs, in id order,
-- and reads them; the rest works on those ids, stock levels and prices only.
-- Looking a SKU up again could find a product created meanwhile (its SKU
-- freed by a delete the lock waited for) that this transaction never locked.
create function public.place_order(
  p_items jsonb, p_customer_id text default null, p_idempotency_key text default null,
  p_node text default null, p_hold_seconds integer default 900,
  p_fee_bps integer default 0, p_max_lines integer default 100,
  p_caller text default null
) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  v_caller text := coalesce(p_caller, 'anonymous');
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

  insert into public.orders (caller, idempotency_key, request_hash, customer_id, node_id, expires_at)
  values (v_caller, p_idempotency_key, v_hash, p_customer_id, coalesce(p_node, 'unknown'),
          now() + make_interval(secs => p_hold_seconds))
  on conflict (caller, idempotency_key) do nothing
  returning id into v_order_id;
  if v_order_id is null then
    select * into v_existing from public.orders
     where caller = v_caller and idempotency_key = p_idempotency_key;
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

-- Orders per customer -----------------------------------------------------

-- The pending order, locked; with p_customer_id, only if it is that
-- customer's: another's is not found, whatever its status, and is not locked.
drop function private.lock_pending_order(uuid, text);
create function private.lock_pending_order(
  p_order_id uuid, p_to text, p_customer_id text default null
) returns public.orders
language plpgsql set search_path = '' as $$
declare
  v public.orders;
begin
  select * into v from public.orders
   where id = p_order_id and (p_customer_id is null or customer_id = p_customer_id)
     for update;
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

drop function public.get_order(uuid);
create function public.get_order(p_order_id uuid, p_customer_id text default null)
returns jsonb
language plpgsql stable security definer set search_path = '' as $$
declare
  v jsonb := private.order_json(p_order_id);
begin
  if v is null
     or (p_customer_id is not null and v ->> 'customer_id' is distinct from p_customer_id) then
    perform private.fail(404, 'NOT_FOUND', 'no such order',
                         jsonb_build_object('order_id', p_order_id));
  end if;
  return v;
end
$$;

drop function public.cancel_order(uuid, text);
create function public.cancel_order(
  p_order_id uuid, p_node text default null, p_customer_id text default null
) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  v public.orders := private.lock_pending_order(p_order_id, 'cancelled', p_customer_id);
  v_changes jsonb := private.settle_order(v.id, 'cancelled', p_node);
begin
  return jsonb_build_object('order', private.order_json(v.id), 'changes', v_changes);
end
$$;

-- Privileges, as 20261122000300_privileges.sql: only the nodes may call the
-- functions; the helper is nobody's but its owner's.
revoke execute on function
  public.place_order(jsonb, text, text, text, integer, integer, integer, text),
  public.get_order(uuid, text), public.cancel_order(uuid, text, text),
  private.lock_pending_order(uuid, text, text)
  from public, anon, authenticated;
grant execute on function
  public.place_order(jsonb, text, text, text, integer, integer, integer, text),
  public.get_order(uuid, text), public.cancel_order(uuid, text, text)
  to service_role;

-- A storefront's own orders, under RLS --------------------------------------

-- Supabase's auth.uid(): the `sub` of the request's JWT, as PostgREST sets it.
-- A Supabase project has it; a plain Postgres gets the same definition, so
-- the policies below mean the same everywhere.
do $$
begin
  if not exists (select from pg_namespace where nspname = 'auth') then
    create schema auth;
    grant usage on schema auth to anon, authenticated, service_role;
  end if;
  if to_regprocedure('auth.uid()') is null then
    create function auth.uid() returns uuid
    language sql stable as $uid$
      select coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
      )::uuid
    $uid$;
  end if;
end
$$;

-- A signed-in user (the `authenticated` role) reads its own orders and their
-- lines, and writes nothing: orders change only through the functions, which
-- only the nodes may call. Of an order, it reads what the API's order document
-- shows, not who placed it (caller) nor that caller's key and request hash:
-- a storefront selects these columns by name (`select=*` is refused).
-- anon gets nothing, and every other table stays closed. `(select auth.uid())`
-- is evaluated once per statement, not once per row.
grant select (id, status, customer_id, subtotal_cents, fee_cents, total_cents, node_id,
              expires_at, created_at, updated_at)
  on public.orders to authenticated;
grant select on public.order_items to authenticated;

create policy orders_select_own on public.orders
  for select to authenticated
  using (customer_id = (select auth.uid())::text);

create policy order_items_select_own on public.order_items
  for select to authenticated
  using (order_id in (select o.id from public.orders o
                       where o.customer_id = (select auth.uid())::text));
