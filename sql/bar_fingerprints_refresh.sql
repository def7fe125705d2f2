-- Recompute bar_fingerprints from the bars (a store written before the table existed, or bars
-- written without `qcli data ingest`).
DELETE FROM bar_fingerprints;
INSERT INTO bar_fingerprints (symbol, n_bars, fp_sum, fp_xor)
SELECT symbol, count(*),
       sum(CAST(hash(ts, open, high, low, close, volume) AS HUGEINT)),
       bit_xor(hash(ts, open, high, low, close, volume))
FROM bars
GROUP BY symbol;
