-- Monitoring state in the offline store, so a restarted process (cron, service) loses nothing.
-- Timestamps are timezone-aware UTC. `monitor` names the monitored model alias ('production').

CREATE SEQUENCE IF NOT EXISTS monitor_prediction_seq START 1;

-- Every logged prediction and, once known, the realised outcome (`actual`, a forward return).
CREATE TABLE IF NOT EXISTS monitor_predictions (
    monitor     VARCHAR                  NOT NULL,
    seq         BIGINT                   NOT NULL DEFAULT nextval('monitor_prediction_seq'),
    symbol      VARCHAR,                            -- optional: lets outcomes arrive later
    ts          TIMESTAMP WITH TIME ZONE NOT NULL,  -- the prediction's as-of time
    prediction  DOUBLE                   NOT NULL,
    actual      DOUBLE,                             -- NULL until the label is known
    logged_at   TIMESTAMP WITH TIME ZONE NOT NULL,
    PRIMARY KEY (monitor, seq)
);

-- One row per calculate_metrics() call: the rolling-window metrics (guard reads the history).
CREATE TABLE IF NOT EXISTS monitor_metrics (
    monitor             VARCHAR                  NOT NULL,
    computed_at         TIMESTAMP WITH TIME ZONE NOT NULL,
    n_samples           BIGINT                   NOT NULL,
    n_periods           BIGINT                   NOT NULL,
    sharpe              DOUBLE,                 -- annualized, NULL below 2 periods
    max_drawdown        DOUBLE,                 -- negative fraction of peak wealth
    win_rate            DOUBLE,
    direction_accuracy  DOUBLE,
    correlation         DOUBLE,
    degraded            BOOLEAN                  NOT NULL,
    payload             VARCHAR                  NOT NULL  -- the full JSON result
);

-- The retraining trigger's memory: when training last completed.
CREATE TABLE IF NOT EXISTS monitor_trigger_state (
    monitor          VARCHAR PRIMARY KEY,
    last_trained_at  TIMESTAMP WITH TIME ZONE NOT NULL,
    updated_at       TIMESTAMP WITH TIME ZONE NOT NULL
);

-- Every drift check run through the CLI (retrain-check and guard read the latest).
CREATE TABLE IF NOT EXISTS monitor_drift_runs (
    run_id           VARCHAR PRIMARY KEY,
    checked_at       TIMESTAMP WITH TIME ZONE NOT NULL,
    baseline_source  VARCHAR NOT NULL,
    current_source   VARCHAR NOT NULL,
    n_features       INTEGER NOT NULL,
    n_drifted        INTEGER NOT NULL,
    drifted_features VARCHAR NOT NULL,  -- JSON list
    significant      VARCHAR NOT NULL,  -- JSON list of features in the significant PSI band
    summary          VARCHAR NOT NULL   -- JSON: per-feature statistics
);

-- Every guard evaluation, its findings and the rollback it performed (if any), and why.
CREATE TABLE IF NOT EXISTS monitor_guard_events (
    event_id      VARCHAR PRIMARY KEY,
    evaluated_at  TIMESTAMP WITH TIME ZONE NOT NULL,
    monitor       VARCHAR NOT NULL,
    severity      VARCHAR NOT NULL,  -- the worst finding: CRITICAL, WARNING or INFO
    findings      VARCHAR NOT NULL,  -- JSON list
    action        VARCHAR NOT NULL,  -- 'none', 'rollback', 'rollback-failed'
    detail        VARCHAR NOT NULL,  -- JSON: rollback result or error
    service       VARCHAR            -- JSON: the raw (cumulative) service counts read, if any
);

-- Every shadow comparison of a candidate against production.
CREATE TABLE IF NOT EXISTS monitor_shadow_runs (
    run_id          VARCHAR PRIMARY KEY,
    evaluated_at    TIMESTAMP WITH TIME ZONE NOT NULL,
    candidate       VARCHAR NOT NULL,
    against         VARCHAR NOT NULL,
    since           VARCHAR NOT NULL,
    pnl_divergence  DOUBLE,
    passed          BOOLEAN NOT NULL,
    summary         VARCHAR NOT NULL  -- JSON
);
