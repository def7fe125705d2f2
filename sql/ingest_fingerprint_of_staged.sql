-- The stored bars at the staged keys (view staged_bars), per symbol: their count and the sum and
-- xor of their hashes. Run before and after the upsert: the difference is what the ingest changed.
SELECT b.symbol, count(*) AS n,
       sum(CAST(hash(b.ts, b.open, b.high, b.low, b.close, b.volume) AS HUGEINT)) AS fp_sum,
       bit_xor(hash(b.ts, b.open, b.high, b.low, b.close, b.volume)) AS fp_xor
FROM staged_bars AS s
JOIN bars AS b ON b.symbol = s.symbol AND b.ts = s.ts
GROUP BY b.symbol
