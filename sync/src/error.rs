//! The error type of `nexus-sync`.

/// A `Result` whose error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while replicating.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The target URL could not be parsed (the message never contains the password).
    #[error("invalid PostgreSQL URL {url}: {reason}")]
    InvalidUrl {
        /// The URL with its password replaced by `***`.
        url: String,
        /// Why.
        reason: String,
    },
    /// PostgreSQL refused or the connection failed.
    #[error("PostgreSQL error while {action}: {}", describe(source))]
    Postgres {
        /// What the replicator was doing.
        action: &'static str,
        /// The driver's error (carries the SQLSTATE, if any); already
        /// described in this error's message.
        source: tokio_postgres::Error,
    },
    /// The source store failed.
    #[error(transparent)]
    Store(#[from] nexus_core::Error),
    /// Migrating the target's schema failed.
    #[error(transparent)]
    Migration(#[from] nexus_migrations::MigrateError),
    /// A source value cannot be stored in PostgreSQL.
    #[error("{table}: {problem}")]
    Conversion {
        /// The table.
        table: &'static str,
        /// The row and the value.
        problem: String,
    },
    /// The target has applied more of this source than the source has: it
    /// belongs to another copy of the store, or the store was restored from
    /// an older backup.
    #[error(
        "the target has applied this store up to change {target}, but the store is only at {source_seq}; it was restored from an older copy or the target belongs to another copy"
    )]
    TargetAhead {
        /// The target's watermark.
        target: i64,
        /// The store's change sequence.
        source_seq: i64,
    },
    /// A change file starts after the point the target has applied its
    /// source through: the files in between are missing.
    #[error(
        "change file of source {source_id} covers changes ({after}, {through}], but the target has applied that source only through change {watermark}: apply the files in between first (or export again with --since {watermark})"
    )]
    ChangeFileGap {
        /// The source store.
        source_id: String,
        /// The target's watermark for it.
        watermark: i64,
        /// The file's exclusive lower bound.
        after: i64,
        /// The file's inclusive upper bound.
        through: i64,
    },
    /// A file of the source would become live at a path that a different
    /// live file of the target holds (one the source does not know: written
    /// into the target by something else). Nothing was applied.
    #[error(
        "conflict on {path} (tenant {tenant}): the source's file {incoming} would be live there, but the target's live file {held_by} holds the path"
    )]
    PathTaken {
        /// The tenant.
        tenant: String,
        /// The path.
        path: String,
        /// The target's live file there.
        held_by: String,
        /// The source's file.
        incoming: String,
    },
}

impl Error {
    /// Whether retrying the same operation may succeed: lost connections,
    /// serialization failures, deadlocks, server shutdowns, too many clients.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Postgres { source, .. } => is_retryable_pg(source),
            Error::Store(e) => e.is_retryable(),
            _ => false,
        }
    }

    /// Wraps a driver error with what was being done.
    pub fn pg(action: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
        move |source| Error::Postgres { action, source }
    }
}

/// The server's message and SQLSTATE (tokio-postgres displays only "db
/// error"), or the connection failure with its cause.
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
        if let Some(detail) = db.detail() {
            s.push_str(&format!("; {detail}"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    s
}

/// Classifies a PostgreSQL error by its SQLSTATE; errors without one
/// (I/O, closed connection) are connection failures and retryable.
pub fn is_retryable_pg(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        None => true,
        Some(code) => {
            let c = code.code();
            c.starts_with("08")                 // connection exception
                || c == "40001"                  // serialization_failure
                || c == "40P01"                  // deadlock_detected
                || c == "57P01"                  // admin_shutdown (pg_terminate_backend)
                || c == "57P02"                  // crash_shutdown
                || c == "57P03"                  // cannot_connect_now
                || c == "53300"                  // too_many_connections
                || c == "55P03" // lock_not_available
        }
    }
}
