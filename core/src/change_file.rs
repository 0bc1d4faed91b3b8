//! Change files: a store's changes after a point, as bytes, and applying
//! them to another store.
//!
//! A [`ChangeFile`] is what [`Store::export_changes`] reads from one
//! snapshot: every row with `change_seq` in `(after, through]`, all tenants,
//! plus the identity of the source store. [`ChangeFile::encode`] writes it as
//! a versioned JSON document; [`ChangeFile::decode`] reads one back and
//! refuses anything malformed or inconsistent with a message naming what is
//! wrong. [`Store::import_changes`] applies a file to another embedded store
//! exactly once per source, in one write transaction (`nexus-sync` applies
//! the same files to PostgreSQL).

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::changes::{ChunkRow, FileRow, HIDDEN, MetadataRow, TombstoneRow, VersionRow};
use crate::engine::{Engine, RowCells, Seq, cell, int, text};
use crate::error::{Error, Result};
use crate::meta::{metadata_by_key, untombstone};
use crate::store::Store;
use crate::tables::{
    CONTENT_CHUNKS, FILE_METADATA, FILE_PATHS, TOMBSTONES, Table, TableRow, VERSION_HISTORY, sqlite,
};
use crate::validate::{validate_name, validate_path};
use crate::{
    CONFLICT_KEY, Changes, Clash, ConflictCopy, ConflictInfo, ConflictReason, MAX_PATH_BYTES,
};

/// The value of the `format` field of every change file.
pub const CHANGE_FILE_FORMAT: &str = "nexus-changes";

/// The versions of the format this build reads (and the last one, which it writes).
pub const CHANGE_FILE_VERSIONS: &[u32] = &[1];

/// A store's changes in `(changes.after, changes.through]`, with the
/// identity of the store they come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeFile {
    /// The source store's identity ([`crate::Snapshot::source_id`]).
    pub source_id: String,
    /// The rows, each table sorted by change sequence.
    pub changes: Changes,
}

/// The document as written: a header, then the rows per table.
#[derive(Serialize)]
struct WireOut<'a> {
    format: &'static str,
    version: u32,
    source_id: &'a str,
    after: i64,
    through: i64,
    files: &'a [FileRow],
    versions: &'a [VersionRow],
    metadata: &'a [MetadataRow],
    chunks: &'a [ChunkRow],
    tombstones: &'a [TombstoneRow],
}

/// The document as read (after the header was checked).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireIn {
    #[allow(dead_code)]
    format: String,
    #[allow(dead_code)]
    version: u32,
    source_id: String,
    after: i64,
    through: i64,
    #[serde(default)]
    files: Vec<FileRow>,
    #[serde(default)]
    versions: Vec<VersionRow>,
    #[serde(default)]
    metadata: Vec<MetadataRow>,
    #[serde(default)]
    chunks: Vec<ChunkRow>,
    #[serde(default)]
    tombstones: Vec<TombstoneRow>,
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidChangeFile {
        reason: reason.into(),
    }
}

fn supported() -> String {
    CHANGE_FILE_VERSIONS
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// What says that a document is a change file, and of which version.
#[derive(Deserialize)]
struct Header {
    #[serde(default, deserialize_with = "present")]
    format: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    version: Option<Value>,
}

/// A field that is there, `null` included (`None` only when missing).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl Header {
    /// The header of a document, read without building its rows (which
    /// would take many times the document's size as JSON values).
    fn read(bytes: &[u8]) -> Result<Header> {
        let not_json = |e: serde_json::Error| match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                invalid(format!("not valid JSON: {e}"))
            }
            // Valid JSON that is not a header (a field given twice).
            _ => invalid(e.to_string()),
        };
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            return serde_json::from_slice(bytes).map_err(not_json);
        }
        let doc: Value = serde_json::from_slice(bytes).map_err(not_json)?;
        Err(invalid(format!(
            "not a change file: expected a JSON object with \"format\": \"{CHANGE_FILE_FORMAT}\", found {}",
            kind_of(&doc)
        )))
    }
}

impl ChangeFile {
    /// The file as bytes: a UTF-8 JSON document
    /// `{"format": "nexus-changes", "version": 1, "source_id", "after",
    /// "through", "files", "versions", "metadata", "chunks", "tombstones"}`.
    pub fn encode(&self) -> Vec<u8> {
        let c = &self.changes;
        let wire = WireOut {
            format: CHANGE_FILE_FORMAT,
            version: *CHANGE_FILE_VERSIONS.last().expect("a version"),
            source_id: &self.source_id,
            after: c.after,
            through: c.through,
            files: &c.files,
            versions: &c.versions,
            metadata: &c.metadata,
            chunks: &c.chunks,
            tombstones: &c.tombstones,
        };
        serde_json::to_vec(&wire).expect("rows serialize")
    }

    /// Reads a file written by [`ChangeFile::encode`] (of any supported
    /// version) and checks it ([`ChangeFile::validate`]). Every failure is
    /// [`Error::InvalidChangeFile`] saying what is wrong: not JSON (with
    /// line and column), not a change file, an unsupported version, a
    /// missing or mistyped field, or inconsistent content.
    pub fn decode(bytes: &[u8]) -> Result<ChangeFile> {
        let header = Header::read(bytes)?;
        match &header.format {
            Some(Value::String(f)) if f == CHANGE_FILE_FORMAT => {}
            Some(Value::String(f)) => {
                return Err(invalid(format!(
                    "not a change file: \"format\" is {f:?}, expected \"{CHANGE_FILE_FORMAT}\""
                )));
            }
            Some(other) => {
                return Err(invalid(format!(
                    "not a change file: \"format\" is {}, expected \"{CHANGE_FILE_FORMAT}\"",
                    kind_of(other)
                )));
            }
            None => {
                return Err(invalid(format!(
                    "not a change file: no \"format\" field (expected \"format\": \"{CHANGE_FILE_FORMAT}\")"
                )));
            }
        }
        match &header.version {
            Some(Value::Number(n))
                if n.as_u64()
                    .is_some_and(|v| CHANGE_FILE_VERSIONS.iter().any(|&s| u64::from(s) == v)) => {}
            Some(v) => {
                return Err(invalid(format!(
                    "unsupported version {v} (this build reads version {})",
                    supported()
                )));
            }
            None => {
                return Err(invalid(format!(
                    "no \"version\" field (this build reads version {})",
                    supported()
                )));
            }
        }
        // Parsed again into the typed form, for errors with line and column.
        let wire: WireIn = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        let file = ChangeFile {
            source_id: wire.source_id,
            changes: Changes {
                after: wire.after,
                through: wire.through,
                files: wire.files,
                metadata: wire.metadata,
                versions: wire.versions,
                chunks: wire.chunks,
                tombstones: wire.tombstones,
            },
        };
        file.validate()?;
        Ok(file)
    }

