-- Version 4 changes only the embedded dialect (where a store records its
-- pulls from PostgreSQL: see sqlite/0004_pull). Nothing changes here.
SELECT 1;
