-- Parts of a push too large for one request (one local transaction of very
-- many rows), staged by a sync server (`/v1/push/part`) until the request
-- that brings the last part applies them all in one transaction; then
-- deleted. The parts of an upload that never completes are deleted a day
-- later. Only the upload's tenant may add to it or apply it.
CREATE TABLE nexus_push_parts (
    upload_id  text NOT NULL,
    part       integer NOT NULL,
    tenant_id  text NOT NULL,
    source_id  text NOT NULL,
    body       bytea NOT NULL,          -- the part: a change file
    staged_at  timestamptz NOT NULL,
    PRIMARY KEY (upload_id, part)
);
CREATE INDEX nexus_push_parts_staged_at ON nexus_push_parts (staged_at);