    /// Checks that the content is consistent: `0 <= after <= through`, every
    /// row's change sequence in `(after, through]`, no negative size or
    /// count, valid tenants, paths and names, metadata values that are JSON,
    /// each key at most once per table, at most one live file per path, and
    /// no key both live and removed.
    pub fn validate(&self) -> Result<()> {
        let c = &self.changes;
        let check = |what: String, r: Result<()>| r.map_err(|e| invalid(format!("{what}: {e}")));
        check(
            "source_id".into(),
            validate_name("source_id", &self.source_id),
        )?;
        if c.after < 0 {
            return Err(invalid(format!("after = {} is negative", c.after)));
        }
        if c.after > c.through {
            return Err(invalid(format!(
                "after = {} is greater than through = {}",
                c.after, c.through
            )));
        }
        let in_range = |what: &dyn Fn() -> String, seq: i64| {
            if seq <= c.after || seq > c.through {
                Err(invalid(format!(
                    "{}: change_seq {seq} is outside ({}, {}]",
                    what(),
                    c.after,
                    c.through
                )))
            } else {
                Ok(())
            }
        };
        let non_negative = |what: &dyn Fn() -> String, field: &str, v: i64| {
            if v < 0 {
                Err(invalid(format!("{}: {field} = {v} is negative", what())))
            } else {
                Ok(())
            }
        };
        let at_least_one = |what: &dyn Fn() -> String, field: &str, v: i64| {
            if v < 1 {
                Err(invalid(format!(
                    "{}: {field} = {v} must be at least 1",
                    what()
                )))
            } else {
                Ok(())
            }
        };
        let id = |what: &dyn Fn() -> String, field: &'static str, v: &str| {
            check(what(), validate_name(field, v))
        };

        let mut path_ids = HashSet::new();
        let mut live = HashSet::new();
        for (i, r) in c.files.iter().enumerate() {
            let what = || {
                format!(
                    "files[{i}] ({:?}, tenant {:?})",
                    r.virtual_path, r.tenant_id
                )
            };
            in_range(&what, r.change_seq)?;
            id(&what, "path_id", &r.path_id)?;
            check(what(), validate_name("tenant", &r.tenant_id))?;
            check(what(), validate_path(&r.virtual_path))?;
            id(&what, "backend_id", &r.backend_id)?;
            check(
                what(),
                crate::validate::validate_text("physical_path", &r.physical_path, MAX_PATH_BYTES),
            )?;
            non_negative(&what, "size_bytes", r.size_bytes)?;
            at_least_one(&what, "current_version", r.current_version)?;
            if !path_ids.insert(r.path_id.as_str()) {
                return Err(invalid(format!(
                    "{}: path_id {:?} appears twice",
                    what(),
                    r.path_id
                )));
            }
            if r.deleted_at.is_none()
                && !live.insert((r.tenant_id.as_str(), r.virtual_path.as_str()))
            {
                return Err(invalid(format!("{}: two live files at this path", what())));
            }
        }
        let mut version_ids = HashSet::new();
        for (i, r) in c.versions.iter().enumerate() {
            let what = || {
                format!(
                    "versions[{i}] (version {} of path id {:?})",
                    r.version_number, r.path_id
                )
            };
            in_range(&what, r.change_seq)?;
            id(&what, "version_id", &r.version_id)?;
            id(&what, "path_id", &r.path_id)?;
            at_least_one(&what, "version_number", r.version_number)?;
            non_negative(&what, "size_bytes", r.size_bytes)?;
            if !["original", "update", "rollback"].contains(&r.source_type.as_str()) {
                return Err(invalid(format!(
                    "{}: source_type {:?} is not original, update or rollback",
                    what(),
                    r.source_type
                )));
            }
            if !version_ids.insert(r.version_id.as_str()) {
                return Err(invalid(format!(
                    "{}: version_id {:?} appears twice",
                    what(),
                    r.version_id
                )));
            }
        }
        let mut meta_keys = HashSet::new();
        for (i, r) in c.metadata.iter().enumerate() {
            let what = || format!("metadata[{i}] (key {:?} of path id {:?})", r.key, r.path_id);
            in_range(&what, r.change_seq)?;
            id(&what, "path_id", &r.path_id)?;
            check(what(), validate_name("metadata key", &r.key))?;
            if let Err(e) = serde_json::from_str::<Value>(&r.value) {
                return Err(invalid(format!("{}: value is not JSON ({e})", what())));
            }
            if !meta_keys.insert((r.path_id.as_str(), r.key.as_str())) {
                return Err(invalid(format!("{}: appears twice", what())));
            }
        }
        let mut chunk_keys = HashSet::new();
        for (i, r) in c.chunks.iter().enumerate() {
            let what = || {
                format!(
                    "chunks[{i}] ({:?}, tenant {:?})",
                    r.content_hash, r.tenant_id
                )
            };
            in_range(&what, r.change_seq)?;
            check(what(), validate_name("tenant", &r.tenant_id))?;
            check(what(), validate_name("content_hash", &r.content_hash))?;
            check(
                what(),
                crate::validate::validate_text("storage_path", &r.storage_path, MAX_PATH_BYTES),
            )?;
            non_negative(&what, "size_bytes", r.size_bytes)?;
            non_negative(&what, "ref_count", r.ref_count)?;
            if !chunk_keys.insert((r.tenant_id.as_str(), r.content_hash.as_str())) {
                return Err(invalid(format!("{}: appears twice", what())));
            }
        }
        let mut removed = HashSet::new();
        for (i, r) in c.tombstones.iter().enumerate() {
            let what = || {
                format!(
                    "tombstones[{i}] ({}/{:?}/{:?})",
                    r.table_name, r.key1, r.key2
                )
            };
            in_range(&what, r.change_seq)?;
            let live_too = match r.table_name.as_str() {
                "file_metadata" => {
                    id(&what, "path_id", &r.key1)?;
                    check(what(), validate_name("metadata key", &r.key2))?;
                    meta_keys.contains(&(r.key1.as_str(), r.key2.as_str()))
                }
                "content_chunks" => {
                    check(what(), validate_name("tenant", &r.key1))?;
                    check(what(), validate_name("content_hash", &r.key2))?;
                    chunk_keys.contains(&(r.key1.as_str(), r.key2.as_str()))
                }
                other => {
                    return Err(invalid(format!(
                        "{}: table_name {other:?} is not file_metadata or content_chunks",
                        what()
                    )));
                }
            };
            if live_too {
                return Err(invalid(format!(
                    "{}: the key is also in the file as a live row",
                    what()
                )));
            }
            if !removed.insert((r.table_name.as_str(), r.key1.as_str(), r.key2.as_str())) {
                return Err(invalid(format!("{}: appears twice", what())));
            }
        }
        Ok(())
    }
}

