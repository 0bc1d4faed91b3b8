//! Replication of a Nexus store into PostgreSQL.
//!
//! The [`Replicator`] copies every record of a [`nexus_core::Store`] (all
//! tenants: files, metadata, versions, chunks, removals) into a PostgreSQL
//! database whose schema it migrates itself (the PostgreSQL dialect of
//! `nexus-migrations`). The first run into an empty database is a bulk load
//! by binary `COPY`; later runs send only what changed since the last
//! successful one, by the store's change sequence. Each run is one
//! PostgreSQL transaction that also records the new watermark, so a run that
//! fails at any point leaves the target as it was, and re-running converges:
//! nothing lost, nothing doubled. See `replicate.rs` for the details.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use nexus_sync::{PgUrl, Replicator};
//!
//! let store = nexus_core::Store::open("nexus.db").await?;
//! let target = PgUrl::parse("postgresql://nexus:secret@localhost/nexus")?;
//! let replicator = Replicator::new(store, target);
//! let report = replicator.sync().await?;
//! println!("{} rows up to change {}", report.rows(), report.to_seq);
//! assert!(replicator.verify().await?.equal());
//! # Ok(()) }
//! ```
//!
//! A change file of a store ([`nexus_core::ChangeFile`], from
//! `Store::export_changes`, the browser build's `exportChanges`) goes into
//! PostgreSQL by [`apply_change_file`], with the same watermark and the same
//! exactly-once rules as a sync run of that store.
//!
//! Errors say whether a retry may help ([`Error::is_retryable`], by
//! SQLSTATE); [`Replicator::sync`] retries those itself with backoff. A
//! [`PgUrl`] never prints its password.

#![warn(missing_docs)]

mod change_file;
mod convert;
mod dryrun;
mod error;
pub mod http;
mod pg_tables;
mod pull;
mod remote;
mod replicate;
mod resolve;
mod verify;

pub use change_file::{PushApplied, apply_change_file, apply_push};
pub use dryrun::{DryRunReport, MAX_LISTED_PROBLEMS};
pub use error::{Error, Result};
pub use http::HttpHub;
pub use nexus_core::protocol;
pub use nexus_postgres::PgUrl;
pub use pg_tables::{CopyInto, copy_into, pg_type};
pub use pull::{PullReport, SYNC_ROUNDS, SyncWithReport, pull, sync_with};
pub use remote::{Remote, push};
pub use replicate::{
    ProgressFn, Replicator, SyncMode, SyncOptions, SyncReport, TableStats, drop_secondary,
    rebuild_secondary, source_watermark,
};

/// The `application_name` of the sync's connections, as `pg_stat_activity` shows it.
pub const APPLICATION_NAME: &str = "nexus-sync";
pub use verify::{TableCheck, VerifyReport};
