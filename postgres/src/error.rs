//! The one error type of Nexus's PostgreSQL layer, and how it is classified.

use std::time::Duration;

/// A `Result` whose error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong talking to PostgreSQL. A server error keeps its
/// SQLSTATE ([`Error::sqlstate`]) and the driver's error as its source;
/// [`Error::is_retryable`] and [`Error::outcome_unknown`] classify it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL could not be parsed (the message never contains the password).
    #[error("invalid PostgreSQL URL {url}: {reason}")]
    InvalidUrl {
        /// The URL with its password replaced by `***`.
        url: String,
        /// Why.
        reason: String,
    },
    /// The TLS settings (CA certificates) could not be used.
    #[error("PostgreSQL TLS settings: {reason}")]
    Tls {
        /// What is wrong, naming the file.
        reason: String,
    },
    /// A connection could not be made (nothing was sent).
    #[error("cannot connect to PostgreSQL: {}", describe(source))]
    Connect {
        /// The driver's error.
        source: tokio_postgres::Error,
    },
    /// PostgreSQL refused, or the connection failed.
    #[error("PostgreSQL error while {action}: {}", describe(source))]
    Postgres {
        /// What was being done.
        action: &'static str,
        /// The driver's error (carries the SQLSTATE, if any); already
        /// described in this error's message.
        source: tokio_postgres::Error,
    },
    /// Every connection of the pool stayed busy, or a new one could not be
    /// made, for the whole wait timeout.
    #[error(
        "no PostgreSQL connection became available within {waited:?} (all {size} pooled connections busy, or the server slow to accept new ones)"
    )]
    PoolTimeout {
        /// How long the call waited.
        waited: Duration,
        /// The pool's size.
        size: usize,
    },
    /// The pool itself failed (it was closed, say).
    #[error("PostgreSQL connection pool: {reason}")]
    Pool {
        /// What happened.
        reason: String,
    },
    /// Migrating the schema failed.
    #[error(transparent)]
    Migration(#[from] nexus_migrations::MigrateError),
}

impl Error {
    /// Wraps a driver error with what was being done.
    pub fn pg(action: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
        move |source| Error::Postgres { action, source }
    }

    /// The SQLSTATE the server answered with, if it answered.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Error::Postgres { source, .. } | Error::Connect { source } => {
                source.code().map(|c| c.code())
            }
            _ => None,
        }
    }

    /// Whether the same operation may succeed if tried again: lost
    /// connections, serialization failures, deadlocks, server shutdowns,
    /// too many clients, an exhausted pool. Whether trying again is *safe*
    /// is another question: see [`Error::outcome_unknown`].
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Postgres { source, .. } | Error::Connect { source } => is_retryable_pg(source),
            Error::PoolTimeout { .. } => true,
            _ => false,
        }
    }

    /// Whether a statement that was sent may nevertheless have taken
    /// effect: the connection broke with no answer from the server, so a
    /// commit in flight may or may not have happened. A server error
    /// (anything with a SQLSTATE, including `pg_terminate_backend`'s
    /// 57P01) means the transaction did not commit.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, Error::Postgres { source, .. } if source.code().is_none() && is_connection_failure(source))
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

/// Classifies a driver error by its SQLSTATE; of the errors without one,
/// connection failures (a closed connection, an I/O error) are retryable,
/// the driver's own (a value that does not convert, an unexpected row
/// count) are not.
pub fn is_retryable_pg(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        None => is_connection_failure(e),
        Some(code) => is_retryable_sqlstate(code.code()),
    }
}

/// Whether the connection closed or failed under the call.
fn is_connection_failure(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Whether a SQLSTATE says "try again": the transaction was rolled back
/// for a reason that has nothing to do with its content.
pub fn is_retryable_sqlstate(c: &str) -> bool {
    c.starts_with("08")                 // connection exception
        || c == "40001"                  // serialization_failure
        || c == "40P01"                  // deadlock_detected
        || c == "57P01"                  // admin_shutdown (pg_terminate_backend)
        || c == "57P02"                  // crash_shutdown
        || c == "57P03"                  // cannot_connect_now
        || c == "53300"                  // too_many_connections
        || c == "55P03" // lock_not_available
}

/// The SQLSTATE of a store error that came from PostgreSQL, if any (the
/// store keeps this crate's [`Error`] as its source).
pub fn sqlstate_of(e: &nexus_core::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(pg) = s.downcast_ref::<Error>() {
            return pg.sqlstate().map(str::to_string);
        }
        source = s.source();
    }
    None
}

impl From<Error> for nexus_core::Error {
    /// Retryable failures become [`nexus_core::Error::Unavailable`], a
    /// failed migration stays one, anything else is an engine error; the
    /// PostgreSQL error is kept as the source.
    fn from(e: Error) -> Self {
        let context = match &e {
            Error::Postgres { action, .. } => *action,
            Error::Connect { .. } => "connecting to PostgreSQL",
            Error::PoolTimeout { .. } => "taking a PostgreSQL connection from the pool",
            Error::InvalidUrl { .. } | Error::Tls { .. } | Error::Pool { .. } => {
                "connecting to PostgreSQL"
            }
            Error::Migration(_) => "migrating the PostgreSQL schema",
        };
        match e {
            Error::Migration(m) => nexus_core::Error::Migration(m),
            e if e.is_retryable() => nexus_core::Error::Unavailable {
                context,
                outcome_unknown: e.outcome_unknown(),
                source: Box::new(e),
            },
            e => nexus_core::Error::Engine {
                context,
                source: Box::new(e),
            },
        }
    }
}
