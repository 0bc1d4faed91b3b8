-- The change feed, and writes in one round trip (ARCHITECTURE.md, "Change
-- tracking on PostgreSQL").
--
-- 1. change_seq is now the id of the transaction that last wrote the row
--    (pg_current_xact_id(), a 64-bit id that never wraps), set by the
--    column's DEFAULT on insert and by `change_seq = DEFAULT` in every
--    update. Writers no longer take one counter row, so they do not queue
--    on each other. Ids are not commit-ordered; readers of the feed bound
--    what they read by the oldest transaction still running
--    (pg_snapshot_xmin), which makes the feed commit-safe.
-- 2. origin_id / origin_seq: where a row came from when another store
--    wrote it (a sync run, a change file): that store's id and its own
--    change sequence number. NULL for rows written here.
-- 3. nexus_state.change_seq is retired.
-- 4. nexus_put, nexus_set_metadata, nexus_rename, nexus_add_chunk_ref: the
--    store's writes as one statement each (one round trip, one transaction).

ALTER TABLE file_paths ADD COLUMN origin_id text, ADD COLUMN origin_seq bigint;
ALTER TABLE version_history ADD COLUMN origin_id text, ADD COLUMN origin_seq bigint;
ALTER TABLE file_metadata ADD COLUMN origin_id text, ADD COLUMN origin_seq bigint;
ALTER TABLE content_chunks ADD COLUMN origin_id text, ADD COLUMN origin_seq bigint;
ALTER TABLE tombstones ADD COLUMN origin_id text, ADD COLUMN origin_seq bigint;

-- Rows already here keep their old number as origin_seq (it is the source's
-- number for synced rows) and are stamped by this transaction, so that the
-- feed delivers them once.
ALTER TABLE file_paths ALTER COLUMN change_seq SET DEFAULT (pg_current_xact_id()::text::bigint);
ALTER TABLE version_history ALTER COLUMN change_seq SET DEFAULT (pg_current_xact_id()::text::bigint);
ALTER TABLE file_metadata ALTER COLUMN change_seq SET DEFAULT (pg_current_xact_id()::text::bigint);
ALTER TABLE content_chunks ALTER COLUMN change_seq SET DEFAULT (pg_current_xact_id()::text::bigint);
ALTER TABLE tombstones ALTER COLUMN change_seq SET DEFAULT (pg_current_xact_id()::text::bigint);
UPDATE file_paths SET origin_seq = change_seq, change_seq = DEFAULT;
UPDATE version_history SET origin_seq = change_seq, change_seq = DEFAULT;
UPDATE file_metadata SET origin_seq = change_seq, change_seq = DEFAULT;
UPDATE content_chunks SET origin_seq = change_seq, change_seq = DEFAULT;
UPDATE tombstones SET origin_seq = change_seq, change_seq = DEFAULT;

ALTER TABLE nexus_state DROP COLUMN change_seq;

-- A put: create the live file at the path, or update it (a new version when
-- the etag changes, else the current version's row in place), under an
-- optional precondition (p_expect: NULL, 'absent', 'version' with
-- p_expect_version, 'etag' with p_expect_etag). Returns one row: whether it
-- was applied, and the file as it now is (applied) or as it was found
-- (not applied; no columns when there was none). Concurrent first puts of
-- one path: one inserts, the others wait for it and update its row.
CREATE FUNCTION nexus_put(
    p_tenant text, p_path text, p_new_id uuid, p_version_id uuid,
    p_backend text, p_physical text, p_size bigint, p_etag text, p_mime text,
    p_created timestamptz, p_modified timestamptz,
    p_expect text, p_expect_version integer, p_expect_etag text)
RETURNS TABLE (applied boolean, path_id uuid, virtual_path text, backend_id text,
    physical_path text, size_bytes bigint, content_hash text, file_type text,
    created_at timestamptz, updated_at timestamptz, current_version integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    r file_paths%ROWTYPE;
BEGIN
    LOOP
        SELECT * INTO r FROM file_paths f
         WHERE f.tenant_id = p_tenant AND f.virtual_path = p_path AND f.deleted_at IS NULL
           FOR UPDATE;
        IF FOUND THEN
            IF p_expect = 'absent'
               OR (p_expect = 'version' AND r.current_version <> p_expect_version)
               OR (p_expect = 'etag' AND r.content_hash IS DISTINCT FROM p_expect_etag) THEN
                RETURN QUERY SELECT false, r.path_id, r.virtual_path, r.backend_id, r.physical_path,
                    r.size_bytes, r.content_hash, r.file_type, r.created_at, r.updated_at,
                    r.current_version;
                RETURN;
            END IF;
            IF r.content_hash IS DISTINCT FROM p_etag THEN
                INSERT INTO version_history (version_id, path_id, version_number, backend_id,
                    physical_path, content_hash, size_bytes, mime_type, parent_version_id,
                    source_type, change_reason, created_by, created_at)
                SELECT p_version_id, r.path_id, r.current_version + 1, p_backend, p_physical,
                    p_etag, p_size, p_mime, (SELECT v.version_id FROM version_history v
                        WHERE v.path_id = r.path_id AND v.version_number = r.current_version),
                    'update', NULL, NULL, p_modified;
                r.current_version := r.current_version + 1;
            ELSE
                UPDATE version_history v SET backend_id = p_backend, physical_path = p_physical,
                    size_bytes = p_size, mime_type = p_mime, origin_id = NULL, origin_seq = NULL,
                    change_seq = DEFAULT
                 WHERE v.path_id = r.path_id AND v.version_number = r.current_version;
            END IF;
            UPDATE file_paths f SET backend_id = p_backend, physical_path = p_physical,
                size_bytes = p_size, content_hash = p_etag, file_type = p_mime,
                updated_at = p_modified, current_version = r.current_version,
                origin_id = NULL, origin_seq = NULL, change_seq = DEFAULT
             WHERE f.path_id = r.path_id;
            RETURN QUERY SELECT true, r.path_id, p_path, p_backend, p_physical, p_size, p_etag,
                p_mime, r.created_at, p_modified, r.current_version;
            RETURN;
        END IF;
        IF p_expect IN ('version', 'etag') THEN
            RETURN QUERY SELECT false, NULL::uuid, NULL::text, NULL::text, NULL::text,
                NULL::bigint, NULL::text, NULL::text, NULL::timestamptz, NULL::timestamptz,
                NULL::integer;
            RETURN;
        END IF;
        INSERT INTO file_paths (path_id, tenant_id, virtual_path, backend_id, physical_path,
            size_bytes, content_hash, file_type, created_at, updated_at, deleted_at,
            current_version)
        VALUES (p_new_id, p_tenant, p_path, p_backend, p_physical, p_size, p_etag, p_mime,
            p_created, p_modified, NULL, 1)
        ON CONFLICT (tenant_id, virtual_path) WHERE deleted_at IS NULL DO NOTHING;
        IF FOUND THEN
            INSERT INTO version_history (version_id, path_id, version_number, backend_id,
                physical_path, content_hash, size_bytes, mime_type, parent_version_id,
                source_type, change_reason, created_by, created_at)
            VALUES (p_version_id, p_new_id, 1, p_backend, p_physical, p_etag, p_size, p_mime,
                NULL, 'original', NULL, NULL, p_modified);
            RETURN QUERY SELECT true, p_new_id, p_path, p_backend, p_physical, p_size, p_etag,
                p_mime, p_created, p_modified, 1;
            RETURN;
        END IF;
        -- Another transaction created the path since our look: lock its row.
    END LOOP;
END
$$;

-- Metadata for several files (entries i: p_paths[i], p_keys[i],
-- p_values[i]; a later entry for the same file and key wins). All or
-- nothing: returns the first path with no live file (and writes nothing),
-- or NULL when every entry was written.
CREATE FUNCTION nexus_set_metadata(
    p_tenant text, p_paths text[], p_keys text[], p_values jsonb[], p_now timestamptz)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    locked_paths text[];
    locked_ids uuid[];
    missing text;
BEGIN
    -- Lock the live files named (they cannot be deleted or renamed until
    -- commit) and decide everything on exactly those rows.
    SELECT array_agg(l.virtual_path), array_agg(l.path_id) INTO locked_paths, locked_ids
      FROM (SELECT f.virtual_path, f.path_id FROM file_paths f
             WHERE f.tenant_id = p_tenant AND f.virtual_path = ANY (p_paths) AND f.deleted_at IS NULL
             ORDER BY f.path_id FOR SHARE) AS l;
    SELECT e.p INTO missing FROM unnest(p_paths) WITH ORDINALITY AS e (p, n)
     WHERE locked_paths IS NULL OR NOT (e.p = ANY (locked_paths))
     ORDER BY e.n LIMIT 1;
    IF missing IS NOT NULL THEN
        RETURN missing;
    END IF;
    INSERT INTO file_metadata (path_id, key, value, created_at, updated_at)
    SELECT DISTINCT ON (l.id, e.k) l.id, e.k, e.v, p_now, p_now
      FROM unnest(p_paths, p_keys, p_values) WITH ORDINALITY AS e (p, k, v, n)
      JOIN unnest(locked_paths, locked_ids) AS l (p, id) ON l.p = e.p
     ORDER BY l.id, e.k, e.n DESC
    ON CONFLICT (path_id, key) DO UPDATE SET value = EXCLUDED.value,
        updated_at = EXCLUDED.updated_at, origin_id = NULL, origin_seq = NULL,
        change_seq = DEFAULT;
    -- A new statement, so it sees a tombstone committed since the insert began.
    DELETE FROM tombstones t
     USING unnest(p_paths, p_keys) AS e (p, k)
      JOIN unnest(locked_paths, locked_ids) AS l (p, id) ON l.p = e.p
     WHERE t.table_name = 'file_metadata' AND t.key1 = l.id::text AND t.key2 = e.k;
    RETURN NULL;
END
$$;

-- A new reference to a content chunk (created with one reference, or one
-- more), and its tombstone cleared (in a statement of its own, so that it
-- sees a removal committed while the upsert waited). Returns the chunk.
CREATE FUNCTION nexus_add_chunk_ref(
    p_tenant text, p_hash text, p_size bigint, p_storage text, p_now timestamptz)
RETURNS SETOF content_chunks
LANGUAGE plpgsql AS $$
DECLARE
    c content_chunks%ROWTYPE;
BEGIN
    INSERT INTO content_chunks (tenant_id, content_hash, size_bytes, storage_path, ref_count,
        created_at, last_accessed_at, protected_until)
    VALUES (p_tenant, p_hash, p_size, p_storage, 1, p_now, p_now, NULL)
    ON CONFLICT (tenant_id, content_hash) DO UPDATE SET ref_count = content_chunks.ref_count + 1,
        last_accessed_at = EXCLUDED.last_accessed_at, protected_until = NULL, origin_id = NULL,
        origin_seq = NULL, change_seq = DEFAULT
    RETURNING * INTO c;
    DELETE FROM tombstones t
     WHERE t.table_name = 'content_chunks' AND t.key1 = p_tenant AND t.key2 = p_hash;
    RETURN NEXT c;
END
$$;

-- A rename of the file at p_old and of every live file below p_old || '/'
-- (p_old_dir; p_old_upper is the end of that range, as the store computes
-- it) to p_new. Returns (status, moved, detail): 'not_found' (nothing at
-- p_old), 'exists' (p_new is a live file or has live files below it),
-- 'too_long' (detail: the first new path over p_max_bytes), 'renamed'.
CREATE FUNCTION nexus_rename(
    p_tenant text, p_old text, p_old_dir text, p_old_upper text,
    p_new text, p_new_dir text, p_new_upper text, p_now timestamptz, p_max_bytes integer)
RETURNS TABLE (status text, moved integer, detail text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    ids uuid[];
    n integer;
    long_path text;
BEGIN
    -- Two renames to one destination take turns (the second then sees the
    -- first's files there and refuses, as it would one after the other).
    PERFORM pg_advisory_xact_lock(hashtextextended(p_tenant || '/' || p_new, 0));
    -- The files to move, locked; every later step works on exactly these.
    SELECT array_agg(l.path_id) INTO ids
      FROM (SELECT f.path_id FROM file_paths f
             WHERE f.tenant_id = p_tenant AND f.deleted_at IS NULL
               AND (f.virtual_path = p_old
                    OR (f.virtual_path >= p_old_dir AND f.virtual_path < p_old_upper))
             ORDER BY f.virtual_path FOR UPDATE) AS l;
    IF ids IS NULL THEN
        RETURN QUERY SELECT 'not_found'::text, 0, NULL::text;
        RETURN;
    END IF;
    IF p_old = p_new THEN
        RETURN QUERY SELECT 'renamed'::text, 0, NULL::text;
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM file_paths f WHERE f.tenant_id = p_tenant AND f.deleted_at IS NULL
                  AND (f.virtual_path = p_new
                       OR (f.virtual_path >= p_new_dir AND f.virtual_path < p_new_upper))) THEN
        RETURN QUERY SELECT 'exists'::text, 0, NULL::text;
        RETURN;
    END IF;
    SELECT p_new || substr(f.virtual_path, char_length(p_old) + 1) INTO long_path
      FROM file_paths f
     WHERE f.path_id = ANY (ids)
       AND octet_length(p_new || substr(f.virtual_path, char_length(p_old) + 1)) > p_max_bytes
     ORDER BY f.virtual_path LIMIT 1;
    IF long_path IS NOT NULL THEN
        RETURN QUERY SELECT 'too_long'::text, 0, long_path;
        RETURN;
    END IF;
    UPDATE file_paths f SET virtual_path = p_new || substr(f.virtual_path, char_length(p_old) + 1),
        updated_at = p_now, origin_id = NULL, origin_seq = NULL, change_seq = DEFAULT
     WHERE f.path_id = ANY (ids);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN QUERY SELECT 'renamed'::text, n, NULL::text;
END
$$;
