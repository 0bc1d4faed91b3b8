\set r random(1, 1000000000)
BEGIN;
UPDATE ctr SET v = v + 1 WHERE id = 1;
SELECT path_id FROM file_paths WHERE tenant_id = 'default' AND virtual_path = '/o/' || :r || '-' || :client_id AND deleted_at IS NULL FOR UPDATE;
INSERT INTO file_paths (path_id, tenant_id, virtual_path, backend_id, physical_path, size_bytes, content_hash, file_type, created_at, updated_at, deleted_at, current_version) VALUES (gen_random_uuid(), 'default', '/o/' || :r || '-' || :client_id, 's3', 'b/x', 1, 'e', NULL, now(), now(), NULL, 1) RETURNING path_id AS pid \gset
INSERT INTO version_history (version_id, path_id, version_number, backend_id, physical_path, content_hash, size_bytes, mime_type, parent_version_id, source_type, created_at) VALUES (gen_random_uuid(), :pid::uuid, 1, 's3', 'b/x', 'e', 1, NULL, NULL, 'original', now());
COMMIT;
