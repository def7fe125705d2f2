-- The bars of the symbols whose names lie in the closed range [?, ?], ordered for the kernels.
SELECT symbol, ts, open, high, low, close, volume
FROM bars
WHERE symbol >= ? AND symbol <= ?
ORDER BY symbol, ts
