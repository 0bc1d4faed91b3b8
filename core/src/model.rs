//! The records the store reads and writes.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A point in time: microseconds since the Unix epoch, UTC.
///
/// Displayed and serialized as RFC 3339 with six fractional digits
/// (`2026-11-24T21:05:14.123456Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// From microseconds since the Unix epoch.
    pub const fn from_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// The current wall-clock time (reads JavaScript's clock on wasm32).
    pub fn now() -> Self {
        let since = web_time::SystemTime::now()
            .duration_since(web_time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(i64::try_from(since.as_micros()).unwrap_or(i64::MAX))
    }

    /// From a [`std::time::SystemTime`] (a file's mtime, say).
    pub fn from_system_time(t: std::time::SystemTime) -> Self {
        match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Timestamp(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
            Err(e) => Timestamp(-i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX)),
        }
    }

    /// Parses RFC 3339 (`2026-11-24T21:05:14.123456Z`, any offset).
    pub fn parse(s: &str) -> Option<Self> {
        let t =
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
        Some(Timestamp(
            i64::try_from(t.unix_timestamp_nanos() / 1000).ok()?,
        ))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const FORMAT: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
        );
        match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1000)
            .ok()
            .and_then(|t| t.format(FORMAT).ok())
        {
            Some(s) => f.write_str(&s),
            None => write!(f, "@{}us", self.0),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 timestamp: {s:?}")))
    }
}

/// What a caller writes with [`Store::put`](crate::Store::put).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewFile {
    /// The virtual path: absolute, validated by [`validate_path`](crate::validate_path).
    pub path: String,
    /// The storage backend holding the content (`local`, `s3`, ...).
    pub backend: String,
    /// Where the backend keeps the content.
    pub physical_path: String,
    /// Size in bytes.
    pub size: u64,
    /// Content hash; a put with a different etag than the stored one makes a new version.
    pub etag: Option<String>,
    /// MIME type.
    pub mime_type: Option<String>,
    /// Creation time for a new file (now when `None`); ignored when the path exists.
    pub created_at: Option<Timestamp>,
    /// Modification time (now when `None`).
    pub modified_at: Option<Timestamp>,
}

impl NewFile {
    /// A file at `path` on `backend` at `physical_path` of `size` bytes.
    pub fn new(
        path: impl Into<String>,
        backend: impl Into<String>,
        physical_path: impl Into<String>,
        size: u64,
    ) -> Self {
        NewFile {
            path: path.into(),
            backend: backend.into(),
            physical_path: physical_path.into(),
            size,
            etag: None,
            mime_type: None,
            created_at: None,
            modified_at: None,
        }
    }

    /// Sets the etag (content hash).
    pub fn etag(mut self, etag: impl Into<String>) -> Self {
        self.etag = Some(etag.into());
        self
    }

    /// Sets the MIME type.
    pub fn mime_type(mut self, mime: impl Into<String>) -> Self {
        self.mime_type = Some(mime.into());
        self
    }

    /// Sets the modification time.
    pub fn modified_at(mut self, t: Timestamp) -> Self {
        self.modified_at = Some(t);
        self
    }

    /// Sets the creation time (used only when the path is new).
    pub fn created_at(mut self, t: Timestamp) -> Self {
        self.created_at = Some(t);
        self
    }
}

/// A live file as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// The virtual path.
    pub path: String,
    /// The storage backend.
    pub backend: String,
    /// Where the backend keeps the content.
    pub physical_path: String,
    /// Size in bytes.
    pub size: u64,
    /// Content hash.
    pub etag: Option<String>,
    /// MIME type.
    pub mime_type: Option<String>,
    /// When the path was first created (kept across updates and renames).
    pub created_at: Timestamp,
    /// When the record was last written.
    pub modified_at: Timestamp,
    /// The current version, from 1; a new etag makes a new version.
    pub version: u32,
    /// The tenant the record belongs to.
    pub tenant: String,
    /// The stable identity of the record: kept by updates and renames,
    /// new when a deleted path is created again.
    pub path_id: String,
}

/// A precondition for [`Store::put_if`](crate::Store::put_if).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// The path must not exist.
    Absent,
    /// The path must exist at this version.
    Version(u32),
    /// The path must exist with this etag (`None`: exists without an etag).
    Etag(Option<String>),
}

