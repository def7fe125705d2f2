-- The record of one ingest, written in the same transaction as the bars.
INSERT INTO ingests (
    ingest_id, ingested_at, sources, input_sha256, rows_in, rows_inserted, rows_updated,
    rows_unchanged, symbols, quality, quantcli_version
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?);