/// What [`Store::import_changes`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// The source store of the file.
    pub source_id: String,
    /// The file's range: `(after, through]`.
    pub after: i64,
    /// The file's inclusive upper bound.
    pub through: i64,
    /// How far this store had applied the source before.
    pub previous: i64,
    /// Whether the file was already applied (`through <= previous`): nothing written.
    pub skipped: bool,
    /// The change sequence number the import was stamped with (`None` when skipped).
    pub change_seq: Option<i64>,
    /// `file_paths` rows applied.
    pub files: u64,
    /// `version_history` rows applied.
    pub versions: u64,
    /// `file_metadata` rows applied.
    pub metadata: u64,
    /// `content_chunks` rows applied.
    pub chunks: u64,
    /// Removals applied.
    pub tombstones: u64,
    /// The conflict copies the import made: files of the change file that
    /// lost their path to a live file of this store (or were given new
    /// versions here too), and files of this store that lost their path to
    /// a file of the change file made before them.
    pub conflicts: Vec<ConflictCopy>,
}

rows_of_tables!(ImportReport);

/// Where this store is for `source_id` (0 if never applied).
fn applied_through(e: &mut Engine, source_id: &str) -> Result<i64> {
    Ok(e.query_one(
        "SELECT watermark FROM nexus_sync_state WHERE source_id = ?1",
        &[text(source_id)],
        |r| r.int(0),
    )?
    .unwrap_or(0))
}

pub(crate) fn own_id(e: &mut Engine) -> Result<String> {
    e.query_one("SELECT store_id FROM nexus_state WHERE id = 1", &[], |r| {
        r.text(0)
    })?
    .ok_or(Error::Corrupt {
        table: "nexus_state",
        detail: "the state row is missing".into(),
    })
}

impl Store {
    /// Every row (all tenants) with change sequence in `(after, current]`,
    /// read from one snapshot, as a [`ChangeFile`] of this store. What came
    /// from PostgreSQL by a pull is not sent onward, but for the rows that
    /// the file's own versions need ([`crate::Snapshot::local_changes_whole`]).
    pub async fn export_changes(&self, after: i64) -> Result<ChangeFile> {
        let (file, _) = self
            .export_with(after, |snap, head| snap.local_changes_whole(after, head))
            .await?;
        Ok(file)
    }

    /// The next window of this store's local changes after `after`
    /// ([`crate::Snapshot::local_window`]: about `max_rows` rows per table,
    /// with the rows of the files its versions and metadata belong to), as
    /// a [`ChangeFile`] of this store, and the change sequence of the
    /// snapshot it was read from. A push in windows, each applied on its
    /// own, reads them one after the other from `after` until a window's
    /// `through` reaches that change sequence; each from a snapshot of its
    /// own, so that no read is held open between them.
    pub async fn export_window(&self, after: i64, max_rows: usize) -> Result<(ChangeFile, i64)> {
        self.export_with(after, |snap, _| snap.local_window(after, max_rows))
            .await
    }

