//! The one error type of `nexus-core`.

use std::time::Duration;

/// A `Result` whose error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything a store operation can fail with. Every variant names the value
/// that was wrong; [`Error::kind`] classifies without matching strings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A path failed validation; nothing was read or written.
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Another argument failed validation; nothing was read or written.
    #[error("invalid {name} {value:?}: {reason}")]
    InvalidArgument {
        /// Which argument (`size`, `backend`, `tenant`, `key`, ...).
        name: &'static str,
        /// The value as given (shortened if very long).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No live file at this path (in this tenant).
    #[error("no such file: {path}")]
    NotFound {
        /// The path.
        path: String,
    },
    /// The destination of a create or rename already exists.
    #[error("already exists: {path}")]
    AlreadyExists {
        /// The path.
        path: String,
    },
    /// A conditional write saw a different state than the caller expected.
    #[error("conflict on {path}: expected {expected}, found {actual}")]
    Conflict {
        /// The path.
        path: String,
        /// What the caller expected (`version 3`, `etag "abc"`, `absent`).
        expected: String,
        /// What is stored.
        actual: String,
    },
    /// A first pull into this store (from the database `hub_id`) was cut
    /// before it finished: the store holds part of that database and
    /// refuses every write until a pull from it completes the load.
    #[error(
        "the first pull from database {hub_id} is unfinished: run the pull from that database again to complete it (the store refuses writes until then)"
    )]
    PullUnfinished {
        /// The database being loaded (its `nexus_state.store_id`).
        hub_id: String,
    },
    /// The file exists but has no such version.
    #[error("version {version} not found for {path}")]
    VersionNotFound {
        /// The path.
        path: String,
        /// The version asked for.
        version: u32,
    },
    /// No content chunk with this hash (in this tenant).
    #[error("no such content chunk: {content_hash}")]
    ChunkNotFound {
        /// The content hash.
        content_hash: String,
    },
    /// A pagination cursor was malformed or belongs to other filters.
    #[error("invalid cursor: {reason}")]
    InvalidCursor {
        /// Why it was rejected.
        reason: String,
    },
    /// A change file is malformed, of another format or version, or
    /// inconsistent; or it cannot be applied here (it comes from this very
    /// store). Nothing was written.
    #[error("invalid change file: {reason}")]
    InvalidChangeFile {
        /// What is wrong, naming the field or row.
        reason: String,
    },
    /// A change file starts after a point its target (this store, or
    /// PostgreSQL) has not reached for its source: the files in between are
    /// missing. Nothing was written.
    #[error(
        "change file of source {source_id} covers changes ({after}, {through}], but the target has applied that source only through change {applied}: apply the files in between first (or export again with --since {applied})"
    )]
    ChangeFileGap {
        /// The source store.
        source_id: String,
        /// Where the target is for that source.
        applied: i64,
        /// The file's exclusive lower bound.
        after: i64,
        /// The file's inclusive upper bound.
        through: i64,
    },
    /// The database stayed locked by another process for the whole busy timeout.
    /// Retrying later may succeed.
    #[error(
        "database {location} is busy (held by another process, or in a browser by another tab or worker){}",
        gave_up_after(.waited)
    )]
    Busy {
        /// The database file.
        location: String,
        /// How long the store waited.
        waited: Duration,
    },
    /// Migrating the schema failed.
    #[error(transparent)]
    Migration(#[from] nexus_migrations::MigrateError),
    /// A stored value could not be decoded: the file was changed outside the store.
    #[error("corrupt data in {table}: {detail}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// What was found.
        detail: String,
    },
    /// The file system refused (creating the database's folder, say).
    #[error("{action} {path}: {source}")]
    Io {
        /// What the store was doing.
        action: &'static str,
        /// The path involved.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The platform lacks something the store needs (in a browser: the
    /// Origin Private File System outside a Worker or in a private window).
    #[error("{feature} is not available here: {reason}")]
    Unsupported {
        /// What is missing.
        feature: &'static str,
        /// Why, and what to do instead.
        reason: String,
    },
    /// The database could not serve the call for a reason that has nothing
    /// to do with the call itself: the connection was lost, the server is
    /// restarting, the transaction was chosen as a deadlock or serialization
    /// victim, every pooled connection stayed busy. Nothing was applied,
    /// unless `outcome_unknown` says that a write was in flight when the
    /// connection broke (it may or may not have been committed). Retrying
    /// later may succeed; the store has already retried what was safe to.
    #[error(
        "database unavailable while {context}{}: {source}",
        if *outcome_unknown { " (the connection broke while the write was in flight: it may or may not have been applied)" } else { "" }
    )]
    Unavailable {
        /// What the store was doing.
        context: &'static str,
        /// Whether a write may have been applied although it failed.
        outcome_unknown: bool,
        /// The database's error (for PostgreSQL, it carries the SQLSTATE).
        #[source]
        source: BoxError,
    },
    /// The database engine failed.
    #[error("database engine error while {context}: {source}")]
    Engine {
        /// What the store was doing.
        context: &'static str,
        /// The engine's error.
        #[source]
        source: BoxError,
    },
}

