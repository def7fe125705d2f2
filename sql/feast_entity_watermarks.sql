-- The latest feature timestamp of every symbol of a feature table: what a materialization writes
-- to the online store (Feast keeps the latest row per entity). Placeholder: {table}.
SELECT symbol, max(ts) AS ts
FROM {table}
GROUP BY symbol
ORDER BY symbol;
