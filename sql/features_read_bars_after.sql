-- The bars of the symbols whose names lie in [?, ?] except the streamed ones (stream_cut: their
-- new bars are read by features_new_bars.sql), ordered for the kernels.
SELECT b.symbol, b.ts, b.open, b.high, b.low, b.close, b.volume
FROM bars b ANTI JOIN stream_cut c ON c.symbol = b.symbol
WHERE b.symbol >= ? AND b.symbol <= ?
ORDER BY b.symbol, b.ts
