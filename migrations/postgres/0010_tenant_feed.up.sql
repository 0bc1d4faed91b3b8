-- The change feed of one tenant (what a sync server's pulls read) pages
-- and reads by the transactions that wrote that tenant's rows, instead of
-- scanning every tenant's changes since its position and dropping the
-- others' (pg/src/feed.rs, `read_tenant_page`; BENCHMARKS.md measured it:
-- a tenant's pull cost in proportion to all tenants' changes).
--
-- Files and chunks carry their tenant: an index on (tenant_id,
-- change_seq) finds the transactions that wrote a tenant's. Versions, keys
-- and removals do not: nexus_feed_tenants records which transactions
-- wrote them for which tenant, by statement triggers (cheaper than a
-- tenant column every writer would have to fill, and no writer can forget
-- them). NULL tenant: rows whose tenant was not known when they were
-- written (a version, a key or a key's removal of a file the writer could
-- not see, not yet or not at all): every tenant's feed reads those
-- transactions and keeps what is its own when it reads them.
-- Written in the same transaction as the rows, so a feed reader's snapshot
-- sees a transaction's rows and its entries together. Entries only grow:
-- one whose rows were all written again later stays, and its transaction
-- then reads as empty.
CREATE INDEX idx_file_paths_tenant_feed ON file_paths (tenant_id, change_seq);
CREATE INDEX idx_content_chunks_tenant_feed ON content_chunks (tenant_id, change_seq);

CREATE TABLE nexus_feed_tenants (
    tenant_id  text COLLATE "C",
    change_seq bigint NOT NULL
);
CREATE UNIQUE INDEX uq_feed_tenants ON nexus_feed_tenants (tenant_id, change_seq);
CREATE INDEX idx_feed_tenants_unknown ON nexus_feed_tenants (change_seq)
    WHERE tenant_id IS NULL;

-- The file a key's removal names (its key1, a file id as text), or NULL
-- when key1 is not one as the feed writes them (which names no file to
-- the feed's tenant filter either). A function, so that the lookup by it
-- uses file_paths' primary key.
CREATE FUNCTION nexus_file_id(p_key1 text) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_key1 ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                THEN p_key1::uuid END
$$;

-- The rule of whose a row is (the same as the feed's tenant filter): a
-- version or a key by its file's tenant, a removal of a chunk by the tenant
-- it names, a removal of a key by its file's (rows of other removals
-- belong to no tenant's feed). Statement triggers, with the statement's
-- rows as `changed`; only rows this transaction stamped (an update that
-- leaves change_seq alone is no change of the feed).
CREATE FUNCTION nexus_note_feed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    me bigint := pg_current_xact_id()::text::bigint;
BEGIN
    IF TG_TABLE_NAME = 'tombstones' THEN
        INSERT INTO nexus_feed_tenants (tenant_id, change_seq)
        SELECT DISTINCT CASE WHEN c.table_name = 'content_chunks' THEN c.key1 ELSE f.tenant_id END, me
          FROM changed c
          LEFT JOIN file_paths f
            ON c.table_name = 'file_metadata' AND f.path_id = nexus_file_id(c.key1)
         WHERE c.change_seq = me AND c.table_name IN ('content_chunks', 'file_metadata')
        ON CONFLICT (tenant_id, change_seq) DO NOTHING;
    ELSE
        INSERT INTO nexus_feed_tenants (tenant_id, change_seq)
        SELECT DISTINCT f.tenant_id, me FROM changed c
          LEFT JOIN file_paths f ON f.path_id = c.path_id
         WHERE c.change_seq = me
        ON CONFLICT (tenant_id, change_seq) DO NOTHING;
    END IF;
    RETURN NULL;
END
$$;

-- A trigger with a transition table fires on one event: two per table.
CREATE TRIGGER nexus_feed_insert AFTER INSERT ON version_history
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION nexus_note_feed();
CREATE TRIGGER nexus_feed_update AFTER UPDATE ON version_history
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION nexus_note_feed();
CREATE TRIGGER nexus_feed_insert AFTER INSERT ON file_metadata
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION nexus_note_feed();
CREATE TRIGGER nexus_feed_update AFTER UPDATE ON file_metadata
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION nexus_note_feed();
CREATE TRIGGER nexus_feed_insert AFTER INSERT ON tombstones
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION nexus_note_feed();
CREATE TRIGGER nexus_feed_update AFTER UPDATE ON tombstones
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION nexus_note_feed();

-- The entries of every row here, by the same rule, at once (the trigger
-- sees one statement's rows): for the rows already here when this
-- migration runs.
CREATE FUNCTION nexus_note_feed_all() RETURNS void
LANGUAGE sql AS $$
    INSERT INTO nexus_feed_tenants (tenant_id, change_seq)
    SELECT f.tenant_id, v.change_seq FROM version_history v
      LEFT JOIN file_paths f ON f.path_id = v.path_id
    UNION
    SELECT f.tenant_id, m.change_seq FROM file_metadata m
      LEFT JOIN file_paths f ON f.path_id = m.path_id
    UNION
    SELECT CASE WHEN t.table_name = 'content_chunks' THEN t.key1 ELSE f.tenant_id END, t.change_seq
      FROM tombstones t
      LEFT JOIN file_paths f
        ON t.table_name = 'file_metadata' AND f.path_id = nexus_file_id(t.key1)
     WHERE t.table_name IN ('content_chunks', 'file_metadata')
    ON CONFLICT (tenant_id, change_seq) DO NOTHING
$$;
SELECT nexus_note_feed_all();

-- The entries of a bulk load into an empty database, which turns the
-- triggers off while it copies (sync/src/replicate.rs, drop_secondary):
-- every row is this transaction's and every version and key has its file
-- here (the load re-adds the foreign keys after this, which checks it), so
-- the tenants of the files and of the chunks' removals are all of them,
-- found without the join nexus_note_feed_all makes for every row (0.7 s
-- for 300,000 files); and, as the trigger does, the unknown tenant when a
-- key's removal names a file that is not here (rare: a removal seen
-- before its file).
CREATE FUNCTION nexus_note_feed_load() RETURNS void
LANGUAGE sql AS $$
    INSERT INTO nexus_feed_tenants (tenant_id, change_seq)
    SELECT tenant_id, pg_current_xact_id()::text::bigint FROM file_paths
    UNION
    SELECT key1, pg_current_xact_id()::text::bigint FROM tombstones
     WHERE table_name = 'content_chunks'
    UNION
    SELECT NULL, pg_current_xact_id()::text::bigint
     WHERE EXISTS (SELECT 1 FROM tombstones t
                    WHERE t.table_name = 'file_metadata'
                      AND NOT EXISTS (SELECT 1 FROM file_paths f
                                       WHERE f.path_id = nexus_file_id(t.key1)))
    ON CONFLICT (tenant_id, change_seq) DO NOTHING
$$;
