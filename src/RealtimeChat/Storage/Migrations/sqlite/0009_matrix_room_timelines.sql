-- Where the bridge stopped reading each room's timeline (a /messages token): Synapse 1.67 drops, when it stops, the
-- events it had queued in memory for the appservice, and they are read from the timeline instead (RoomTimelines.cs).
CREATE TABLE matrix_room_timelines (
    matrix_room_id text        PRIMARY KEY,
    next_token     text        NOT NULL,
    updated_at     text        NOT NULL
);
