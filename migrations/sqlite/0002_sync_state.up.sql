-- Which other stores' changes this store has applied, and how far: the
-- same bookkeeping PostgreSQL targets keep (postgres/0001), so that a store
-- can apply change files (`nexus import-changes`) exactly once per source.
-- `watermark` is the last change sequence number of the source applied;
-- `via` says how it got here (always 'change_file' in an embedded store).
CREATE TABLE nexus_sync_state (
    source_id TEXT PRIMARY KEY NOT NULL,
    watermark INTEGER NOT NULL,
    synced_at INTEGER NOT NULL,  -- microseconds since the Unix epoch
    via       TEXT NOT NULL DEFAULT 'sync' CHECK (via IN ('sync', 'change_file'))
);
