-- Back to version 9: the feed of one tenant reads every tenant's changes.
DROP TRIGGER nexus_feed_insert ON version_history;
DROP TRIGGER nexus_feed_update ON version_history;
DROP TRIGGER nexus_feed_insert ON file_metadata;
DROP TRIGGER nexus_feed_update ON file_metadata;
DROP TRIGGER nexus_feed_insert ON tombstones;
DROP TRIGGER nexus_feed_update ON tombstones;
DROP FUNCTION nexus_note_feed_load();
DROP FUNCTION nexus_note_feed_all();
DROP FUNCTION nexus_note_feed();
DROP FUNCTION nexus_file_id(text);
DROP TABLE nexus_feed_tenants;
DROP INDEX idx_file_paths_tenant_feed;
DROP INDEX idx_content_chunks_tenant_feed;
