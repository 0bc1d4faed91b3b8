-- The change feed reads each table in (change_seq, snapshot order), and a
-- page may end inside one transaction larger than a page, resuming after
-- the last row it read: `change_seq = T AND (change_seq, key...) > (T, ...)`.
-- These indexes serve both the ranges of stamps and that resumption (the
-- single-column ones they replace served only the first).
CREATE INDEX idx_file_paths_feed ON file_paths (change_seq, path_id);
CREATE INDEX idx_version_history_feed ON version_history (change_seq, path_id, version_number);
CREATE INDEX idx_file_metadata_feed ON file_metadata (change_seq, path_id, key);
CREATE INDEX idx_content_chunks_feed ON content_chunks (change_seq, tenant_id, content_hash);
CREATE INDEX idx_tombstones_feed ON tombstones (change_seq, table_name, key1, key2);
DROP INDEX idx_file_paths_change_seq;
DROP INDEX idx_version_history_change_seq;
DROP INDEX idx_file_metadata_change_seq;
DROP INDEX idx_content_chunks_change_seq;
DROP INDEX idx_tombstones_change_seq;
