-- The bars after the last computed bar of each symbol in stream_cut (symbol, last_bar_ts), with
-- the hash features_bar_fingerprints.sql sums, ordered for the kernels.
SELECT b.symbol, b.ts, b.open, b.high, b.low, b.close, b.volume,
       hash(b.ts, b.open, b.high, b.low, b.close, b.volume) AS __hash
FROM bars b JOIN stream_cut c ON c.symbol = b.symbol
WHERE b.ts > c.last_bar_ts
ORDER BY b.symbol, b.ts
