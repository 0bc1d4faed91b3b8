-- Nothing was added (see the up script).
SELECT 1;
