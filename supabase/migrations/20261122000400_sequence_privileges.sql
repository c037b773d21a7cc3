-- Supabase's default privileges also give anon and authenticated every
-- privilege on new sequences in public: here the identity sequences of
-- products and stock_events. Nothing reaches them through the API, and no
-- browser role needs them, so they are taken back like the tables.
revoke all on sequence public.products_id_seq, public.stock_events_seq_seq
  from public, anon, authenticated;
