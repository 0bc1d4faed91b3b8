-- Nexus metadata store, initial schema (PostgreSQL dialect). Same version
-- and same tables as sqlite/0001_initial, with native types: uuid keys,
-- jsonb metadata (GIN-indexed), timestamptz (microseconds, UTC), bigint
-- sizes, and paths compared in byte order (COLLATE "C"), so ordering and
-- prefix ranges equal the embedded store's. Foreign keys are deferred to
-- commit, so that one sync transaction can apply rows in any order.

CREATE TABLE nexus_state (
    id         integer PRIMARY KEY CHECK (id = 1),
    change_seq bigint NOT NULL,
    store_id   text NOT NULL
);
INSERT INTO nexus_state (id, change_seq, store_id)
    VALUES (1, 0, replace(gen_random_uuid()::text, '-', ''));

CREATE TABLE file_paths (
    path_id         uuid PRIMARY KEY,
    tenant_id       text COLLATE "C" NOT NULL DEFAULT 'default',
    virtual_path    text COLLATE "C" NOT NULL,
    backend_id      text NOT NULL,
    physical_path   text NOT NULL,
    size_bytes      bigint NOT NULL CHECK (size_bytes >= 0),
    content_hash    text,
    file_type       text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    deleted_at      timestamptz,
    current_version integer NOT NULL DEFAULT 1 CHECK (current_version >= 1),
    change_seq      bigint NOT NULL
);
CREATE UNIQUE INDEX uq_file_paths_live_path
    ON file_paths (tenant_id, virtual_path) WHERE deleted_at IS NULL;
CREATE INDEX idx_file_paths_change_seq ON file_paths (change_seq);

CREATE TABLE file_metadata (
    path_id    uuid NOT NULL REFERENCES file_paths (path_id) ON DELETE CASCADE
                   DEFERRABLE INITIALLY DEFERRED,
    key        text COLLATE "C" NOT NULL,
    value      jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    change_seq bigint NOT NULL,
    PRIMARY KEY (path_id, key)
);
CREATE INDEX idx_file_metadata_key ON file_metadata (key);
CREATE INDEX idx_file_metadata_value_gin ON file_metadata USING gin (value);
CREATE INDEX idx_file_metadata_change_seq ON file_metadata (change_seq);

CREATE TABLE version_history (
    version_id        uuid PRIMARY KEY,
    path_id           uuid NOT NULL REFERENCES file_paths (path_id) ON DELETE CASCADE
                          DEFERRABLE INITIALLY DEFERRED,
    version_number    integer NOT NULL CHECK (version_number >= 1),
    backend_id        text NOT NULL,
    physical_path     text NOT NULL,
    content_hash      text,
    size_bytes        bigint NOT NULL CHECK (size_bytes >= 0),
    mime_type         text,
    parent_version_id uuid REFERENCES version_history (version_id) ON DELETE SET NULL
                          DEFERRABLE INITIALLY DEFERRED,
    source_type       text NOT NULL CHECK (source_type IN ('original', 'update', 'rollback')),
    change_reason     text,
    created_by        text,
    created_at        timestamptz NOT NULL,
    change_seq        bigint NOT NULL,
    UNIQUE (path_id, version_number)
);
CREATE INDEX idx_version_history_change_seq ON version_history (change_seq);

CREATE TABLE content_chunks (
    tenant_id        text COLLATE "C" NOT NULL DEFAULT 'default',
    content_hash     text COLLATE "C" NOT NULL,
    size_bytes       bigint NOT NULL CHECK (size_bytes >= 0),
    storage_path     text NOT NULL,
    ref_count        bigint NOT NULL DEFAULT 1 CHECK (ref_count >= 0),
    created_at       timestamptz NOT NULL,
    last_accessed_at timestamptz,
    protected_until  timestamptz,
    change_seq       bigint NOT NULL,
    PRIMARY KEY (tenant_id, content_hash)
);
CREATE INDEX idx_content_chunks_gc
    ON content_chunks (tenant_id, protected_until) WHERE ref_count = 0;
CREATE INDEX idx_content_chunks_change_seq ON content_chunks (change_seq);

CREATE TABLE tombstones (
    table_name text COLLATE "C" NOT NULL,
    key1       text COLLATE "C" NOT NULL,
    key2       text COLLATE "C" NOT NULL,
    deleted_at timestamptz NOT NULL,
    change_seq bigint NOT NULL,
    PRIMARY KEY (table_name, key1, key2)
);
CREATE INDEX idx_tombstones_change_seq ON tombstones (change_seq);

-- Replication bookkeeping: how far each source store has been applied.
-- Written in the same transaction as the rows it covers.
CREATE TABLE nexus_sync_state (
    source_id  text PRIMARY KEY,
    watermark  bigint NOT NULL,
    synced_at  timestamptz NOT NULL
);
