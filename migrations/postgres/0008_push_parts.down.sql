DROP TABLE nexus_push_parts;
