-- Matrix events already applied to the chat, written in the same transaction as the change each one made: the
-- primary key is what makes a redelivered event (retried or concurrent transaction, restarted homeserver) a no-op.
CREATE TABLE matrix_inbound_events (
    event_id        text        PRIMARY KEY,
    conversation_id uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    applied_at      timestamptz NOT NULL
);
CREATE INDEX ix_matrix_inbound_events_applied ON matrix_inbound_events (applied_at);
-- What earlier versions stored is known already (a homeserver may redeliver it after the upgrade).
INSERT INTO matrix_inbound_events (event_id, conversation_id, applied_at)
SELECT matrix_event_id, conversation_id, created_at FROM messages WHERE matrix_event_id IS NOT NULL
    ON CONFLICT (event_id) DO NOTHING;
INSERT INTO matrix_inbound_events (event_id, conversation_id, applied_at)
SELECT r.matrix_event_id, m.conversation_id, r.created_at FROM message_reactions r JOIN messages m ON m.id = r.message_id
 WHERE r.matrix_event_id IS NOT NULL
    ON CONFLICT (event_id) DO NOTHING;

-- Transaction ids are only unique until the homeserver restarts: a fast path keyed by the id and the events it held.
DROP TABLE matrix_appservice_transactions;
CREATE TABLE matrix_appservice_transactions (
    txn_id      text        NOT NULL,
    events_hash text        NOT NULL,
    received_at timestamptz NOT NULL,
    PRIMARY KEY (txn_id, events_hash)
);
CREATE INDEX ix_matrix_appservice_transactions_received ON matrix_appservice_transactions (received_at);

-- A portal (one conversation's room) is driven by one process at a time; token grows on every change of owner, so a
-- process that lost its portal cannot record outcomes any more.
CREATE TABLE matrix_portal_leases (
    conversation_id uuid        PRIMARY KEY REFERENCES conversations (id) ON DELETE CASCADE,
    owner           text        NOT NULL,
    token           bigint      NOT NULL,
    expires_at      timestamptz NOT NULL
);

-- Actions are sent in seq order: a room created late (Matrix enabled on existing data) gets its create_room and
-- backfill rows ahead of the actions already waiting. payload_version names the payload's shape; outcome_unknown
-- marks an action whose last attempt may have reached the homeserver (looked for before it is sent again).
ALTER TABLE matrix_outbox ADD COLUMN payload_version integer NOT NULL DEFAULT 1;
ALTER TABLE matrix_outbox ADD COLUMN outcome_unknown boolean NOT NULL DEFAULT false;
DROP INDEX ix_matrix_outbox_pending;
CREATE INDEX ix_matrix_outbox_pending ON matrix_outbox (conversation_id, seq, id) WHERE status = 'pending';
CREATE INDEX ix_matrix_outbox_failed ON matrix_outbox (conversation_id) WHERE status = 'failed';
