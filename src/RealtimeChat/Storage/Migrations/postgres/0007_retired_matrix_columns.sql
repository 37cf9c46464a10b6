-- The version before 0006 names messages.matrix_event_id and message_reactions.matrix_event_id in every message it
-- stores and reads. With them dropped, an instance of it still serving during a rolling update (migrations run
-- first, then the pods are replaced one by one) answered 500 to every send and every message list. They come back,
-- empty and for that version only: it stores and reads messages as before, while its Matrix work, which would record
-- event ids where this version never reads them, fails on the check and is retried by the new instances (as its
-- appservice pushes are: matrix_inbound_events is gone). Drop both in a release after this one is everywhere.
ALTER TABLE messages ADD COLUMN matrix_event_id text CONSTRAINT ck_messages_matrix_event_id_retired CHECK (matrix_event_id IS NULL);
ALTER TABLE message_reactions ADD COLUMN matrix_event_id text CONSTRAINT ck_message_reactions_matrix_event_id_retired CHECK (matrix_event_id IS NULL);
