-- Export a feature table of the offline store to the Parquet file Feast's DuckDB offline store
-- reads (a FileSource). Placeholders filled by quantcli.online with checked
-- identifiers: {table}, {columns} (the declared feature columns, quoted) and {path}.
-- Sorted by (symbol, ts) so the same table gives the same bytes.
COPY (
    SELECT symbol, ts, {columns}
    FROM {table}
    ORDER BY symbol, ts
) TO '{path}' (FORMAT parquet, COMPRESSION zstd);
