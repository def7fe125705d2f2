-- Store this build's kernel states (staged_stream_state: symbol, layout_sha256, n_bars,
-- last_bar_ts, state, bars_fingerprint; every state in codec $2), first for the symbols that already have one; then
-- features_stream_state_insert.sql adds the others. An UPDATE rewrites the changed values in
-- place, where INSERT OR REPLACE deletes and re-appends each row: slower in DuckDB, and many
-- times slower when the staged rows come in another order than the stored ones.
UPDATE feature_stream_state AS t
SET layout_sha256 = s.layout_sha256,
    n_bars = s.n_bars,
    last_bar_ts = s.last_bar_ts,
    state = s.state,
    bars_fingerprint = s.bars_fingerprint,
    state_codec = $2
FROM staged_stream_state AS s
WHERE t.feature_set = $1 AND t.symbol = s.symbol
