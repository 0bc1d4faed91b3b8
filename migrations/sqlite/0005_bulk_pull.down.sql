DROP TABLE nexus_bulk_pull;