    /// What `read` takes from a snapshot (and its change sequence), as a
    /// change file of this store once it is durable; refuses an `after`
    /// outside `[0, change sequence]`.
    async fn export_with(
        &self,
        after: i64,
        read: impl FnOnce(&mut crate::Snapshot<'_>, i64) -> Result<Changes>,
    ) -> Result<(ChangeFile, i64)> {
        let mut snap = self.snapshot().await?;
        let head = snap.change_seq();
        if after < 0 || after > head {
            return Err(Error::invalid(
                "since",
                &after.to_string(),
                format!("must lie between 0 and this store's change sequence {head}"),
            ));
        }
        let changes = read(&mut snap, head)?;
        let source_id = snap.source_id().to_string();
        drop(snap);
        // Nothing leaves that a crash could still take back (IndexedDB:
        // a write is visible before it is durable).
        self.durable().await?;
        Ok((ChangeFile { source_id, changes }, head))
    }

    /// Applies a change file of another store, in one write transaction:
    /// all of it or nothing. Rows are upserted by primary key and removals
    /// applied; every row is stamped with this import's own change sequence
    /// (so that this store can be synced onward). Each source is applied
    /// exactly once and in order: a file this store already has
    /// (`through` at or before the recorded point) is skipped; one that
    /// starts after the recorded point is refused ([`Error::ChangeFileGap`]);
    /// so is a file of this store itself. A live file that would take a path
    /// held by a different live file here loses it, by the conflict rule of
    /// sync: it is kept beside it as a conflict copy
    /// ([`crate::ConflictInfo`]), listed in [`ImportReport::conflicts`].
    pub async fn import_changes(&self, file: &ChangeFile) -> Result<ImportReport> {
        file.validate()?;
        let c = &file.changes;
        let mut report = ImportReport {
            source_id: file.source_id.clone(),
            after: c.after,
            through: c.through,
            previous: 0,
            skipped: false,
            change_seq: None,
            files: 0,
            versions: 0,
            metadata: 0,
            chunks: 0,
            tombstones: 0,
            conflicts: Vec::new(),
        };
        // Checked before the write transaction, so that a refused or skipped
        // file takes no change sequence number; checked again inside it.
        let checks = |e: &mut Engine, report: &mut ImportReport| -> Result<bool> {
            if own_id(e)? == file.source_id {
                return Err(invalid(format!(
                    "it holds changes of this store itself (source {}); apply it to another store",
                    file.source_id
                )));
            }
            report.previous = applied_through(e, &file.source_id)?;
            if c.through <= report.previous {
                return Ok(false);
            }
            if c.after > report.previous {
                return Err(Error::ChangeFileGap {
                    source_id: file.source_id.clone(),
                    applied: report.previous,
                    after: c.after,
                    through: c.through,
                });
            }
            Ok(true)
        };
        let go = {
            let mut e = self.reader().await;
            e.read(|e| checks(e, &mut report))?
        };
        if !go {
            report.skipped = true;
            return Ok(report);
        }
        let watchers = self.shared.pool.watchers.clone();
        self.writer().await.write(|e, seq| {
            if !checks(e, &mut report)? {
                report.skipped = true;
                return Ok(());
            }
            watchers.note_incoming(e, &file.changes.files)?;
            apply_rows(e, seq, &file.changes, &file.source_id, None, &mut report)?;
            record_source(e, &file.source_id, file.changes.through)?;
            report.change_seq = Some(seq);
            Ok(())
        })?;
        self.durable().await?;
        Ok(report)
    }
}

const _: () = assert!(HIDDEN == -9223372036854775808);

/// What a pull must not overwrite: rows this store changed after
/// `pushed_through` (its position in the database it pulls from) that did
/// not come from a pull. Such a row is refused with [`Error::Conflict`]
/// naming its path (push first): nothing local is lost.
pub(crate) struct Unpushed {
    pub(crate) pushed_through: i64,
}

impl Unpushed {
    /// Whether the local row stamped `seq` holds a change not pushed yet.
    fn holds(&self, e: &mut Engine, seq: i64) -> Result<bool> {
        Ok(seq > self.pushed_through
            && e.query_one(
                "SELECT 1 FROM nexus_pulled WHERE change_seq = ?1",
                &[int(seq)],
                |_| Ok(()),
            )?
            .is_none())
    }

