-- The sync-state table gains `tenant_id`, as PostgreSQL's does in its 0007
-- (same columns in both dialects). A sync server binds a source store to
-- the tenant that first pushed for it; an embedded store, which applies
-- change files without tokens, leaves it NULL.
ALTER TABLE nexus_sync_state ADD COLUMN tenant_id TEXT;
