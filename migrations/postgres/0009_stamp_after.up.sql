-- Every change is stamped after the state it changes: a metadata value or
-- a rename is stamped at the caller's clock, or one microsecond after the
-- key's value or removal (the file's row) when that is later, as the
-- embedded store does (core's `meta::stamp_after`). A state stamped ahead
-- (a store whose clock runs ahead, a file's modification time in the
-- future) then cannot outrank the change made to it where the later change
-- wins (change files). Deletions of files and of keys are stamped so by
-- the store's statements (pg/src/ops.rs), all through nexus_stamp_after;
-- a key is set only by nexus_set_keys (nexus_set_metadata, and a conflict
-- copy's `nexus.conflict` key: sync/src/replicate.rs).

-- The time to stamp a change made at p_now to a state stamped p_after
-- (NULL: none): p_now, or one microsecond after p_after when that is later.
CREATE FUNCTION nexus_stamp_after(p_now timestamptz, p_after timestamptz)
RETURNS timestamptz
-- STABLE, as timestamptz + interval is (so that it inlines).
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT GREATEST(p_now, p_after + interval '1 microsecond')
$$;

-- Keys of files by id (entries i: p_ids[i], p_keys[i], p_values[i]; a
-- later entry for the same file and key wins), as this database's own
-- change: each stamped after the key's value or removal, which it clears.
-- The one way a key is set here: nexus_set_metadata (by path) and a sync's
-- conflict copy (by id, the file not yet live) call it.
CREATE FUNCTION nexus_set_keys(p_ids uuid[], p_keys text[], p_values jsonb[], p_now timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO file_metadata (path_id, key, value, created_at, updated_at)
    SELECT DISTINCT ON (e.id, e.k) e.id, e.k, e.v, p_now, p_now
      FROM unnest(p_ids, p_keys, p_values) WITH ORDINALITY AS e (id, k, v, n)
     ORDER BY e.id, e.k, e.n DESC
    ON CONFLICT (path_id, key) DO UPDATE SET value = EXCLUDED.value,
        updated_at = nexus_stamp_after(EXCLUDED.updated_at, file_metadata.updated_at),
        origin_id = NULL, origin_seq = NULL, change_seq = DEFAULT;
    -- A new statement, so it sees a removal committed since the insert
    -- began; a value set again is stamped after the removal it undoes.
    WITH gone AS (
        DELETE FROM tombstones t USING unnest(p_ids, p_keys) AS e (id, k)
         WHERE t.table_name = 'file_metadata' AND t.key1 = e.id::text AND t.key2 = e.k
        RETURNING t.key1, t.key2, t.deleted_at)
    UPDATE file_metadata m SET updated_at = nexus_stamp_after(m.updated_at, g.deleted_at)
      FROM gone g
     WHERE m.path_id = g.key1::uuid AND m.key = g.key2 AND m.updated_at <= g.deleted_at;
END
$$;

-- Metadata for several files (entries i: p_paths[i], p_keys[i],
-- p_values[i]; a later entry for the same file and key wins). All or
-- nothing: returns the first path with no live file (and writes nothing),
-- or NULL when every entry was written (by nexus_set_keys).
CREATE OR REPLACE FUNCTION nexus_set_metadata(
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
    -- Each entry's file id, in the entries' order.
    PERFORM nexus_set_keys(
        ARRAY(SELECT l.id FROM unnest(p_paths) WITH ORDINALITY AS e (p, n)
                JOIN unnest(locked_paths, locked_ids) AS l (p, id) ON l.p = e.p
               ORDER BY e.n),
        p_keys, p_values, p_now);
    RETURN NULL;
END
$$;

-- A rename of the file at p_old and of every live file below p_old || '/'
-- (p_old_dir; p_old_upper is the end of that range, as the store computes
-- it) to p_new. Returns (status, moved, detail): 'not_found' (nothing at
-- p_old), 'exists' (p_new is a live file or has live files below it),
-- 'too_long' (detail: the first new path over p_max_bytes), 'renamed'.
CREATE OR REPLACE FUNCTION nexus_rename(
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
        updated_at = nexus_stamp_after(p_now, f.updated_at),
        origin_id = NULL, origin_seq = NULL, change_seq = DEFAULT
     WHERE f.path_id = ANY (ids);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN QUERY SELECT 'renamed'::text, n, NULL::text;
END
$$;
