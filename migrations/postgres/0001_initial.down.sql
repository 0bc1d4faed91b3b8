DROP TABLE nexus_sync_state;
DROP TABLE tombstones;
DROP TABLE content_chunks;
DROP TABLE version_history;
DROP TABLE file_metadata;
DROP TABLE file_paths;
DROP TABLE nexus_state;
