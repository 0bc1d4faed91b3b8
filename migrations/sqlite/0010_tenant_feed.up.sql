-- Version 10 changes only the PostgreSQL dialect (the transactions that
-- wrote each tenant's rows, for the feed of one tenant that a sync server
-- reads: see postgres/0010_tenant_feed). An embedded store is read whole by
-- its own pushes; nothing changes here.
SELECT 1;
