-- The sync-state table gains `via`: how each source's watermark was last
-- advanced, by a sync run ('sync') or a change file ('change_file'). The
-- embedded dialect gets the whole table in its 0002 (same columns).
ALTER TABLE nexus_sync_state
    ADD COLUMN via text NOT NULL DEFAULT 'sync' CHECK (via IN ('sync', 'change_file'));
