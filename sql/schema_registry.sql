-- Model registry events: every promotion, rollback, governance override, rollout step, halt and
-- resume (who, when, why).
-- MLflow version tags carry the same facts; this table is the queryable, append-only history.
CREATE TABLE IF NOT EXISTS registry_events (
    event_id      VARCHAR PRIMARY KEY,               -- uuid4 hex
    ts            TIMESTAMP WITH TIME ZONE NOT NULL,  -- when (UTC)
    action        VARCHAR NOT NULL,                   -- promote | override | rollback | rollout | halt | resume
    model_name    VARCHAR NOT NULL,
    from_version  VARCHAR,                            -- production before (NULL if none)
    to_version    VARCHAR,                            -- production after
    actor         VARCHAR NOT NULL,                   -- who: getpass.getuser()
    reason        VARCHAR,                            -- why: --reason, or the gate summary
    forced        BOOLEAN NOT NULL DEFAULT FALSE,     -- promoted with --force despite gates
    tracking_uri  VARCHAR NOT NULL,                   -- which MLflow registry
    details       VARCHAR NOT NULL                    -- JSON: verdicts, reasons, history
);
