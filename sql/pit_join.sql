-- Point-in-time join done directly in DuckDB: the oracle get_historical_features is tested against.
-- For every entity row (symbol, event_timestamp) take the feature row of the same symbol with the
-- latest ts <= event_timestamp (no look-ahead), and only if it is at most the feature view's TTL
-- old (ts >= event_timestamp - ttl); otherwise the features are NULL.
-- Inputs: a relation `pit_entities(__row, symbol, event_timestamp)` registered by the caller.
-- Placeholders: {table}, {columns} (f.<col> list), {select_columns}; parameter 1: ttl in seconds.
WITH joined AS (
    SELECT e.__row, e.symbol, e.event_timestamp, f.ts AS feature_ts, {columns}
    FROM pit_entities e
    ASOF LEFT JOIN {table} f
        ON e.symbol = f.symbol AND e.event_timestamp >= f.ts
)
SELECT __row, symbol, event_timestamp, {select_columns}
FROM joined
ORDER BY __row;
