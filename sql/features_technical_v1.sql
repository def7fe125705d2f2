-- The offline feature table of technical_v1 (feature_defs/technical_v1.toml): symbol, ts, then
-- the 29 features in declaration order. One row per bar after each symbol's warm-up.
-- tests/features/test_definitions.py checks these columns against the declaration.
CREATE TABLE IF NOT EXISTS technical_features_v1 (
    symbol        VARCHAR                  NOT NULL,
    ts            TIMESTAMP WITH TIME ZONE NOT NULL,
    nma_9         DOUBLE NOT NULL,
    nma_20        DOUBLE NOT NULL,
    nma_50        DOUBLE NOT NULL,
    nma_200       DOUBLE NOT NULL,
    bb_pct        DOUBLE NOT NULL,
    bb_width      DOUBLE NOT NULL,
    volume_z_20   DOUBLE NOT NULL,
    volume_z_50   DOUBLE NOT NULL,
    rsi_14        DOUBLE NOT NULL,
    rsi_21        DOUBLE NOT NULL,
    roc_10        DOUBLE NOT NULL,
    roc_20        DOUBLE NOT NULL,
    macd          DOUBLE NOT NULL,
    macd_signal   DOUBLE NOT NULL,
    macd_hist     DOUBLE NOT NULL,
    adx_14        DOUBLE NOT NULL,
    plus_di_14    DOUBLE NOT NULL,
    minus_di_14   DOUBLE NOT NULL,
    atr_14        DOUBLE NOT NULL,
    volatility_20 DOUBLE NOT NULL,
    volatility_50 DOUBLE NOT NULL,
    stoch_k       DOUBLE NOT NULL,
    stoch_d       DOUBLE NOT NULL,
    obv           DOUBLE NOT NULL,
    obv_ema       DOUBLE NOT NULL,
    return_1d     DOUBLE NOT NULL,
    return_5d     DOUBLE NOT NULL,
    return_10d    DOUBLE NOT NULL,
    return_20d    DOUBLE NOT NULL
    -- The key is (symbol, ts), unique by construction (a build deletes a symbol's rows before
    -- rewriting them; duplicate bars are refused). No PRIMARY KEY constraint: DuckDB keeps its
    -- ART index in memory, and committing 24 M rows with it failed under a 2 GB memory_limit.
);
