//! The Nexus file-metadata store, on the turso engine.
//!
//! A store records which paths exist and, for each, its backend, physical
//! location, size, content hash (etag), MIME type, timestamps and version,
//! plus free-form JSON key/value metadata, a version history, and
//! reference-counted content chunks. Files it writes are SQLite files.
//!
//! ```
//! # pollster::block_on(async {
//! use nexus_core::{ListOptions, NewFile, Store};
//!
//! let store = Store::memory().await?;
//! store.put(NewFile::new("/docs/a.txt", "local", "/srv/a", 5).etag("h1")).await?;
//! store.put(NewFile::new("/docs/a.txt", "local", "/srv/a", 7).etag("h2")).await?;
//! store.set_metadata("/docs/a.txt", "author", &serde_json::json!("Ada")).await?;
//!
//! let a = store.get("/docs/a.txt").await?.unwrap();
//! assert_eq!((a.size, a.version), (7, 2));
//! let page = store.list_page(&ListOptions::prefix("/docs/").limit(10)).await?;
//! assert_eq!(page.items.len(), 1);
//! # Ok::<_, nexus_core::Error>(()) }).unwrap();
//! ```
//!
//! Every operation is scoped to the handle's tenant ([`Store::with_tenant`]);
//! inputs are validated before anything is read or written, and failures are
//! typed ([`Error`], [`Error::kind`]). The store has no async runtime of its
//! own: the engine runs each call in place, so it works under any executor,
//! in a browser included. The engine's I/O can be replaced
//! ([`StoreBuilder::io`], the [`io`] module).

#![warn(missing_docs)]

/// `rows()` for reports that count applied rows per table (`files`,
/// `versions`, `metadata`, `chunks`, `tombstones`): all tables together.
macro_rules! rows_of_tables {
    ($($report:ty),*) => {$(
        impl $report {
            /// Rows applied, all tables together.
            pub fn rows(&self) -> u64 {
                self.files + self.versions + self.metadata + self.chunks + self.tombstones
            }
        }
    )*};
}

mod api;
mod arrive;
mod change_file;
mod changes;
mod chunks;
mod conflict;
mod cursor;
mod engine;
mod error;
mod files;
mod group_commit;
pub mod listing;
mod meta;
mod model;
mod pool;
pub mod protocol;
mod pull;
mod stats;
mod store;
pub mod tables;
mod validate;
mod versions;
mod watch;
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
pub mod web;

pub use api::{DynStore, MaybeSendSync, MetadataStore};

/// Locks `m`. Nothing is left half-changed under the store's std mutexes:
/// a panic elsewhere does not make their state unusable.
pub(crate) fn lock<X>(m: &std::sync::Mutex<X>) -> std::sync::MutexGuard<'_, X> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
pub use arrive::{
    ApplySide, ArrivingFile, ArrivingVersion, Decided, FirstReads, HereFile, KeyChange, OfFile,
    Resolution, decide, older_keys, resolve, to_copies,
};
pub use change_file::{CHANGE_FILE_FORMAT, CHANGE_FILE_VERSIONS, ChangeFile, ImportReport};
pub use changes::{
    CHANGE_TABLES, Changes, ChunkRow, FileRow, MetadataRow, Origin, PUSH_PUT_OFF, Snapshot,
    TombstoneRow, VersionRow,
};
pub use conflict::{
    CONFLICT_KEY, Clash, ConflictCopy, ConflictInfo, ConflictReason, FilePlan, FileSide, Fork,
    HereRow, KeySide, PathClaim, SOURCE_PREFIX_CHARS, Seen, Settled, VersionMeeting, VersionsMet,
    changed_unseen, conflict_path, copy_id, keeps_path, key_arrives, meet_version, meet_versions,
    plan_file, settle,
};
pub use error::{Error, ErrorKind, Result, one_line};
pub use files::MAX_PAGE_SIZE;
pub use meta::{MAX_METADATA_VALUE_BYTES, canonical_json};
pub use model::{
    Chunk, FileRecord, ListOptions, NewFile, Page, Precondition, Stats, Timestamp, VersionDiff,
    VersionInfo, VersionSource,
};
pub use nexus_migrations::{MigrateError, MigrationStatus};
pub use pull::{
    BulkPull, Feed, FeedPage, FeedPoint, PullApplied, PullReport, SnapshotCursor, SnapshotSource,
};
pub use store::{DEFAULT_BUSY_TIMEOUT, DEFAULT_TENANT, Store, StoreBuilder};
pub use validate::{MAX_NAME_BYTES, MAX_PATH_BYTES, validate_name, validate_path};
pub use watch::{ChangeEvent, ChangedPath, MAX_EVENT_PATHS, Subscription};

/// The checks and encodings every backend must apply the same way (used by
/// `nexus-pg`): input validation, prefix ranges, cursors, canonical JSON.
pub mod backend {
    pub use crate::cursor::{decode as decode_cursor, encode as encode_cursor, filter_hash};
    pub use crate::files::{check_precondition, new_record, updated_record, validate_new_file};
    pub use crate::meta::encode_value;
    pub use crate::validate::{prefix_upper_bound, validate_name, validate_prefix, validate_text};
    pub use crate::versions::{rollback_reason, rolled_back_record};
}

/// The engine's I/O interface, for callers that bring their own (the browser
/// build persists through it). These are the engine's own types.
pub mod io {
    pub use turso_core::{
        Clock, Completion, File, IO, MemoryIO, MonotonicInstant, OpenFlags, WallClockInstant,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}

    #[test]
    fn store_is_send_sync_clone() {
        assert_send_sync::<Store>();
    }
}
