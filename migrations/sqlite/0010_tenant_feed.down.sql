-- Nothing to undo (see 0010_tenant_feed.up.sql).
SELECT 1;
