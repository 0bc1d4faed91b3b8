-- Nothing to undo (see 0003_change_feed.up.sql).
SELECT 1;
