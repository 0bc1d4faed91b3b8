\set r random(1, 1000000000)
SELECT applied FROM nexus_put('default', '/f/' || :r || '-' || :client_id, gen_random_uuid(), gen_random_uuid(), 's3', 'b/x', 1, 'e', NULL, now(), now(), NULL, NULL, NULL);
