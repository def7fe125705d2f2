-- Core offline-store schema: bars and the record of every ingest.
-- The key of a bar is (symbol, ts); timestamps are timezone-aware UTC.
CREATE TABLE IF NOT EXISTS bars (
    symbol  VARCHAR                  NOT NULL,
    ts      TIMESTAMP WITH TIME ZONE NOT NULL,
    open    DOUBLE                   NOT NULL,
    high    DOUBLE                   NOT NULL,
    low     DOUBLE                   NOT NULL,
    close   DOUBLE                   NOT NULL,
    volume  DOUBLE                   NOT NULL,
    PRIMARY KEY (symbol, ts)
);

CREATE TABLE IF NOT EXISTS ingests (
    ingest_id        VARCHAR PRIMARY KEY,
    ingested_at      TIMESTAMP WITH TIME ZONE NOT NULL,
    sources          VARCHAR NOT NULL,   -- JSON list of files (or "sample")
    input_sha256     VARCHAR NOT NULL,   -- sha256 of the normalised input frame
    rows_in          BIGINT  NOT NULL,
    rows_inserted    BIGINT  NOT NULL,   -- new keys
    rows_updated     BIGINT  NOT NULL,   -- existing keys whose values changed
    rows_unchanged   BIGINT  NOT NULL,   -- existing keys re-ingested with identical values
    symbols          VARCHAR NOT NULL,   -- JSON list
    quality          VARCHAR NOT NULL,   -- JSON: the quality summary (warnings with counts)
    quantcli_version VARCHAR NOT NULL
);

-- Stores created before rows_unchanged existed gain the column (a no-op otherwise).
ALTER TABLE ingests ADD COLUMN IF NOT EXISTS rows_unchanged BIGINT DEFAULT 0;
