-- A feed page may end inside one transaction of the database (one larger
-- than a page: a bulk push of a million files). The pull then records how
-- far into that transaction it got: its rows up to this one, the table and
-- key in snapshot order (JSON), are applied; NULL when the position is at
-- a transaction's end.
ALTER TABLE nexus_pull_state ADD COLUMN within TEXT;
