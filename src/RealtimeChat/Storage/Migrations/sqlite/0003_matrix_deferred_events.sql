-- Matrix events that relate to an event we do not know yet (typically one of ours whose id the dispatcher has
-- not recorded at the moment the homeserver pushed the relation). Applied as soon as the target is known.
CREATE TABLE matrix_deferred_events (
    event_id        text        PRIMARY KEY,
    target_event_id text        NOT NULL,
    payload         text        NOT NULL,
    received_at     text        NOT NULL
);
CREATE INDEX ix_matrix_deferred_target ON matrix_deferred_events (target_event_id);
