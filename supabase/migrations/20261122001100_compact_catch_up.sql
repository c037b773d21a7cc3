-- The catch-up asks first for the compact page: each ledger row as
-- [sku, product_id, version, order_id], no documents. A node that already
-- holds every version of it (the bus brought them) and follows none of its
-- orders moves its cursor on; otherwise it asks for the same page in full.
-- Under load the bus brings nearly everything, and the full pages, a
-- document per row built here and decoded on every node twice a second,
-- were the catch-up's whole cost.

drop function public.stock_events_since(text, integer);
create function public.stock_events_since(
  p_cursor text default null, p_limit integer default 1000, p_compact boolean default false
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
  select coalesce(jsonb_agg(case when p_compact
                                 then jsonb_build_array((w.e).sku, (w.e).product_id,
                                                        (w.e).version, (w.e).order_id)
                                 else private.change_json(w.e, p) end
                            order by w.txid, w.seq)
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
    left join public.products p on not p_compact and p.id = (w.e).product_id;
  return jsonb_build_object(
    'events', v_events,
    'more', v_more,
    'cursor', case when v_more then concat_ws('/', c.lo, v_hi, v_last_txid, v_last_seq)
                   else v_hi::text end);
end
$$;

revoke execute on function public.stock_events_since(text, integer, boolean)
  from public, anon, authenticated;
grant execute on function public.stock_events_since(text, integer, boolean) to service_role;
