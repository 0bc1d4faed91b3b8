//! The error type of `nexus-sync`.

/// A `Result` whose error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while replicating.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// PostgreSQL refused, the connection failed, or the URL is invalid
    /// (the message never contains the password; the SQLSTATE is kept).
    #[error(transparent)]
    Pg(#[from] nexus_postgres::Error),
    /// The source store failed.
    #[error(transparent)]
    Store(#[from] nexus_core::Error),
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
    /// Another writer made a file live at a path this run was making live,
    /// or was bulk-loading the empty database this run found, at the same
    /// moment. Nothing was applied; retrying resolves it (by the conflict
    /// rule, or as an incremental push after the load).
    #[error(
        "another writer took one of the run's paths, or was loading the empty database, at the same moment; nothing was applied"
    )]
    Raced,
    /// A sync client's push starts before the server's watermark of its
    /// source (the client's idea of the watermark was behind): applying it
    /// would apply again rows the server has. Nothing was applied; the
    /// client asks the watermark again (409 `gap`).
    #[error(
        "the push of source {source_id} starts after change {after}, but the target has applied that source through change {applied}: push again from there; nothing was applied"
    )]
    PushBehind {
        /// The source store.
        source_id: String,
        /// Where the target is for that source.
        applied: i64,
        /// Where the push starts (exclusive).
        after: i64,
    },
    /// The changes hold rows of a tenant other than the one the pusher may
    /// write. Nothing was applied.
    #[error(
        "the changes hold rows of tenant {found:?}, but this push may write only tenant {allowed:?}; nothing was applied"
    )]
    WrongTenant {
        /// The tenant the pusher may write.
        allowed: String,
        /// A tenant the changes hold.
        found: String,
    },
    /// A push or pull through a sync server names a source store that
    /// another tenant's token pushed for first. Nothing was applied.
    #[error(
        "the source store {source_id:?} syncs for another tenant, not {allowed:?}; nothing was applied"
    )]
    SourceOfOtherTenant {
        /// The source store's id.
        source_id: String,
        /// The tenant the caller may write.
        allowed: String,
    },
    /// A sync server refused a request or could not be reached. The message
    /// is the server's (it never holds a token) or the connection's.
    #[error("{url}: {message}")]
    Remote {
        /// The server's address (no token, no password).
        url: String,
        /// The HTTP status, when the server answered.
        status: Option<u16>,
        /// The error's kind as the server names it (`unauthorized`,
        /// `forbidden`, `gap`, `bad_request`, `unavailable`, ...), or
        /// `unreachable`.
        kind: String,
        /// What went wrong.
        message: String,
    },
}

impl Error {
    /// Whether retrying the same operation may succeed: lost connections,
    /// serialization failures, deadlocks, server shutdowns, too many clients.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Pg(e) => e.is_retryable(),
            Error::Store(e) => e.is_retryable(),
            Error::Raced => true,
            // Unreachable, timed out, overloaded, restarting, or raced by
            // another push of the same source (`gap`: ask again), or the
            // server is in front of another database (`hub_changed`: ask
            // again), or the staged parts of a push are gone (`incomplete`:
            // push again).
            Error::Remote { status, kind, .. } => match status {
                None => true,
                Some(s) => {
                    matches!(s, 408 | 429 | 502..=504)
                        || nexus_core::protocol::asks_to_push_again(kind)
                }
            },
            _ => false,
        }
    }

    /// Wraps a driver error with what was being done.
    pub fn pg(action: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
        move |source| Error::Pg(nexus_postgres::Error::Postgres { action, source })
    }
}
