-- The second half of moving a store's kernel states to the uncompressed state column
-- (schema_features.sql): the caller has renamed the old table to feature_stream_state_old and
-- created the new one; this copies every row in its stored order and drops the old table.
INSERT INTO feature_stream_state
    (feature_set, symbol, layout_sha256, n_bars, last_bar_ts, state, bars_fingerprint,
     state_codec)
SELECT feature_set, symbol, layout_sha256, n_bars, last_bar_ts, state, bars_fingerprint,
       state_codec
FROM feature_stream_state_old
ORDER BY rowid;
DROP TABLE feature_stream_state_old
