-- One row per symbol of the bars table: bar count and first/last timestamp (UTC).
SELECT
    symbol,
    count(*) AS rows,
    min(ts) AS first_ts,
    max(ts) AS last_ts
FROM bars
GROUP BY symbol
ORDER BY symbol;