/// A coarse classification of [`Error`], for callers deciding what to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input was invalid: fix the call.
    InvalidInput,
    /// Something asked for does not exist.
    NotFound,
    /// A destination already exists.
    AlreadyExists,
    /// A conditional write lost a race: re-read and retry.
    Conflict,
    /// The database is locked by another process: retry later.
    Busy,
    /// The schema could not be migrated.
    Migration,
    /// Stored data is damaged.
    Corrupt,
    /// The platform lacks a feature the store needs.
    Unsupported,
    /// The database is unreachable or gave up on the call for a passing
    /// reason (lost connection, restart, deadlock): retry later.
    Unavailable,
    /// The engine or the file system failed.
    Internal,
}

impl Error {
    /// The classification of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidPath { .. }
            | Error::InvalidArgument { .. }
            | Error::InvalidCursor { .. }
            | Error::InvalidChangeFile { .. }
            | Error::ChangeFileGap { .. } => ErrorKind::InvalidInput,
            Error::NotFound { .. }
            | Error::VersionNotFound { .. }
            | Error::ChunkNotFound { .. } => ErrorKind::NotFound,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::Conflict { .. } | Error::PullUnfinished { .. } => ErrorKind::Conflict,
            Error::Busy { .. } => ErrorKind::Busy,
            Error::Migration(_) => ErrorKind::Migration,
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::Io { .. } | Error::Engine { .. } => ErrorKind::Internal,
        }
    }

    /// A stable name for the variant (`"InvalidPath"`, `"NotFound"`,
    /// `"Conflict"`, ...), for callers across a language boundary: the
    /// browser package puts it in the `kind` of the JavaScript error.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidPath { .. } => "InvalidPath",
            Error::InvalidArgument { .. } => "InvalidArgument",
            Error::InvalidCursor { .. } => "InvalidCursor",
            Error::InvalidChangeFile { .. } => "InvalidChangeFile",
            Error::ChangeFileGap { .. } => "ChangeFileGap",
            Error::NotFound { .. } => "NotFound",
            Error::VersionNotFound { .. } => "VersionNotFound",
            Error::ChunkNotFound { .. } => "ChunkNotFound",
            Error::AlreadyExists { .. } => "AlreadyExists",
            Error::Conflict { .. } => "Conflict",
            Error::PullUnfinished { .. } => "PullUnfinished",
            Error::Busy { .. } => "Busy",
            Error::Migration(_) => "Migration",
            Error::Corrupt { .. } => "Corrupt",
            Error::Unsupported { .. } => "Unsupported",
            Error::Unavailable { .. } => "Unavailable",
            Error::Io { .. } => "Io",
            Error::Engine { .. } => "Internal",
        }
    }

    /// An arriving version of a file takes a version number that a
    /// different version of the file holds here, and the file's own row did
    /// not arrive with it: the conflict rule has no file to copy, so nothing
    /// is applied. One error for every side that applies rows (an embedded
    /// store's import, PostgreSQL's apply of a push or a change file).
    /// `source_id` is the store that wrote the arriving version, `here` the
    /// version that holds the number.
    pub fn version_clash(
        path: impl Into<String>,
        number: i64,
        version_id: &str,
        source_id: &str,
        here: &str,
    ) -> Error {
        Error::Conflict {
            path: path.into(),
            expected: format!("version {number} to be {version_id} (from source {source_id})"),
            actual: format!(
                "{here}; the file was changed here too, and its row did not arrive with its versions"
            ),
        }
    }

    /// Whether the same call may succeed if retried later.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind(), ErrorKind::Busy | ErrorKind::Unavailable)
    }

    pub(crate) fn invalid(name: &'static str, value: &str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            name,
            value: shorten(value),
            reason: reason.into(),
        }
    }

    /// A failure described by a message of ours (see [`Message`]).
    pub(crate) fn engine_message(context: &'static str, message: impl Into<String>) -> Self {
        Error::engine(context, Message(message.into()))
    }

    pub(crate) fn engine(
        context: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Engine {
            context,
            source: Box::new(source),
        }
    }
}

/// An error and its causes on one line, without repeating what a message
/// already says (for one-line reports: the CLI's stderr, the browser
/// package's JavaScript errors).
pub fn one_line(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = s.source();
    }
    message
}

/// Long values are cut in messages so that one bad input cannot flood a log.
pub(crate) fn shorten(value: &str) -> String {
    const MAX: usize = 200;
    if value.len() <= MAX {
        return value.to_string();
    }
    let mut end = MAX;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &value[..end], value.len())
}

/// The source of an error that has only a message: one of the store's own
/// (the group commit's, the browser I/O's), or a copy of another's text.
#[derive(Debug)]
struct Message(String);

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}

/// "; gave up after 0.5 s", or nothing for a refusal that did not wait (a
/// browser's, at once).
fn gave_up_after(waited: &std::time::Duration) -> String {
    if waited.is_zero() {
        String::new()
    } else {
        format!("; gave up after {:.1} s", waited.as_secs_f64())
    }
}
