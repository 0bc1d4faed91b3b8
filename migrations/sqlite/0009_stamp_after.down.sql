-- Nothing to undo (see 0009_stamp_after.up.sql).
SELECT 1;
