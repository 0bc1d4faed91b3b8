DROP TABLE nexus_pulled;
DROP TABLE nexus_pull_state;
