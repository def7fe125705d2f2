-- Add an ingest's change (view fingerprint_delta: symbol, n, fp_sum and fp_xor as text, since
-- Arrow has no 128-bit integer) to bar_fingerprints.
INSERT INTO bar_fingerprints (symbol, n_bars, fp_sum, fp_xor)
SELECT symbol, n, CAST(fp_sum AS HUGEINT), CAST(fp_xor AS UBIGINT)
FROM fingerprint_delta
ON CONFLICT (symbol) DO UPDATE SET
    n_bars = bar_fingerprints.n_bars + excluded.n_bars,
    fp_sum = bar_fingerprints.fp_sum + excluded.fp_sum,
    fp_xor = xor(bar_fingerprints.fp_xor, excluded.fp_xor);
