CREATE TABLE conversations (
    id               uuid        PRIMARY KEY,
    kind             text        NOT NULL CHECK (kind IN ('direct', 'group')),
    name             text,
    -- "<smaller uuid>:<larger uuid>" so a second create of the same direct conversation finds the first.
    direct_key       text        UNIQUE,
    created_by       uuid        NOT NULL,
    created_at       timestamptz NOT NULL,
    last_seq         bigint      NOT NULL DEFAULT 0,
    last_message_id  uuid,
    last_activity_at timestamptz NOT NULL
);
CREATE INDEX ix_conversations_activity ON conversations (last_activity_at DESC, id DESC);

CREATE TABLE conversation_members (
    conversation_id uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id         uuid        NOT NULL,
    role            text        NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    joined_at       timestamptz NOT NULL,
    last_read_seq   bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, user_id)
);
CREATE INDEX ix_conversation_members_user ON conversation_members (user_id);

CREATE TABLE media (
    id              uuid        PRIMARY KEY,
    conversation_id uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    uploader_id     uuid        NOT NULL,
    storage_key     text        NOT NULL,
    content_type    text        NOT NULL,
    size_bytes      bigint      NOT NULL,
    duration_ms     integer,
    file_name       text,
    -- per-file data key, itself encrypted with a content key (names its key id)
    wrapped_key     bytea       NOT NULL,
    created_at      timestamptz NOT NULL
);

CREATE TABLE messages (
    id                uuid        PRIMARY KEY,
    conversation_id   uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq               bigint      NOT NULL,
    sender_id         uuid        NOT NULL,
    kind              text        NOT NULL CHECK (kind IN ('text', 'audio', 'image', 'file')),
    -- AES-256-GCM ciphertext of the body (and media reference); NULL once deleted
    content           bytea,
    media_id          uuid        REFERENCES media (id),
    reply_to          uuid,
    client_message_id text,
    created_at        timestamptz NOT NULL,
    edited_at         timestamptz,
    deleted_at        timestamptz,
    matrix_event_id   text,
    UNIQUE (conversation_id, seq),
    UNIQUE (conversation_id, sender_id, client_message_id)
);

CREATE TABLE message_reactions (
    message_id      uuid        NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    user_id         uuid        NOT NULL,
    reaction        text        NOT NULL,
    created_at      timestamptz NOT NULL,
    matrix_event_id text,
    PRIMARY KEY (message_id, user_id, reaction)
);

-- Every stored chat change, in per-conversation order. Clients resume from it after a reconnect.
-- Payloads never hold message content: replays render the message's current (decrypted) state.
CREATE TABLE conversation_events (
    conversation_id uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq             bigint      NOT NULL,
    type            text        NOT NULL,
    actor_id        uuid,
    message_id      uuid,
    payload         text        NOT NULL,
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);

CREATE TABLE matrix_room_mapping (
    conversation_id uuid        PRIMARY KEY REFERENCES conversations (id) ON DELETE CASCADE,
    matrix_room_id  text        UNIQUE,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);

-- Content key ids that have encrypted rows, so start-up can refuse a key set that cannot read them.
CREATE TABLE encryption_keys_used (
    key_id        text        PRIMARY KEY,
    first_used_at timestamptz NOT NULL
);
