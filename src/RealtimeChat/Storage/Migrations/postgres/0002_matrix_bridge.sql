-- Matrix-bound actions, written in the same transaction as the chat change they mirror, sent in id order
-- per conversation by the dispatcher. txn_id is fixed here so a retry can never post twice.
CREATE TABLE matrix_outbox (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq             bigint      NOT NULL,
    action          text        NOT NULL,
    actor_id        uuid,
    message_id      uuid,
    payload         text        NOT NULL,
    txn_id          text        NOT NULL UNIQUE,
    status          text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    last_error      text,
    created_at      timestamptz NOT NULL,
    sent_at         timestamptz,
    matrix_event_id text
);
CREATE INDEX ix_matrix_outbox_pending ON matrix_outbox (conversation_id, id) WHERE status = 'pending';
CREATE INDEX ix_matrix_outbox_message ON matrix_outbox (message_id) WHERE message_id IS NOT NULL;

-- Ghost users registered on the homeserver (appservice mode), so registration happens once per user.
CREATE TABLE matrix_ghosts (
    user_id        uuid        PRIMARY KEY,
    matrix_user_id text        NOT NULL UNIQUE,
    registered_at  timestamptz NOT NULL
);

-- Matrix users who are not app users, given a stable UUID so they can be conversation members.
CREATE TABLE matrix_external_users (
    user_id        uuid        PRIMARY KEY,
    matrix_user_id text        NOT NULL UNIQUE,
    display_name   text,
    created_at     timestamptz NOT NULL
);

-- Appservice transactions already processed (the homeserver retries a transaction with the same id).
CREATE TABLE matrix_appservice_transactions (
    txn_id      text        PRIMARY KEY,
    received_at timestamptz NOT NULL
);

-- Client mode: where the /sync loop resumes.
CREATE TABLE matrix_sync_state (
    account     text        PRIMARY KEY,
    next_batch  text        NOT NULL,
    updated_at  timestamptz NOT NULL
);

CREATE INDEX ix_messages_matrix_event ON messages (matrix_event_id) WHERE matrix_event_id IS NOT NULL;
CREATE INDEX ix_reactions_matrix_event ON message_reactions (matrix_event_id) WHERE matrix_event_id IS NOT NULL;
