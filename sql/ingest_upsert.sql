-- Idempotent upsert of the staged bars on the key (symbol, ts). Identical rows are skipped, so
-- re-ingesting the same file writes nothing; changed rows replace the stored values.
INSERT INTO bars (symbol, ts, open, high, low, close, volume)
SELECT s.symbol, s.ts, s.open, s.high, s.low, s.close, s.volume
FROM staged_bars AS s
LEFT JOIN bars AS b ON b.symbol = s.symbol AND b.ts = s.ts
WHERE b.symbol IS NULL
   OR b.open IS DISTINCT FROM s.open
   OR b.high IS DISTINCT FROM s.high
   OR b.low IS DISTINCT FROM s.low
   OR b.close IS DISTINCT FROM s.close
   OR b.volume IS DISTINCT FROM s.volume
ON CONFLICT (symbol, ts) DO UPDATE SET
    open = excluded.open,
    high = excluded.high,
    low = excluded.low,
    close = excluded.close,
    volume = excluded.volume;
