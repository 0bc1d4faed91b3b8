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
-- A pull leaves a file hidden (deleted_at = the smallest integer) while a
-- file this store pushed still holds its path and PostgreSQL's move of that
-- file is still to come; each later page looks for them.
CREATE INDEX idx_file_paths_hidden ON file_paths (deleted_at) WHERE deleted_at = -9223372036854775808;
