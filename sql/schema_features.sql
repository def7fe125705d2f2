-- Feature-engine schema: the record of every feature build, and the per-symbol state that makes
-- incremental builds safe. Feature tables themselves are created by features_<set>.sql.
CREATE TABLE IF NOT EXISTS feature_builds (
    build_id            VARCHAR PRIMARY KEY,
    built_at            TIMESTAMP WITH TIME ZONE NOT NULL,
    feature_set         VARCHAR NOT NULL,   -- e.g. technical_v1
    feature_version     INTEGER NOT NULL,   -- [feature_set] version of the declaration
    table_name          VARCHAR NOT NULL,   -- e.g. technical_features_v1
    mode                VARCHAR NOT NULL,   -- full | incremental | since
    input_sha256        VARCHAR NOT NULL,   -- sha256 of the bars read (quantcli.data.ingest.bars_sha256)
    symbols             VARCHAR NOT NULL,   -- JSON list of the symbols in scope
    bars_read           BIGINT  NOT NULL,
    rows_computed       BIGINT  NOT NULL,   -- feature rows after dropping warm-up
    rows_written        BIGINT  NOT NULL,   -- rows inserted by this build
    rows_deleted        BIGINT  NOT NULL,   -- stale rows removed before rewriting
    warmup_rows_dropped BIGINT  NOT NULL,
    quality             VARCHAR NOT NULL,   -- JSON: per-feature min/max/mean/zeros, non-finite count
    timings             VARCHAR NOT NULL,   -- JSON: seconds per phase
    executor            VARCHAR NOT NULL,   -- local | ray
    quantcli_version    VARCHAR NOT NULL,
    engine              VARCHAR NOT NULL DEFAULT 'kernel'  -- kernel | polars (see below)
);

-- Migration of a store written before the engine was recorded: every build then ran the kernel
-- engine, so the old rows get 'kernel'. A no-op on a table created above.
ALTER TABLE feature_builds ADD COLUMN IF NOT EXISTS engine VARCHAR DEFAULT 'kernel';

-- What the last build saw of each symbol: the last bar and a hash of the bars up to it. An
-- incremental build appends only when the symbol's history up to last_bar_ts is unchanged;
-- otherwise (bars revised or back-filled) it rewrites the symbol.
CREATE TABLE IF NOT EXISTS feature_build_state (
    feature_set    VARCHAR NOT NULL,
    symbol         VARCHAR NOT NULL,
    last_bar_ts    TIMESTAMP WITH TIME ZONE NOT NULL,
    n_bars         BIGINT  NOT NULL,
    history_sha256 VARCHAR NOT NULL,
    build_id       VARCHAR NOT NULL,
    PRIMARY KEY (feature_set, symbol)
);

-- The kernels' state of each (feature set, symbol) after the last bar a build computed: running
-- sums, EMA and Wilder values, window ring buffers, as one little-endian float64 vector stored in
-- the form state_codec names. An
-- incremental build continues a symbol from it (only the new bars are computed) when the
-- symbol's history up to last_bar_ts is unchanged (feature_build_state) and layout_sha256 is the
-- current plan's; the result is bit-identical to a rebuild. Written in the build's transaction.
-- The state is stored uncompressed: float64 bytes do not compress, and trying (DuckDB picks a
-- string compression for a BLOB at every checkpoint) costs a streaming build more than its kernels
-- (docs/features.md, streaming). A store created before this column setting is moved to it once
-- by features_stream_state_migrate.sql.
CREATE TABLE IF NOT EXISTS feature_stream_state (
    feature_set    VARCHAR NOT NULL,
    symbol         VARCHAR NOT NULL,
    layout_sha256  VARCHAR NOT NULL,   -- the kernel calls, params and state sizes it belongs to
    n_bars         BIGINT  NOT NULL,   -- bars of the symbol the state has seen
    last_bar_ts    TIMESTAMP WITH TIME ZONE NOT NULL,
    state          BLOB    NOT NULL USING COMPRESSION uncompressed,
    bars_fingerprint VARCHAR NOT NULL DEFAULT '',  -- of the bars it has seen (features_stream_check)
    state_codec    VARCHAR NOT NULL DEFAULT '',  -- how state is stored (quantcli.features.state_codec)
    PRIMARY KEY (feature_set, symbol)
);
ALTER TABLE feature_stream_state ADD COLUMN IF NOT EXISTS bars_fingerprint VARCHAR DEFAULT '';
-- A store from before the codec column: its states are the raw bytes ('').
ALTER TABLE feature_stream_state ADD COLUMN IF NOT EXISTS state_codec VARCHAR DEFAULT '';
