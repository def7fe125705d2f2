-- Bars per symbol with a fingerprint of them: the sum and the xor of a 64-bit hash of every bar
-- (ts and all five prices). Order-free and exact (integer sums), computed inside DuckDB without
-- reading the bars out; the prefix of a symbol's bars up to a stored state's last bar has the
-- fingerprint of all its bars minus that of the bars after it (features_new_bars.sql).
SELECT symbol, count(*) AS n,
       sum(CAST(hash(ts, open, high, low, close, volume) AS HUGEINT)) AS fp_sum,
       bit_xor(hash(ts, open, high, low, close, volume)) AS fp_xor
FROM bars
GROUP BY symbol
ORDER BY symbol
