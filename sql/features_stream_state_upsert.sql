-- Store the kernel states of this build (staged_stream_state: symbol, layout_sha256, n_bars,
-- last_bar_ts, state).
INSERT OR REPLACE INTO feature_stream_state
SELECT ? AS feature_set, symbol, layout_sha256, n_bars, last_bar_ts, state
FROM staged_stream_state
