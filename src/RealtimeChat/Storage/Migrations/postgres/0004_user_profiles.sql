-- The display name from each user's token ("name" claim), the only profile this service sees; the bridge gives
-- it to the user's ghost.
CREATE TABLE user_profiles (
    user_id      uuid        PRIMARY KEY,
    display_name text        NOT NULL,
    updated_at   timestamptz NOT NULL
);
ALTER TABLE matrix_ghosts ADD COLUMN display_name text;
