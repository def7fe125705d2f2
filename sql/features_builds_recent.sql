-- The most recent feature builds, newest first.
SELECT build_id, built_at, feature_set, feature_version, table_name, mode, input_sha256,
       bars_read, rows_computed, rows_written, rows_deleted, warmup_rows_dropped, engine, executor,
       quantcli_version
FROM feature_builds
ORDER BY built_at DESC
LIMIT ?
