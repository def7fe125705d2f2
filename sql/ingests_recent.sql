-- The most recent ingests, newest first (parameter: how many).
SELECT ingest_id, ingested_at, sources, rows_in, rows_inserted, rows_updated, rows_unchanged,
       quality
FROM ingests
ORDER BY ingested_at DESC, ingest_id
LIMIT ?;
