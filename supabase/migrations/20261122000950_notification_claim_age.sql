-- A notification claim that is not the caller's says how old it is, so that a
-- worker finding another's claim still `sending` can tell a sender at work (a
-- duplicate delivery of the same event) from one that died between its claim
-- and its finish, and send again only after the claim idle time.
create or replace function public.claim_notification(
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
