-- The demo catalog. Idempotent: a SKU that exists, or existed and was
-- deleted, is left alone, so running this again adds nothing.
select public.create_product(s.sku, s.name, s.price_cents, s.on_hand, s.low_stock_threshold, 'seed')
  from (values
    ('TEE-BLK-M', 'Organic tee, black, M', 2400, 120, 10),
    ('TEE-WHT-L', 'Organic tee, white, L', 2400, 80, 10),
    ('HOODIE-GRY-M', 'Heavy hoodie, grey, M', 6900, 35, 5),
    ('CAP-NVY', 'Six-panel cap, navy', 2900, 60, 8),
    ('MUG-STONE', 'Stoneware mug', 1800, 200, 20),
    ('TOTE-NAT', 'Canvas tote, natural', 1500, 150, 15),
    ('SOCKS-3PK', 'Merino socks, 3-pack', 2200, 9, 10),
    ('BEANIE-OLV', 'Rib beanie, olive', 2500, 3, 5),
    ('POSTER-A2', 'Risograph poster, A2', 3500, 25, 5),
    ('STICKERS', 'Sticker sheet', 500, 500, 50)
  ) as s(sku, name, price_cents, on_hand, low_stock_threshold)
 where not exists (select 1 from public.products p where p.sku = s.sku);
