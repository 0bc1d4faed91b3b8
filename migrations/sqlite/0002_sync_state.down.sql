DROP TABLE nexus_sync_state;
