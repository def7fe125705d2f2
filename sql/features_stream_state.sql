-- Stored kernel states of a feature set (see features_stream_state_schema.sql).
SELECT symbol, layout_sha256, n_bars, last_bar_ts, state, bars_fingerprint, state_codec
FROM feature_stream_state
WHERE feature_set = ?
ORDER BY symbol
