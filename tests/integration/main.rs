//! The integration suite: one binary.
//! Native only: it needs processes, files and PostgreSQL (the browser runs
//! `browser/`).
#![cfg(not(target_family = "wasm"))]

mod change_files;
mod common;
mod concurrency;
mod crash;
mod file_store;
mod migrations;
mod pg_faults;
mod pg_feed;
mod pg_migrations;
mod pg_replica;
mod pg_store;
mod pg_sync;
mod pg_two_way;
mod properties;
mod server;

/// The conformance suite on an in-memory store.
mod conformance_memory {
    nexus_tests::conformance_tests!(crate::common::Fixture::memory());
}

/// The conformance suite on a store in a file.
mod conformance_file {
    nexus_tests::conformance_tests!(crate::common::Fixture::file());
}

/// The same conformance suite on PostgreSQL (`nexus-pg`).
mod conformance_postgres {
    nexus_tests::conformance_tests!(crate::common::PgFixture::new());
}
