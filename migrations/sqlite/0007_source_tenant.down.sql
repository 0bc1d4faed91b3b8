ALTER TABLE nexus_sync_state DROP COLUMN tenant_id;
