-- Nothing to undo (see 0004_pull.up.sql).
SELECT 1;
