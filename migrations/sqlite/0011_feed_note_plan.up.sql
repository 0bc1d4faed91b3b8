-- Version 11 changes only the PostgreSQL dialect (how the feed's triggers
-- name their transaction: see postgres/0011_feed_note_plan). Nothing
-- changes here.
SELECT 1;
