-- Version 9 changes only the PostgreSQL dialect (its write functions stamp
-- a change after the state it changes: see postgres/0009_stamp_after). An
-- embedded store stamps so in its own code; nothing changes here.
SELECT 1;
