-- Back to version 10: the triggers name their transaction through a
-- variable (0010's function as it was).
CREATE OR REPLACE FUNCTION nexus_note_feed() RETURNS trigger
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
