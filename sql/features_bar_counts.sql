-- Bars per symbol, for planning shards.
SELECT symbol, count(*) AS n FROM bars GROUP BY symbol ORDER BY symbol
