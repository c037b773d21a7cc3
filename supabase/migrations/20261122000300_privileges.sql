-- Only the nodes (service_role, or the owner over a direct connection) may
-- call the API functions. Supabase's default privileges grant EXECUTE on new
-- functions to anon and authenticated, and Postgres grants it to PUBLIC:
-- both are taken back here. A later migration that adds a function does the same.
do $$
declare
  f regprocedure;
begin
  for f in
    select p.oid::regprocedure
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where (n.nspname = 'public' and p.proname = any (array[
              'create_product', 'update_product', 'delete_product', 'get_product',
              'list_products', 'catalog_snapshot', 'adjust_stock', 'set_stock',
              'place_order', 'confirm_order', 'cancel_order', 'expire_holds',
              'get_order', 'list_orders', 'stock_events_since', 'list_stock_events',
              'schema_versions']))
        or n.nspname = 'private'
  loop
    execute format('revoke execute on function %s from public, anon, authenticated', f);
    if f::text not like 'private.%' then
      execute format('grant execute on function %s to service_role', f);
    end if;
  end loop;
end
$$;

grant usage on schema public to service_role;
