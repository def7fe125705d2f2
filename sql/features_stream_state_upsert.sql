-- Store the kernel states of this build (staged_stream_state: symbol, layout_sha256, n_bars,
-- last_bar_ts, state, bars_fingerprint). The rows go in the order the table stores the symbols
-- they replace (new symbols last): DuckDB updates rows out of their stored order many times
-- slower (docs/features.md, streaming), and a first build stores them shard by shard.
INSERT OR REPLACE INTO feature_stream_state
    (feature_set, symbol, layout_sha256, n_bars, last_bar_ts, state, bars_fingerprint)
SELECT $1 AS feature_set, s.symbol, s.layout_sha256, s.n_bars, s.last_bar_ts, s.state,
       s.bars_fingerprint
FROM staged_stream_state AS s
LEFT JOIN (
    SELECT symbol, rowid AS stored_at FROM feature_stream_state WHERE feature_set = $1
) AS t USING (symbol)
ORDER BY t.stored_at NULLS LAST, s.symbol
