-- Nexus metadata store, initial schema (SQLite dialect).
--
-- Conventions:
--   * Timestamps are INTEGER microseconds since the Unix epoch, UTC. They are
--     always written by the store (never by SQL: datetime('now') is not
--     available on every platform the store runs on).
--   * Every write transaction takes the next value of nexus_state.change_seq
--     and stamps it on every row it writes; deletes that remove a row leave a
--     row in tombstones instead. Sync reads "everything with change_seq > W".
--   * Paths compare in byte order (BINARY collation), case-sensitively.

CREATE TABLE nexus_state (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    change_seq INTEGER NOT NULL,
    store_id   TEXT NOT NULL  -- random, names this store as a sync source
);
INSERT INTO nexus_state (id, change_seq, store_id) VALUES (1, 0, lower(hex(randomblob(16))));

CREATE TABLE file_paths (
    path_id         TEXT PRIMARY KEY NOT NULL,  -- uuid v4, hyphenated lower-case
    tenant_id       TEXT NOT NULL DEFAULT 'default',
    virtual_path    TEXT NOT NULL,
    backend_id      TEXT NOT NULL,
    physical_path   TEXT NOT NULL,
    size_bytes      INTEGER NOT NULL CHECK (size_bytes >= 0),
    content_hash    TEXT,
    file_type       TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    deleted_at      INTEGER,
    current_version INTEGER NOT NULL DEFAULT 1 CHECK (current_version >= 1),
    change_seq      INTEGER NOT NULL
);
-- One live row per (tenant, path); soft-deleted rows keep their old identity.
CREATE UNIQUE INDEX uq_file_paths_live_path
    ON file_paths (tenant_id, virtual_path) WHERE deleted_at IS NULL;
CREATE INDEX idx_file_paths_change_seq ON file_paths (change_seq);

CREATE TABLE file_metadata (
    path_id    TEXT NOT NULL REFERENCES file_paths (path_id) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,  -- canonical JSON text (object keys sorted)
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    change_seq INTEGER NOT NULL,
    PRIMARY KEY (path_id, key)
);
CREATE INDEX idx_file_metadata_key_value ON file_metadata (key, value);
CREATE INDEX idx_file_metadata_change_seq ON file_metadata (change_seq);

CREATE TABLE version_history (
    version_id        TEXT PRIMARY KEY NOT NULL,  -- uuid v4
    path_id           TEXT NOT NULL REFERENCES file_paths (path_id) ON DELETE CASCADE,
    version_number    INTEGER NOT NULL CHECK (version_number >= 1),
    backend_id        TEXT NOT NULL,
    physical_path     TEXT NOT NULL,
    content_hash      TEXT,
    size_bytes        INTEGER NOT NULL CHECK (size_bytes >= 0),
    mime_type         TEXT,
    parent_version_id TEXT REFERENCES version_history (version_id) ON DELETE SET NULL,
    source_type       TEXT NOT NULL CHECK (source_type IN ('original', 'update', 'rollback')),
    change_reason     TEXT,
    created_by        TEXT,
    created_at        INTEGER NOT NULL,
    change_seq        INTEGER NOT NULL,
    UNIQUE (path_id, version_number)
);
CREATE INDEX idx_version_history_change_seq ON version_history (change_seq);

CREATE TABLE content_chunks (
    tenant_id        TEXT NOT NULL DEFAULT 'default',
    content_hash     TEXT NOT NULL,
    size_bytes       INTEGER NOT NULL CHECK (size_bytes >= 0),
    storage_path     TEXT NOT NULL,
    ref_count        INTEGER NOT NULL DEFAULT 1 CHECK (ref_count >= 0),
    created_at       INTEGER NOT NULL,
    last_accessed_at INTEGER,
    protected_until  INTEGER,
    change_seq       INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, content_hash)
);
CREATE INDEX idx_content_chunks_gc
    ON content_chunks (tenant_id, protected_until) WHERE ref_count = 0;
CREATE INDEX idx_content_chunks_change_seq ON content_chunks (change_seq);

-- Rows removed for good (metadata keys, collected chunks), so that sync can
-- propagate the removal. A key has either a live row or a tombstone, never both.
CREATE TABLE tombstones (
    table_name TEXT NOT NULL,
    key1       TEXT NOT NULL,
    key2       TEXT NOT NULL,
    deleted_at INTEGER NOT NULL,
    change_seq INTEGER NOT NULL,
    PRIMARY KEY (table_name, key1, key2)
);
CREATE INDEX idx_tombstones_change_seq ON tombstones (change_seq);
