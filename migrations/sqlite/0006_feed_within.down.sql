ALTER TABLE nexus_pull_state DROP COLUMN within;
