-- A source store's tenant: the tenant whose token first pushed for the
-- source through a sync server. From then on only that tenant's tokens may
-- push for the source, read its watermark or pull as it (403 otherwise):
-- another tenant cannot move its watermark or send rows under its id.
-- NULL for a source that only ever pushed directly (database credentials).
ALTER TABLE nexus_sync_state ADD COLUMN tenant_id text;
