-- API keys for machines (tills, scanners, scripts).
--
-- A key is `ofk_<public id>_<secret>`. The node makes it, shows it once and
-- sends only its public id and the SHA-256 of the whole key here: the key
-- itself never reaches the database. The public id finds the row through its
-- unique index; the hash proves the caller holds the key. The secret has 256
-- random bits, so one fast hash is as strong as a slow password hash would be.

-- The scopes a key may carry: backend.auth.principal.SCOPES (a test keeps the two
-- equal). A new scope is a new migration that replaces this function.
create function private.api_key_scopes() returns text[]
language sql immutable set search_path = '' as $$
  select array['catalog:write', 'keys:manage', 'ledger:read', 'metrics:read',
               'orders:manage', 'orders:read', 'orders:write']
$$;

create table public.api_keys (
  id uuid primary key default gen_random_uuid(),
  public_id text not null
    constraint api_keys_public_id_unique unique
    constraint api_keys_public_id_format check (public_id ~ '^[A-Za-z0-9]{8,64}$'),
  key_hash text not null
    constraint api_keys_key_hash_format check (key_hash ~ '^[0-9a-f]{64}$'),
  name text not null
    constraint api_keys_name_format check (
      char_length(name) between 1 and 200 and name !~ '[\x01-\x1f\x7f]'),
  scopes text[] not null
    constraint api_keys_scopes_present check (cardinality(scopes) > 0),
  created_at timestamptz not null default now(),
  last_used_at timestamptz,
  revoked_at timestamptz
);
comment on table public.api_keys is
  'API keys for machines: only a hash of each key is stored. Revoked keys stay, with revoked_at.';

-- Like every table: no policy, so the browser roles see nothing even with a
-- grant; and no grant either. The nodes go through the functions below.
alter table public.api_keys enable row level security;
revoke all on public.api_keys from public, anon, authenticated, service_role;
grant select on public.api_keys to service_role;

-- What a key's record shows: never its hash.
create function private.api_key_json(k public.api_keys) returns jsonb
language sql immutable set search_path = '' as $$
  select jsonb_build_object(
    'id', k.id, 'public_id', k.public_id, 'name', k.name, 'scopes', to_jsonb(k.scopes),
    'created_at', k.created_at, 'last_used_at', k.last_used_at, 'revoked_at', k.revoked_at)
$$;

create function public.create_api_key(
  p_public_id text, p_key_hash text, p_name text, p_scopes text[]
) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  v public.api_keys;
  v_unknown jsonb;
begin
  if p_name is null or char_length(p_name) not between 1 and 200 or p_name ~ '[\x01-\x1f\x7f]' then
    perform private.fail(422, 'INVALID_INPUT',
                         'a name is 1 to 200 characters, none of them control characters');
  end if;
  if coalesce(cardinality(p_scopes), 0) = 0 then
    perform private.fail(422, 'INVALID_INPUT', 'an API key needs at least one scope',
                         jsonb_build_object('known_scopes', private.api_key_scopes()));
  end if;
  select jsonb_agg(distinct s order by s) into v_unknown
    from unnest(p_scopes) s
   where s is null or s <> all(private.api_key_scopes());
  if v_unknown is not null then
    perform private.fail(422, 'INVALID_INPUT', 'unknown scope',
      jsonb_build_object('unknown_scopes', v_unknown, 'known_scopes', private.api_key_scopes()));
  end if;
  insert into public.api_keys (public_id, key_hash, name, scopes)
  values (p_public_id, p_key_hash, p_name,
          array(select distinct s from unnest(p_scopes) s order by s))
  returning * into v;
  return private.api_key_json(v);
end
$$;

-- Every key, revoked ones too, newest first. There are tens, not thousands.
create function public.list_api_keys() returns jsonb
language sql stable security definer set search_path = '' as $$
  select jsonb_build_object(
    'items', coalesce(jsonb_agg(private.api_key_json(k) order by k.created_at desc, k.id), '[]'))
    from public.api_keys k
$$;

-- Idempotent: a revoked key keeps the time it was first revoked.
create function public.revoke_api_key(p_key_id uuid) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  v public.api_keys;
begin
  update public.api_keys set revoked_at = coalesce(revoked_at, now())
   where id = p_key_id
  returning * into v;
  if not found then
    perform private.fail(404, 'NOT_FOUND', 'no API key with that id',
                         jsonb_build_object('key_id', p_key_id));
  end if;
  return private.api_key_json(v);
end
$$;

-- The key with this public id and hash, unless it is revoked: its id, name
-- and scopes. One refusal for every failure, so a caller learns nothing about
-- which keys exist. last_used_at moves at most once a minute: a busy key does
-- not write a row version per request, and a request never waits for another
-- one's update of it (SKIP LOCKED).
create function public.authenticate_api_key(p_public_id text, p_key_hash text)
returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  v public.api_keys;
begin
  select * into v from public.api_keys where public_id = p_public_id;
  if not found or v.revoked_at is not null or v.key_hash is distinct from p_key_hash then
    perform private.fail(401, 'UNAUTHENTICATED', 'the API key is unknown or revoked');
  end if;
  if v.last_used_at is null or v.last_used_at < now() - interval '1 minute' then
    update public.api_keys set last_used_at = now()
     where id = (select k.id from public.api_keys k
                  where k.id = v.id
                    and (k.last_used_at is null or k.last_used_at < now() - interval '1 minute')
                    for update skip locked);
  end if;
  return jsonb_build_object('id', v.id, 'name', v.name, 'scopes', to_jsonb(v.scopes));
end
$$;

-- Privileges, as 20261122000300_privileges.sql: only the nodes may call the
-- functions; the helpers are nobody's but their owner's.
revoke execute on function
  public.create_api_key(text, text, text, text[]), public.list_api_keys(),
  public.revoke_api_key(uuid), public.authenticate_api_key(text, text),
  private.api_key_scopes(), private.api_key_json(public.api_keys)
  from public, anon, authenticated;
grant execute on function
  public.create_api_key(text, text, text, text[]), public.list_api_keys(),
  public.revoke_api_key(uuid), public.authenticate_api_key(text, text)
  to service_role;
