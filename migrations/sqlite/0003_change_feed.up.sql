-- Version 3 changes only the PostgreSQL dialect (its change feed: see
-- postgres/0003_change_feed). An embedded store has one writer at a time,
-- so its change sequence is already commit-ordered; nothing changes here.
SELECT 1;