    fn refuse(path: &str, what: &str) -> Error {
        Error::Conflict {
            path: path.to_string(),
            expected: format!("no {what} here that PostgreSQL has not received"),
            actual:
                "a local change not pushed yet: push first (`nexus sync --with` pushes, then pulls)"
                    .to_string(),
        }
    }
}

/// Applies rows of another store (or of PostgreSQL) in the open write
/// transaction stamped `seq`: upserts by primary key, removals, and live
/// files made live at once when their path is free, else once every move
/// is in place (a conflict copy, or in a pull waiting hidden, when a file
/// still holds the path). `source_id` is the store (or PostgreSQL
/// database) they come from. With `unpushed`, rows this store changed and has not pushed are refused
/// instead of overwritten; a pull records its stamp in `nexus_pulled`
/// before calling this.
pub(crate) fn apply_rows(
    e: &mut Engine,
    seq: Seq,
    c: &Changes,
    source_id: &str,
    unpushed: Option<&Unpushed>,
    report: &mut ImportReport,
) -> Result<()> {
    // A change file: its rows are decided first, by the rule PostgreSQL
    // applies to a push too (`decide_arriving`). (A pull takes
    // PostgreSQL's rows, which settled such conflicts on push.)
    let decided;
    let (c, content) = match unpushed {
        None => {
            let (rows, content) = decide_arriving(e, seq, c)?;
            decided = rows;
            (&decided, content)
        }
        Some(_) => (c, HashSet::new()),
    };
    if let Some(u) = unpushed {
        for r in &c.files {
            let here = e.query_one(
                "SELECT change_seq, virtual_path FROM file_paths WHERE path_id = ?1",
                &[text(&r.path_id)],
                |row| Ok((row.int(0)?, row.text(1)?)),
            )?;
            if let Some((s, path)) = here
                && u.holds(e, s)?
            {
                return Err(Unpushed::refuse(&path, "change to this file"));
            }
        }
        for r in &c.metadata {
            let here = e.query_one(
                concat!(
                    "SELECT change_seq, (SELECT virtual_path FROM file_paths WHERE path_id = ?1) FROM ",
                    metadata_by_key!(),
                    " WHERE path_id = ?1 AND key = ?2"
                ),
                &[text(&r.path_id), text(&r.key)],
                |row| Ok((row.int(0)?, row.opt_text(1)?)),
            )?;
            if let Some((s, Some(path))) = here
                && u.holds(e, s)?
            {
                return Err(Unpushed::refuse(
                    &path,
                    &format!("change to metadata key {:?}", r.key),
                ));
            }
        }
        // Removals here that an incoming row would undo, and rows here that
        // an incoming removal would delete.
        let keys = c
            .metadata
            .iter()
            .map(|r| ("file_metadata", r.path_id.as_str(), r.key.as_str()))
            .chain(c.chunks.iter().map(|r| {
                (
                    "content_chunks",
                    r.tenant_id.as_str(),
                    r.content_hash.as_str(),
                )
            }));
        for (table, k1, k2) in keys {
            let here = e.query_one(
                "SELECT change_seq FROM tombstones WHERE table_name = ?1 AND key1 = ?2 AND key2 = ?3",
                &[text(table), text(k1), text(k2)],
                |row| row.int(0),
            )?;
            if let Some(s) = here
                && u.holds(e, s)?
            {
                return Err(Unpushed::refuse(
                    &format!("{k1} {k2}"),
                    &format!("removal from {table}"),
                ));
            }
        }
        for t in &c.tombstones {
            let here = if t.table_name == "file_metadata" {
                e.query_one(
                    concat!(
                        "SELECT change_seq FROM ",
                        metadata_by_key!(),
                        " WHERE path_id = ?1 AND key = ?2"
                    ),
                    &[text(&t.key1), text(&t.key2)],
                    |row| row.int(0),
                )?
            } else {
                e.query_one(
                    "SELECT change_seq FROM content_chunks WHERE tenant_id = ?1 AND content_hash = ?2",
                    &[text(&t.key1), text(&t.key2)],
                    |row| row.int(0),
                )?
            };
            if let Some(s) = here
                && u.holds(e, s)?
            {
                return Err(Unpushed::refuse(
                    &format!("{} {}", t.key1, t.key2),
                    &format!("change to {} that PostgreSQL removed", t.table_name),
                ));
            }
        }
        for r in &c.chunks {
            let here = e.query_one(
                "SELECT change_seq FROM content_chunks WHERE tenant_id = ?1 AND content_hash = ?2",
                &[text(&r.tenant_id), text(&r.content_hash)],
                |row| row.int(0),
            )?;
            if let Some(s) = here
                && u.holds(e, s)?
            {
                return Err(Unpushed::refuse(&r.content_hash, "change to this chunk"));
            }
        }
    }
    let hidden = int(HIDDEN);
    let deleted_at = column_index(&FILE_PATHS, "deleted_at");
    // A live file whose path no other live file holds goes live in its
    // upsert; the others arrive hidden and are dealt with at the end, once
    // every deletion and move of the page is in place. A file that went
    // live here may take a path that a file hidden by an earlier page of
    // a pull waits for: that one keeps waiting (this file's row is
    // PostgreSQL's: its stamp is in `nexus_pulled`), until the page that
    // moves it comes.
    let mut live_now = HashSet::new();
    for r in &c.files {
        let mut params = row_params(r, seq);
        if r.deleted_at.is_none() {
            if !content.contains(&r.path_id)
                && holder_of(e, &r.tenant_id, &r.virtual_path, &r.path_id)?.is_none()
            {
                live_now.insert(r.path_id.clone());
            } else {
                params[deleted_at] = hidden.clone();
            }
        }
        e.execute(sqlite::upsert(&FILE_PATHS), &params)?;
    }
    report.files = c.files.len() as u64;

    // Versions this store has already go first (a version can move to
    // another file: a conflict copy), so that they free their numbers
    // before new versions take them; then parents before children (a
    // version's parent has a lower number).
    let mut versions: Vec<(bool, &VersionRow)> = Vec::with_capacity(c.versions.len());
    for v in &c.versions {
        let known = has_version(e, &v.version_id)?;
        versions.push((!known, v));
    }
    versions.sort_by_key(|(new, v)| (*new, v.version_number));
    for (_, r) in versions {
        let taken = e.query_one(
            "SELECT v.version_id, p.virtual_path, p.tenant_id, v.change_seq FROM version_history v \
             LEFT JOIN file_paths p ON p.path_id = v.path_id \
             WHERE v.path_id = ?1 AND v.version_number = ?2 AND v.version_id <> ?3",
            &[text(&r.path_id), int(r.version_number), text(&r.version_id)],
            |row| {
                Ok((
                    row.text(0)?,
                    row.opt_text(1)?,
                    row.opt_text(2)?,
                    row.int(3)?,
                ))
            },
        )?;
        if let Some((other, path, tenant, other_seq)) = taken {
            if let Some(u) = unpushed {
                if u.holds(e, other_seq)? {
                    return Err(Unpushed::refuse(
                        path.as_deref().unwrap_or(&r.path_id),
                        &format!("new version {} of this file", r.version_number),
                    ));
                }
                // A pull: PostgreSQL has this store's version (it was
                // pushed) somewhere else now (a conflict copy), and a later
                // page brings it there; until then it steps aside.
                e.execute(
                    "UPDATE version_history SET version_number = version_number + 1000000000 WHERE version_id = ?1",
                    &[text(&other)],
                )?;
                e.execute(sqlite::upsert(&VERSION_HISTORY), &row_params(r, seq))?;
                continue;
            }
            return Err(Error::version_clash(
                path.unwrap_or_else(|| format!("path id {}", r.path_id)),
                r.version_number,
                &r.version_id,
                source_id,
                &format!(
                    "this store's own version {other} (tenant {})",
                    tenant.unwrap_or_default()
                ),
            ));
        }
        e.execute(sqlite::upsert(&VERSION_HISTORY), &row_params(r, seq))?;
    }
    report.versions = c.versions.len() as u64;

    let mut metadata = 0;
    for r in &c.metadata {
        // A key of a file neither in the change file nor here: the file
        // came to the writer by a pull (pulled rows are not sent onward),
        // and comes here from PostgreSQL too.
        if unpushed.is_none()
            && e.query_one(
                "SELECT 1 FROM file_paths WHERE path_id = ?1",
                &[text(&r.path_id)],
                |_| Ok(()),
            )?
            .is_none()
        {
            continue;
        }
        e.execute(sqlite::upsert(&FILE_METADATA), &row_params(r, seq))?;
        untombstone(e, "file_metadata", &r.path_id, &r.key)?;
        metadata += 1;
    }
    report.metadata = metadata;

    for r in &c.chunks {
        e.execute(sqlite::upsert(&CONTENT_CHUNKS), &row_params(r, seq))?;
        untombstone(e, "content_chunks", &r.tenant_id, &r.content_hash)?;
    }
    report.chunks = c.chunks.len() as u64;

    report.tombstones = 0;
    for r in &c.tombstones {
        if r.table_name == "file_metadata" {
            e.execute(
                concat!(
                    "DELETE FROM ",
                    metadata_by_key!(),
                    " WHERE path_id = ?1 AND key = ?2"
                ),
                &[text(&r.key1), text(&r.key2)],
            )?;
        } else {
            e.execute(
                "DELETE FROM content_chunks WHERE tenant_id = ?1 AND content_hash = ?2",
                &[text(&r.key1), text(&r.key2)],
            )?;
        }
        e.execute(sqlite::upsert(&TOMBSTONES), &row_params(r, seq))?;
        report.tombstones += 1;
    }

    // Every deletion and move of the file is in place: the live files can
    // take their paths, unless a live file of this store holds one. In a
    // pull, files left hidden by an earlier page (below) try again first.
    let mut waiting: Vec<(String, String, String, i64)> = Vec::new();
    if unpushed.is_some() {
        waiting = e.query(
            // The literal is HIDDEN, so that the partial index of 0004 serves.
            "SELECT path_id, tenant_id, virtual_path, created_at FROM file_paths \
             WHERE deleted_at = -9223372036854775808",
            &[],
            |row| Ok((row.text(0)?, row.text(1)?, row.text(2)?, row.int(3)?)),
        )?;
    }
    let incoming = c
        .files
        .iter()
        .filter(|r| r.deleted_at.is_none() && !live_now.contains(&r.path_id))
        .map(|r| {
            (
                r.path_id.clone(),
                r.tenant_id.clone(),
                r.virtual_path.clone(),
                r.created_at,
            )
        });
    let mut seen = HashSet::new();
    for (path_id, tenant, path, made) in waiting.into_iter().chain(incoming) {
        if !seen.insert(path_id.clone()) {
            continue;
        }
        let reason = if content.contains(&path_id) {
            Some(ConflictReason::Content)
        } else if let Some(holder) = holder_of(e, &tenant, &path, &path_id)? {
            match unpushed {
                // A pull: the holder was pushed, so PostgreSQL has moved
                // or deleted it after this file took the path, and a
                // later page brings that; this file waits, hidden, until
                // then.
                Some(u) if !u.holds(e, holder.change_seq)? => continue,
                Some(_) => return Err(Unpushed::refuse(&path, "new file at this path")),
                // A change file: the file made first keeps the path; the
                // other becomes a conflict copy.
                None => {
                    let arriving = crate::PathClaim {
                        created_at: made,
                        id: &path_id,
                    };
                    if crate::keeps_path(holder.claim(), arriving, crate::Seen::Unknown) {
                        Some(ConflictReason::Path)
                    } else {
                        // The file here lost the path: it becomes the
                        // copy, named after the change file's source (as
                        // PostgreSQL, applying the same rows, names it).
                        report.conflicts.push(make_copy(
                            e,
                            seq,
                            &holder.path_id,
                            &tenant,
                            &path,
                            source_id,
                            ConflictReason::Path,
                        )?);
                        None
                    }
                }
            }
        } else {
            None
        };
        if let Some(reason) = reason {
            report.conflicts.push(make_copy(
                e, seq, &path_id, &tenant, &path, source_id, reason,
            )?);
        }
        e.execute(
            "UPDATE file_paths SET deleted_at = NULL WHERE path_id = ?1",
            &[text(&path_id)],
        )?;
    }

    Ok(())
}

/// A change file's rows as this store applies them, decided by
/// [`crate::resolve`] against the rows here (a change file says nothing of
/// what its writer had seen here: versions tell, then times): the rows that
/// stay out removed, a file this store keeps at the arriving path given as
/// its row here moved there (after the other file rows), and a file both
/// stores made new versions of
/// given the copy's id, a conflict copy (its ids are returned) with the arriving
/// versions this store lacks and a copy of its metadata; or, when the
/// arriving side's versions of it were made first, this store's file made
/// the copy instead ([`copy_here`]), its row among the rows returned.
fn decide_arriving(e: &mut Engine, seq: Seq, c: &Changes) -> Result<(Changes, HashSet<String>)> {
    use futures_util::FutureExt;
    let mut rows = c.clone();
    let pulls = e
        .query_one("SELECT 1 FROM nexus_pull_state LIMIT 1", &[], |_| Ok(()))?
        .is_some();
    let resolved = crate::resolve(
        &mut Local(e, pulls),
        &mut rows.files,
        &mut rows.versions,
        &mut rows.metadata,
        &mut rows.tombstones,
        "",
        crate::Seen::Unknown,
    )
    .now_or_never()
    .expect("an embedded store's reads complete at once")?;
    for (id, path, at) in resolved.decided.moves {
        if let Some(mut h) = file_here(e, &id)? {
            h.virtual_path = path;
            h.updated_at = at;
            rows.files.push(h);
        }
    }
    // A copy the writer made its own way round, of content this store
    // keeps in another file, stays out here: a deletion of it written here
    // would travel on in this store's changes, to stores where that copy
    // is where the content is. (PostgreSQL writes the deletion: it reaches
    // the copy's maker by its pull, and pulled rows go no further.)
    if !resolved.decided.retired.is_empty() {
        let retired: HashSet<&String> = resolved.decided.retired.iter().collect();
        rows.files.retain(|f| !retired.contains(&f.path_id));
    }
    let mut copies: HashSet<String> = resolved
        .decided
        .copies
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    for (file, copy, from) in resolved.decided.displaced {
        rows.files.push(copy_here(e, seq, &file, &copy, from)?);
        copies.insert(copy);
    }
    Ok((rows, copies))
}

/// The file `file` here becomes the conflict copy `copy`
/// ([`crate::FilePlan::CopyHere`]), as this store's change: its versions
/// from number `from` on move to the copy (freeing their numbers for the
/// arriving ones) and its metadata is copied to it; returns the copy's row
/// (the file's row here with the copy's id), which the import writes and
/// names with the other copies (as PostgreSQL's apply of the same rows).
fn copy_here(e: &mut Engine, seq: Seq, file: &str, copy: &str, from: i64) -> Result<FileRow> {
    let mut row = file_here(e, file)?
        .ok_or_else(|| invalid(format!("the file {file} to copy is not here")))?;
    row.path_id = copy.to_string();
    let mut params = row_params(&row, seq);
    if row.deleted_at.is_none() {
        params[column_index(&FILE_PATHS, "deleted_at")] = int(HIDDEN);
    }
    e.execute(sqlite::upsert(&FILE_PATHS), &params)?;
    e.execute(
        "UPDATE version_history SET path_id = ?2, change_seq = ?4 \
         WHERE path_id = ?1 AND version_number >= ?3",
        &[text(file), text(copy), int(from), int(seq)],
    )?;
    static COPY_KEYS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let copy_keys = COPY_KEYS.get_or_init(|| {
        let set = [("path_id", "?2"), ("change_seq", "?3")];
        FILE_METADATA.copy_rows_of_file(metadata_by_key!(), "?1", &set, false)
    });
    e.execute(copy_keys, &[text(file), text(copy), int(seq)])?;
    Ok(row)
}

/// This store's row of the file `path_id`.
fn file_here(e: &mut Engine, path_id: &str) -> Result<Option<FileRow>> {
    e.query_one(
        sqlite::select_by_key(&FILE_PATHS),
        &[text(path_id)],
        |row| FileRow::read(&mut RowCells::new(row)),
    )
}

/// What [`crate::resolve`] reads in an embedded store, and whether it
/// pulls from a PostgreSQL database ([`crate::ApplySide::pulls_from_a_hub`]).
struct Local<'e>(&'e mut Engine, bool);

