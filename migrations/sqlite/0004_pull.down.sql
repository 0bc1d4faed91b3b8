DROP INDEX idx_file_paths_hidden;
DROP TABLE nexus_pulled;
DROP TABLE nexus_pull_state;
