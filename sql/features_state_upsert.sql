-- Record what this build saw of each symbol (staged_state: symbol, last_bar_ts, n_bars, history_sha256).
INSERT OR REPLACE INTO feature_build_state
SELECT ? AS feature_set, symbol, last_bar_ts, n_bars, history_sha256, ? AS build_id
FROM staged_state
