\set r random(1, 1000000000)
INSERT INTO plain (tenant_id, path, backend_id, physical_path, size_bytes, content_hash, updated_at) VALUES ('default', '/p/' || :r || '-' || :client_id, 's3', 'b/x', 1, 'e', now()) ON CONFLICT (tenant_id, path) DO UPDATE SET size_bytes = EXCLUDED.size_bytes, updated_at = EXCLUDED.updated_at;
