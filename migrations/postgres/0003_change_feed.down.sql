DROP FUNCTION nexus_add_chunk_ref(text, text, bigint, text, timestamptz);
DROP FUNCTION nexus_rename(text, text, text, text, text, text, text, timestamptz, integer);
DROP FUNCTION nexus_set_metadata(text, text[], text[], jsonb[], timestamptz);
DROP FUNCTION nexus_put(text, text, uuid, uuid, text, text, bigint, text, text, timestamptz,
    timestamptz, text, integer, text);

-- Back to one counter: every row gets a number above all numbers before.
ALTER TABLE nexus_state ADD COLUMN change_seq bigint NOT NULL DEFAULT 0;
ALTER TABLE nexus_state ALTER COLUMN change_seq DROP DEFAULT;
UPDATE file_paths SET change_seq = COALESCE(origin_seq, change_seq);
UPDATE version_history SET change_seq = COALESCE(origin_seq, change_seq);
UPDATE file_metadata SET change_seq = COALESCE(origin_seq, change_seq);
UPDATE content_chunks SET change_seq = COALESCE(origin_seq, change_seq);
UPDATE tombstones SET change_seq = COALESCE(origin_seq, change_seq);
UPDATE nexus_state SET change_seq = (SELECT COALESCE(MAX(s), 0) FROM (
    SELECT MAX(change_seq) AS s FROM file_paths UNION ALL
    SELECT MAX(change_seq) FROM version_history UNION ALL
    SELECT MAX(change_seq) FROM file_metadata UNION ALL
    SELECT MAX(change_seq) FROM content_chunks UNION ALL
    SELECT MAX(change_seq) FROM tombstones) AS m);

ALTER TABLE file_paths ALTER COLUMN change_seq DROP DEFAULT;
ALTER TABLE version_history ALTER COLUMN change_seq DROP DEFAULT;
ALTER TABLE file_metadata ALTER COLUMN change_seq DROP DEFAULT;
ALTER TABLE content_chunks ALTER COLUMN change_seq DROP DEFAULT;
ALTER TABLE tombstones ALTER COLUMN change_seq DROP DEFAULT;
ALTER TABLE file_paths DROP COLUMN origin_id, DROP COLUMN origin_seq;
ALTER TABLE version_history DROP COLUMN origin_id, DROP COLUMN origin_seq;
ALTER TABLE file_metadata DROP COLUMN origin_id, DROP COLUMN origin_seq;
ALTER TABLE content_chunks DROP COLUMN origin_id, DROP COLUMN origin_seq;
ALTER TABLE tombstones DROP COLUMN origin_id, DROP COLUMN origin_seq;
