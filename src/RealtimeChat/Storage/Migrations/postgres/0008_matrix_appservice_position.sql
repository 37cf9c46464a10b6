-- How far the homeserver's appservice transactions have come, for every instance to see: Synapse 1.67 can leave one
-- unsent at the end of a recovery and go on with the next ids (AppserviceTransactionGaps.cs says how we get it back).
-- One row; version makes every change a compare-and-set, so two instances answering pushes never both decide.
CREATE TABLE matrix_appservice_position (
    id                      integer     PRIMARY KEY CHECK (id = 1),
    last_txn_id             bigint,
    challenged_txn_id       bigint,
    gap_checks_paused_until timestamptz,
    version                 bigint      NOT NULL
);
INSERT INTO matrix_appservice_position (id, version) VALUES (1, 0);
