-- Every Matrix event the bridge knows, whichever side made it, and what it is in the chat: the bridge's own table, so
-- messages and reactions no longer carry Matrix ids. The primary key keeps its old rule (a Matrix event changes the
-- chat at most once; an event we posted ourselves is known too, so its echo is never applied).
ALTER TABLE matrix_inbound_events RENAME TO matrix_events;
ALTER TABLE matrix_events RENAME COLUMN applied_at TO recorded_at;
DROP INDEX ix_matrix_inbound_events_applied;
CREATE INDEX ix_matrix_events_recorded ON matrix_events (recorded_at);
-- The message the event is (m.room.message) or reacts to (m.reaction, with who reacted with what); its seq places
-- the event in the conversation (read receipts).
ALTER TABLE matrix_events ADD COLUMN message_id text REFERENCES messages (id) ON DELETE CASCADE;
ALTER TABLE matrix_events ADD COLUMN message_seq integer;
ALTER TABLE matrix_events ADD COLUMN reaction_user_id text;
ALTER TABLE matrix_events ADD COLUMN reaction text;

INSERT INTO matrix_events (event_id, conversation_id, recorded_at, message_id, message_seq)
SELECT matrix_event_id, conversation_id, created_at, id, seq FROM messages WHERE matrix_event_id IS NOT NULL
    ON CONFLICT (event_id) DO UPDATE SET message_id = excluded.message_id, message_seq = excluded.message_seq;
INSERT INTO matrix_events (event_id, conversation_id, recorded_at, message_id, message_seq, reaction_user_id, reaction)
SELECT r.matrix_event_id, m.conversation_id, r.created_at, m.id, m.seq, r.user_id, r.reaction
  FROM message_reactions r JOIN messages m ON m.id = r.message_id
 WHERE r.matrix_event_id IS NOT NULL
    ON CONFLICT (event_id) DO UPDATE
   SET message_id = excluded.message_id, message_seq = excluded.message_seq,
       reaction_user_id = excluded.reaction_user_id, reaction = excluded.reaction;

-- A message is one Matrix event; a reaction may be several over time (added, removed, added again: the latest counts).
CREATE UNIQUE INDEX ux_matrix_events_message ON matrix_events (message_id) WHERE message_id IS NOT NULL AND reaction IS NULL;
CREATE INDEX ix_matrix_events_reaction ON matrix_events (message_id, reaction_user_id, reaction) WHERE reaction IS NOT NULL;
CREATE INDEX ix_matrix_events_timeline ON matrix_events (conversation_id, message_seq) WHERE message_seq IS NOT NULL AND reaction IS NULL;

-- An instance of the previous version still running during a rolling update fails on these (and its homeserver pushes
-- are retried on the new ones) rather than writing ids where nobody reads them.
DROP INDEX ix_messages_matrix_event;
DROP INDEX ix_reactions_matrix_event;
ALTER TABLE messages DROP COLUMN matrix_event_id;
ALTER TABLE message_reactions DROP COLUMN matrix_event_id;
