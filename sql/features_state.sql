-- Per-symbol state of the last build of a feature set (see schema_features.sql).
SELECT symbol, last_bar_ts, n_bars, history_sha256
FROM feature_build_state
WHERE feature_set = ?
ORDER BY symbol
