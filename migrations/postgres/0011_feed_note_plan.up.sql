-- The feed's statement triggers (0010) name their transaction in their SQL
-- instead of through a PL/pgSQL variable. A variable is a parameter of
-- the statement, and a sync push plans every statement for its parameters
-- (sync/src/replicate.rs, begin_source): the trigger's insert was planned
-- again for every statement that fired it, two per upsert (its insert and
-- its update), 0.09 ms each. Without a parameter PostgreSQL keeps one plan.
-- (A subquery, so that the id is read once per statement, not per row.)
-- The rule of whose a row is stays 0010's.
CREATE OR REPLACE FUNCTION nexus_note_feed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'tombstones' THEN
        INSERT INTO nexus_feed_tenants (tenant_id, change_seq)
        SELECT DISTINCT CASE WHEN c.table_name = 'content_chunks' THEN c.key1 ELSE f.tenant_id END,
               (SELECT pg_current_xact_id()::text::bigint)
          FROM changed c
          LEFT JOIN file_paths f
            ON c.table_name = 'file_metadata' AND f.path_id = nexus_file_id(c.key1)
         WHERE c.change_seq = (SELECT pg_current_xact_id()::text::bigint)
           AND c.table_name IN ('content_chunks', 'file_metadata')
        ON CONFLICT (tenant_id, change_seq) DO NOTHING;
    ELSE
        INSERT INTO nexus_feed_tenants (tenant_id, change_seq)
        SELECT DISTINCT f.tenant_id, (SELECT pg_current_xact_id()::text::bigint) FROM changed c
          LEFT JOIN file_paths f ON f.path_id = c.path_id
         WHERE c.change_seq = (SELECT pg_current_xact_id()::text::bigint)
        ON CONFLICT (tenant_id, change_seq) DO NOTHING;
    END IF;
    RETURN NULL;
END
$$;
