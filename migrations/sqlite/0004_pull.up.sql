-- Pulls from PostgreSQL (`nexus pull`): how far this store has read each
-- database's change feed, and which of this store's own transactions were
-- pulls. A push sends only rows whose change_seq is not a pull's: what came
-- from PostgreSQL is not sent back, while a local write after a pull
-- restamps the row and is sent.
CREATE TABLE nexus_pull_state (
    hub_id    TEXT PRIMARY KEY NOT NULL,  -- the database's nexus_state.store_id
    position  INTEGER NOT NULL,           -- feed position read through
    pulled_at INTEGER NOT NULL            -- microseconds since the Unix epoch
);
CREATE TABLE nexus_pulled (
    change_seq INTEGER PRIMARY KEY NOT NULL
);