impl fmt::Display for Precondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Precondition::Absent => f.write_str("absent"),
            Precondition::Version(v) => write!(f, "version {v}"),
            Precondition::Etag(Some(e)) => write!(f, "etag {e:?}"),
            Precondition::Etag(None) => f.write_str("no etag"),
        }
    }
}

/// How a version came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionSource {
    /// The first version of a path.
    Original,
    /// A put with a new etag.
    Update,
    /// A [`Store::rollback`](crate::Store::rollback).
    Rollback,
}

impl VersionSource {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            VersionSource::Original => "original",
            VersionSource::Update => "update",
            VersionSource::Rollback => "rollback",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "original" => Some(VersionSource::Original),
            "update" => Some(VersionSource::Update),
            "rollback" => Some(VersionSource::Rollback),
            _ => None,
        }
    }
}

/// One entry of a file's version history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// The version number, from 1.
    pub version: u32,
    /// The content hash of that version.
    pub etag: Option<String>,
    /// Its size in bytes.
    pub size: u64,
    /// Its MIME type.
    pub mime_type: Option<String>,
    /// Its backend.
    pub backend: String,
    /// Its physical path.
    pub physical_path: String,
    /// How it was made.
    pub source: VersionSource,
    /// Why (for rollbacks: `Rollback to version N`).
    pub change_reason: Option<String>,
    /// The version it followed, if any.
    pub parent_version: Option<u32>,
    /// When it was made.
    pub created_at: Timestamp,
}

/// The difference between two versions of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionDiff {
    /// The path.
    pub path: String,
    /// The first version.
    pub v1: VersionInfo,
    /// The second version.
    pub v2: VersionInfo,
    /// Whether the content hash differs.
    pub content_changed: bool,
    /// `v2.size - v1.size`.
    pub size_delta: i64,
}

/// Options of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOptions {
    /// Raw string prefix, matched byte for byte and case-sensitively (`%` and
    /// `_` are ordinary characters). `/dir/` lists a directory; `/dir` also
    /// matches `/dir2`.
    pub prefix: String,
    /// Everything below the prefix (`true`), or only paths with no `/` after it.
    pub recursive: bool,
    /// Page size, clamped to 1..=10000.
    pub limit: usize,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl Default for ListOptions {
    fn default() -> Self {
        ListOptions {
            prefix: String::new(),
            recursive: true,
            limit: 1000,
            cursor: None,
        }
    }
}

impl ListOptions {
    /// A recursive listing under `prefix`.
    pub fn prefix(prefix: impl Into<String>) -> Self {
        ListOptions {
            prefix: prefix.into(),
            ..Self::default()
        }
    }

    /// Sets recursion.
    pub fn recursive(mut self, recursive: bool) -> Self {
        self.recursive = recursive;
        self
    }

    /// Sets the page size.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Continues after a previous page.
    pub fn cursor(mut self, cursor: Option<String>) -> Self {
        self.cursor = cursor;
        self
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// The records, sorted by path in byte order.
    pub items: Vec<FileRecord>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// A content chunk: content-addressed storage with reference counting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// The content hash.
    pub content_hash: String,
    /// Size in bytes.
    pub size: u64,
    /// Where the chunk is stored.
    pub storage_path: String,
    /// How many references it has.
    pub ref_count: u64,
    /// When it was first added.
    pub created_at: Timestamp,
    /// When a reference was last added or released.
    pub last_accessed_at: Option<Timestamp>,
    /// It is not collected before this time even when unreferenced.
    pub protected_until: Option<Timestamp>,
}

/// Counts describing a store (one tenant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// The tenant.
    pub tenant: String,
    /// Live files.
    pub files: u64,
    /// Sum of their sizes.
    pub total_bytes: u64,
    /// Soft-deleted records kept.
    pub deleted_files: u64,
    /// Metadata entries on live files.
    pub metadata_entries: u64,
    /// Version history entries of live files.
    pub versions: u64,
    /// Content chunks.
    pub chunks: u64,
    /// The store's change sequence (all tenants): it grows with every write.
    pub change_seq: i64,
    /// The schema version.
    pub schema_version: u32,
}
