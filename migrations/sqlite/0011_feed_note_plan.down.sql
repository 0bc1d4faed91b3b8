-- Back to version 10: nothing to undo in this dialect.
SELECT 1;
