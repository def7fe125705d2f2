-- One row per feature build (see schema_features.sql for the columns). Columns named, so the
-- order of a migrated table (engine added last by ALTER TABLE) does not matter.
INSERT INTO feature_builds (
    build_id, built_at, feature_set, feature_version, table_name, mode, input_sha256, symbols,
    bars_read, rows_computed, rows_written, rows_deleted, warmup_rows_dropped, quality, timings,
    executor, quantcli_version, engine
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
