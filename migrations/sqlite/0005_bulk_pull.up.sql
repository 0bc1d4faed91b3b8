-- A first pull (`nexus pull` into an empty store) loads the database's
-- snapshot in chunks, each committed with the point it reached, so that a
-- cut loses at most one chunk and the next pull resumes from there. While
-- its row is here the load is unfinished: the loaded tables' secondary
-- indexes are dropped (rebuilt when it finishes) and the store refuses
-- every other write.
CREATE TABLE nexus_bulk_pull (
    hub_id     TEXT PRIMARY KEY NOT NULL,  -- the database being loaded
    position   INTEGER NOT NULL,           -- feed position of its first snapshot
    change_seq INTEGER NOT NULL,           -- the stamp of every row it loads
    resume     TEXT NOT NULL,              -- JSON: the table and key loaded through
    indexes    TEXT NOT NULL               -- JSON: the dropped indexes' definitions
);
