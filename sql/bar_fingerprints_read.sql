-- The per-symbol bar fingerprints ingest keeps, with the bars' total to check them against (a
-- write to bars that bypassed ingest changes the count).
SELECT symbol, n_bars, fp_sum, fp_xor, (SELECT count(*) FROM bars) AS bars_total
FROM bar_fingerprints
WHERE n_bars > 0
ORDER BY symbol
