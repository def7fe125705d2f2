-- Per-symbol fingerprint of the stored bars, kept by every ingest in the transaction that writes
-- the bars: the count, and the sum and xor of hash(ts, open, high, low, close, volume) of every
-- bar (features_bar_fingerprints.sql computes the same from the bars). A streaming build checks
-- a symbol's history against it without reading the history.
CREATE TABLE IF NOT EXISTS bar_fingerprints (
    symbol  VARCHAR PRIMARY KEY,
    n_bars  BIGINT  NOT NULL,
    fp_sum  HUGEINT NOT NULL,
    fp_xor  UBIGINT NOT NULL
);
