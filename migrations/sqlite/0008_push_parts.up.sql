-- The table of a sync server's staged push parts, as PostgreSQL's 0008
-- (same tables in both dialects). An embedded store serves no pushes and
-- leaves it empty.
CREATE TABLE nexus_push_parts (
    upload_id  TEXT NOT NULL,
    part       INTEGER NOT NULL,
    tenant_id  TEXT NOT NULL,
    source_id  TEXT NOT NULL,
    body       BLOB NOT NULL,
    staged_at  INTEGER NOT NULL,        -- Unix milliseconds
    PRIMARY KEY (upload_id, part)
);
