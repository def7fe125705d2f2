-- The kernel states of symbols without a stored one (after features_stream_state_update.sql).
INSERT INTO feature_stream_state
    (feature_set, symbol, layout_sha256, n_bars, last_bar_ts, state, bars_fingerprint,
     state_codec)
SELECT $1 AS feature_set, s.symbol, s.layout_sha256, s.n_bars, s.last_bar_ts, s.state,
       s.bars_fingerprint, $2 AS state_codec
FROM staged_stream_state AS s
WHERE NOT EXISTS (
    SELECT 1 FROM feature_stream_state AS t WHERE t.feature_set = $1 AND t.symbol = s.symbol
)
ORDER BY s.symbol
