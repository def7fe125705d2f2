INSERT INTO registry_events
    (event_id, ts, action, model_name, from_version, to_version, actor, reason, forced,
     tracking_uri, details)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?);