impl crate::ApplySide for Local<'_> {
    type Id = String;
    type File = FileRow;
    type Version = VersionRow;
    type Metadata = MetadataRow;
    type Removal = TombstoneRow;
    type Error = Error;

    async fn files_here(&mut self, ids: &[String]) -> Result<HashMap<String, crate::HereFile>> {
        use crate::ArrivingFile;
        let mut out = HashMap::new();
        for id in ids {
            if let Some(h) = file_here(self.0, id)? {
                let side = h.side();
                let here = crate::HereFile {
                    change_seq: h.change_seq,
                    // An embedded store keeps no origin per row;
                    // `Seen::Unknown` does not look at it, nor at the
                    // position.
                    origin: None,
                    live: side.live,
                    version: side.version,
                    path: side.path.to_string(),
                    changed_at: side.changed_at,
                };
                out.insert(id.clone(), here);
            }
        }
        Ok(out)
    }

    async fn clashes(&mut self, versions: &[VersionRow]) -> Result<Vec<Clash<String>>> {
        let mut out = Vec::new();
        for v in versions {
            let other = self.0.query_one(
                "SELECT version_id, created_at FROM version_history WHERE path_id = ?1 \
                 AND version_number = ?2 AND version_id <> ?3",
                &[text(&v.path_id), int(v.version_number), text(&v.version_id)],
                |r| Ok((r.text(0)?, r.int(1)?)),
            )?;
            out.extend(other.map(|(here, made)| Clash {
                version: v.version_id.clone(),
                file: v.path_id.clone(),
                number: v.version_number,
                here,
                made: (v.created_at, made),
            }));
        }
        Ok(out)
    }

    async fn known(&mut self, ids: &[String]) -> Result<HashSet<String>> {
        let mut out = HashSet::new();
        for id in ids {
            if has_version(self.0, id)? {
                out.insert(id.clone());
            }
        }
        Ok(out)
    }

    async fn held_elsewhere(
        &mut self,
        versions: &[VersionRow],
    ) -> Result<Vec<(String, (String, i64))>> {
        let mut out = Vec::new();
        for v in versions {
            let at = self.0.query_one(
                "SELECT path_id, version_number FROM version_history WHERE version_id = ?1 \
                 AND path_id <> ?2",
                &[text(&v.version_id), text(&v.path_id)],
                |r| Ok((r.text(0)?, r.int(1)?)),
            )?;
            out.extend(at.map(|at| (v.version_id.clone(), at)));
        }
        Ok(out)
    }

    async fn parents_elsewhere(
        &mut self,
        versions: &[VersionRow],
    ) -> Result<Vec<(String, String, String)>> {
        let mut out = Vec::new();
        for v in versions {
            let Some(parent) = &v.parent_version_id else {
                continue;
            };
            let holder = self.0.query_one(
                "SELECT h.path_id FROM version_history h WHERE h.version_id = ?1 AND h.path_id <> ?2 \
                 AND EXISTS (SELECT 1 FROM version_history o WHERE o.path_id = ?2 \
                 AND o.version_number = (SELECT min(version_number) FROM version_history \
                 WHERE path_id = h.path_id))",
                &[text(parent), text(&v.path_id)],
                |r| r.text(0),
            )?;
            out.extend(holder.map(|g| (v.version_id.clone(), parent.clone(), g)));
        }
        Ok(out)
    }

    fn pulls_from_a_hub(&self) -> bool {
        self.1
    }

    fn new_id(&mut self) -> String {
        self.0.new_id()
    }

    fn fork_copy_id(&self, file: &String, fork: &crate::Fork<String>) -> String {
        fork.copy_id(file).to_string()
    }

    async fn keys_here(&mut self, keys: &[(String, &str)]) -> Result<Vec<KeyHere>> {
        let mut out = Vec::with_capacity(keys.len());
        for (file, key) in keys {
            out.push(crate::meta::key_here(self.0, file, key)?);
        }
        Ok(out)
    }
}

