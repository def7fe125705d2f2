-- Store the kernel states of this build (staged_stream_state: symbol, layout_sha256, n_bars,
-- last_bar_ts, state, bars_fingerprint).
INSERT OR REPLACE INTO feature_stream_state
    (feature_set, symbol, layout_sha256, n_bars, last_bar_ts, state, bars_fingerprint)
SELECT ? AS feature_set, symbol, layout_sha256, n_bars, last_bar_ts, state, bars_fingerprint
FROM staged_stream_state
