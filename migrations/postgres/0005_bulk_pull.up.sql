-- The embedded store's record of an unfinished first pull (its
-- nexus_bulk_pull table). A PostgreSQL store never pulls, so there is
-- nothing to add here: this version keeps both dialects' numbering together.
SELECT 1;