/// A metadata key's state here (see [`crate::ApplySide::keys_here`]).
type KeyHere = Option<(Option<String>, i64)>;

/// Whether this store holds the version `version_id` (in any file).
fn has_version(e: &mut Engine, version_id: &str) -> Result<bool> {
    Ok(e.query_one(
        "SELECT 1 FROM version_history WHERE version_id = ?1",
        &[text(version_id)],
        |_| Ok(()),
    )?
    .is_some())
}

/// The live file other than `path_id` at `path` of `tenant`, if there is
/// one.
fn holder_of(e: &mut Engine, tenant: &str, path: &str, path_id: &str) -> Result<Option<Holder>> {
    e.query_one(
        "SELECT change_seq, path_id, created_at FROM file_paths WHERE tenant_id = ?1 \
         AND virtual_path = ?2 AND deleted_at IS NULL AND path_id <> ?3",
        &[text(tenant), text(path), text(path_id)],
        |row| {
            Ok(Holder {
                change_seq: row.int(0)?,
                path_id: row.text(1)?,
                created_at: row.int(2)?,
            })
        },
    )
}

/// The live file that holds a path another file wants ([`holder_of`]).
struct Holder {
    change_seq: i64,
    path_id: String,
    created_at: i64,
}

impl Holder {
    fn claim(&self) -> crate::PathClaim<'_> {
        crate::PathClaim {
            created_at: self.created_at,
            id: &self.path_id,
        }
    }
}

