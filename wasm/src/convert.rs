//! The JavaScript shapes of the core's records: the same fields in camelCase,
//! times as RFC 3339 strings (the core's `Timestamp` serialization).

use nexus_core::{
    Chunk, FileRecord, ListOptions, NewFile, Page, Precondition, Stats, Timestamp, VersionDiff,
    VersionInfo, VersionSource,
};
use serde::{Deserialize, Serialize};
use wasm_bindgen::JsValue;

use crate::{timestamp, to_u64};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct JsNewFile {
    path: String,
    backend: String,
    physical_path: String,
    size: f64,
    #[serde(default)]
    etag: Option<String>,
    #[serde(default)]
    mime_type: Option<String>,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    modified_at: Option<String>,
}

impl TryFrom<JsNewFile> for NewFile {
    type Error = JsValue;

    fn try_from(f: JsNewFile) -> Result<Self, JsValue> {
        Ok(NewFile {
            size: to_u64("size", f.size)?,
            created_at: timestamp("createdAt", f.created_at)?,
            modified_at: timestamp("modifiedAt", f.modified_at)?,
            path: f.path,
            backend: f.backend,
            physical_path: f.physical_path,
            etag: f.etag,
            mime_type: f.mime_type,
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct JsPrecondition {
    #[serde(default)]
    absent: Option<bool>,
    #[serde(default)]
    version: Option<u32>,
    #[serde(default, deserialize_with = "present")]
    etag: Option<Option<String>>,
}

/// `{ etag: null }` is "exists without an etag", not "no etag given".
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

impl TryFrom<JsPrecondition> for Precondition {
    type Error = JsValue;

    fn try_from(p: JsPrecondition) -> Result<Self, JsValue> {
        match (p.absent, p.version, p.etag) {
            (Some(true), None, None) => Ok(Precondition::Absent),
            (None, Some(v), None) => Ok(Precondition::Version(v)),
            (None, None, Some(e)) => Ok(Precondition::Etag(e)),
            _ => Err(crate::bad_argument(
                "precondition",
                "give exactly one of { absent: true }, { version: n }, { etag: string | null }",
            )),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct JsListOptions {
    prefix: String,
    #[serde(default)]
    recursive: Option<bool>,
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    cursor: Option<String>,
}

impl From<JsListOptions> for ListOptions {
    fn from(o: JsListOptions) -> Self {
        let defaults = ListOptions::default();
        ListOptions {
            prefix: o.prefix,
            recursive: o.recursive.unwrap_or(defaults.recursive),
            limit: o.limit.map_or(defaults.limit, |l| l as usize),
            cursor: o.cursor,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JsFileRecord {
    path: String,
    backend: String,
    physical_path: String,
    size: u64,
    etag: Option<String>,
    mime_type: Option<String>,
    created_at: Timestamp,
    modified_at: Timestamp,
    version: u32,
    tenant: String,
    path_id: String,
}

impl From<FileRecord> for JsFileRecord {
    fn from(r: FileRecord) -> Self {
        JsFileRecord {
            path: r.path,
            backend: r.backend,
            physical_path: r.physical_path,
            size: r.size,
            etag: r.etag,
            mime_type: r.mime_type,
            created_at: r.created_at,
            modified_at: r.modified_at,
            version: r.version,
            tenant: r.tenant,
            path_id: r.path_id,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JsPage {
    items: Vec<JsFileRecord>,
    next_cursor: Option<String>,
}

impl From<Page> for JsPage {
    fn from(p: Page) -> Self {
        JsPage {
            items: p.items.into_iter().map(JsFileRecord::from).collect(),
            next_cursor: p.next_cursor,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JsVersionInfo {
    version: u32,
    etag: Option<String>,
    size: u64,
    mime_type: Option<String>,
    backend: String,
    physical_path: String,
    source: VersionSource,
    change_reason: Option<String>,
    parent_version: Option<u32>,
    created_at: Timestamp,
}

impl From<VersionInfo> for JsVersionInfo {
    fn from(v: VersionInfo) -> Self {
        JsVersionInfo {
            version: v.version,
            etag: v.etag,
            size: v.size,
            mime_type: v.mime_type,
            backend: v.backend,
            physical_path: v.physical_path,
            source: v.source,
            change_reason: v.change_reason,
            parent_version: v.parent_version,
            created_at: v.created_at,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JsVersionDiff {
    path: String,
    v1: JsVersionInfo,
    v2: JsVersionInfo,
    content_changed: bool,
    size_delta: i64,
}

impl From<VersionDiff> for JsVersionDiff {
    fn from(d: VersionDiff) -> Self {
        JsVersionDiff {
            path: d.path,
            v1: d.v1.into(),
            v2: d.v2.into(),
            content_changed: d.content_changed,
            size_delta: d.size_delta,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JsChunk {
    content_hash: String,
    size: u64,
    storage_path: String,
    ref_count: u64,
    created_at: Timestamp,
    last_accessed_at: Option<Timestamp>,
    protected_until: Option<Timestamp>,
}

impl From<Chunk> for JsChunk {
    fn from(c: Chunk) -> Self {
        JsChunk {
            content_hash: c.content_hash,
            size: c.size,
            storage_path: c.storage_path,
            ref_count: c.ref_count,
            created_at: c.created_at,
            last_accessed_at: c.last_accessed_at,
            protected_until: c.protected_until,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JsStats {
    tenant: String,
    files: u64,
    total_bytes: u64,
    deleted_files: u64,
    metadata_entries: u64,
    versions: u64,
    chunks: u64,
    change_seq: i64,
    schema_version: u32,
}

impl From<Stats> for JsStats {
    fn from(s: Stats) -> Self {
        JsStats {
            tenant: s.tenant,
            files: s.files,
            total_bytes: s.total_bytes,
            deleted_files: s.deleted_files,
            metadata_entries: s.metadata_entries,
            versions: s.versions,
            chunks: s.chunks,
            change_seq: s.change_seq,
            schema_version: s.schema_version,
        }
    }
}

/// A commit event as JavaScript sees it (`onCommit`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JsCommitEvent {
    from_seq: i64,
    to_seq: i64,
    paths: Vec<nexus_core::ChangedPath>,
    truncated: bool,
}

impl From<nexus_core::ChangeEvent> for JsCommitEvent {
    fn from(e: nexus_core::ChangeEvent) -> Self {
        JsCommitEvent {
            from_seq: e.after,
            to_seq: e.through,
            paths: e.paths,
            truncated: e.truncated,
        }
    }
}