/// A row's cells as parameters, then `seq` as its `change_seq`.
pub(crate) fn row_params<T: TableRow>(r: &T, seq: Seq) -> Vec<crate::engine::Param> {
    let mut p: Vec<_> = r.cells().into_iter().map(cell).collect();
    p.push(int(seq));
    p
}

/// Where `name` is among `t`'s columns.
fn column_index(t: &Table, name: &str) -> usize {
    t.columns
        .iter()
        .position(|c| c.name == name)
        .expect("a column of the table")
}

/// Moves the file `path_id` (hidden, or the live holder of a path that an
/// arriving file made before it takes) to the first free conflict-copy path
/// of `path`, stamped after its row, and marks it with
/// [`crate::CONFLICT_KEY`] (the conflict rule, as PostgreSQL applies it to
/// a push).
fn make_copy(
    e: &mut Engine,
    seq: Seq,
    path_id: &str,
    tenant: &str,
    path: &str,
    source_id: &str,
    reason: ConflictReason,
) -> Result<ConflictCopy> {
    let at = e
        .query_one(
            "SELECT updated_at FROM file_paths WHERE path_id = ?1",
            &[text(path_id)],
            |r| r.int(0),
        )?
        .unwrap_or(0);
    let info = ConflictInfo {
        path: path.to_string(),
        source: source_id.to_string(),
        at: crate::Timestamp::from_micros(at),
        reason,
    };
    // Files become live one at a time here: the copies made before this
    // one are among the live files.
    let (from, to) = info.copy_paths_range();
    let taken: HashSet<String> = e
        .query(
            "SELECT virtual_path FROM file_paths WHERE tenant_id = ?1 AND virtual_path >= ?2 \
             AND virtual_path < ?3 AND deleted_at IS NULL",
            &[text(tenant), text(&from), text(&to)],
            |r| r.text(0),
        )?
        .into_iter()
        .collect();
    let copy = info.free_copy_path(|p| taken.contains(p));
    // The move is this store's change to the row: stamped just after it
    // (by no clock: PostgreSQL's apply of the same rows stamps the same),
    // so that a store that has the file at the path takes the move from
    // this store's changes (the later change to a row wins).
    e.execute(
        "UPDATE file_paths SET virtual_path = ?2, updated_at = ?3, change_seq = ?4 WHERE path_id = ?1",
        &[text(path_id), text(&copy), int(at.saturating_add(1)), int(seq)],
    )?;
    // The mark too, by no clock (as PostgreSQL's `mark_conflict`): two
    // sides that each made a copy of one file (named after different
    // sources) then keep the same one, by its path and by its mark alike.
    crate::meta::upsert_metadata_at(
        e,
        seq,
        path_id,
        CONFLICT_KEY,
        &crate::canonical_json(&info.to_json()),
        at.saturating_add(1),
    )?;
    Ok(info.into_copy(tenant.to_string(), copy, path_id.to_string()))
}

/// Records that this store has applied `source_id` through `through` (by a
/// change file).
fn record_source(e: &mut Engine, source_id: &str, through: i64) -> Result<()> {
    let now = e.now().as_micros();
    e.execute(
        "INSERT INTO nexus_sync_state (source_id, watermark, synced_at, via) VALUES (?1, ?2, ?3, 'change_file') \
         ON CONFLICT (source_id) DO UPDATE SET watermark = excluded.watermark, synced_at = excluded.synced_at, \
         via = excluded.via",
        &[text(source_id), int(through), int(now)],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewFile;

    fn reason(bytes: &[u8]) -> String {
        match ChangeFile::decode(bytes) {
            Err(Error::InvalidChangeFile { reason }) => reason,
            other => panic!("expected InvalidChangeFile, got {other:?}"),
        }
    }

    #[test]
    fn decode_names_what_is_wrong() {
        assert!(reason(b"{\"format\": ").contains("not valid JSON"));
        assert!(reason(b"{\n\"format\" 1}").contains("line 2 column"));
        assert!(reason(b"[1]").contains("found an array"));
        assert!(reason(b"{}").contains("no \"format\" field"));
        assert!(reason(br#"{"format":"zip"}"#).contains("\"format\" is \"zip\""));
        assert!(reason(br#"{"format":null}"#).contains("\"format\" is null"));
        assert!(reason(b" \n\"text\"").contains("found a string"));
        assert!(reason(b"garbage").contains("not valid JSON"));
        let twice = reason(br#"{"format":"nexus-changes","format":"x"}"#);
        assert!(
            twice.contains("duplicate field `format`") && !twice.contains("not valid JSON"),
            "{twice}"
        );
        // The header is read first, the rows after it: a later field does
        // not hide an unsupported version.
        assert!(
            reason(br#"{"files":[{"x":1}],"version":7,"format":"nexus-changes"}"#)
                .contains("unsupported version 7")
        );
        assert!(
            reason(br#"{"format":"nexus-changes","version":2}"#)
                .contains("unsupported version 2 (this build reads version 1)")
        );
        assert!(reason(br#"{"format":"nexus-changes"}"#).contains("no \"version\""));
        assert!(
            reason(br#"{"format":"nexus-changes","version":1,"after":0,"through":1}"#)
                .contains("missing field `source_id`")
        );
        assert!(
            reason(
                br#"{"format":"nexus-changes","version":1,"source_id":"s","after":3,"through":1}"#
            )
            .contains("after = 3 is greater than through = 1")
        );
    }

    #[test]
    fn export_import_round_trip_and_exactly_once() {
        pollster::block_on(async {
            let a = Store::memory().await.unwrap();
            a.put(NewFile::new("/x", "local", "/p", 3)).await.unwrap();
            let file = a.export_changes(0).await.unwrap();
            let back = ChangeFile::decode(&file.encode()).unwrap();
            assert_eq!(back, file);
            let b = Store::memory().await.unwrap();
            let r = b.import_changes(&back).await.unwrap();
            assert!(!r.skipped && r.files == 1 && r.versions == 1, "{r:?}");
            assert_eq!(b.get("/x").await.unwrap().unwrap().size, 3);
            assert!(b.import_changes(&back).await.unwrap().skipped);
            assert!(matches!(
                a.import_changes(&back).await,
                Err(Error::InvalidChangeFile { .. })
            ));
        });
    }
}
