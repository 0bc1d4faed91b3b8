//! Reading the store's changes for replication: every row as stored, all
//! tenants, selected by change sequence, from one consistent snapshot.
//!
//! Every write transaction stamps the rows it writes with the next change
//! sequence number, and sequence order is commit order, so "everything with
//! `change_seq` in `(after, through]`" of one snapshot is a complete, exact
//! description of what changed between two points. Rows carry their latest
//! state; removals of rows that are gone for good are [`TombstoneRow`]s.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::engine::{Engine, RowCells, int, text};
use crate::error::{Error, Result};
use crate::pool::ReadGuard;
use crate::store::Store;
use crate::tables::{TableRow, sqlite};

/// The store a row came from, and that store's change sequence number for
/// it: kept by PostgreSQL for rows that a sync run or a change file wrote,
/// so that a store recognises its own changes when they come back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    /// The source store's id.
    pub source_id: String,
    /// Its change sequence number for the row.
    pub seq: i64,
}

/// A `file_paths` row as stored. Times are microseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct FileRow {
    pub path_id: String,
    pub tenant_id: String,
    pub virtual_path: String,
    pub backend_id: String,
    pub physical_path: String,
    pub size_bytes: i64,
    pub content_hash: Option<String>,
    pub file_type: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub deleted_at: Option<i64>,
    pub current_version: i64,
    pub change_seq: i64,
    /// Where the row came from when another store wrote it (rows read from
    /// PostgreSQL's change feed); absent for rows written where they were read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// A stand-in `deleted_at` for live files until every deletion of the file
/// is applied, so that paths can change hands within one file.
pub(crate) const HIDDEN: i64 = i64::MIN;

impl FileRow {
    /// When the row last changed: its deletion, else its last update (a
    /// file hidden until its path is free is live).
    pub fn changed_at(&self) -> i64 {
        match self.deleted_at {
            Some(at) if at != HIDDEN => at,
            _ => self.updated_at,
        }
    }
}

/// A `file_metadata` row as stored; `value` is canonical JSON text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct MetadataRow {
    pub path_id: String,
    pub key: String,
    pub value: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub change_seq: i64,
    /// Where the row came from when another store wrote it (rows read from
    /// PostgreSQL's change feed); absent for rows written where they were read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// A `version_history` row as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct VersionRow {
    pub version_id: String,
    pub path_id: String,
    pub version_number: i64,
    pub backend_id: String,
    pub physical_path: String,
    pub content_hash: Option<String>,
    pub size_bytes: i64,
    pub mime_type: Option<String>,
    pub parent_version_id: Option<String>,
    pub source_type: String,
    pub change_reason: Option<String>,
    pub created_by: Option<String>,
    pub created_at: i64,
    pub change_seq: i64,
    /// Where the row came from when another store wrote it (rows read from
    /// PostgreSQL's change feed); absent for rows written where they were read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// A `content_chunks` row as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct ChunkRow {
    pub tenant_id: String,
    pub content_hash: String,
    pub size_bytes: i64,
    pub storage_path: String,
    pub ref_count: i64,
    pub created_at: i64,
    pub last_accessed_at: Option<i64>,
    pub protected_until: Option<i64>,
    pub change_seq: i64,
    /// Where the row came from when another store wrote it (rows read from
    /// PostgreSQL's change feed); absent for rows written where they were read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// A row removed for good: `file_metadata` (key1 = path id, key2 = key) or
/// `content_chunks` (key1 = tenant, key2 = content hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct TombstoneRow {
    pub table_name: String,
    pub key1: String,
    pub key2: String,
    pub deleted_at: i64,
    pub change_seq: i64,
    /// Where the row came from when another store wrote it (rows read from
    /// PostgreSQL's change feed); absent for rows written where they were read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// The rows that changed in `(after, through]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    /// Exclusive lower bound of the change sequence range.
    pub after: i64,
    /// Inclusive upper bound.
    pub through: i64,
    /// Changed `file_paths` rows.
    pub files: Vec<FileRow>,
    /// Changed `file_metadata` rows.
    pub metadata: Vec<MetadataRow>,
    /// Changed `version_history` rows.
    pub versions: Vec<VersionRow>,
    /// Changed `content_chunks` rows.
    pub chunks: Vec<ChunkRow>,
    /// Removals.
    pub tombstones: Vec<TombstoneRow>,
}

impl Changes {
    /// How many rows, all tables together.
    pub fn len(&self) -> usize {
        self.files.len()
            + self.metadata.len()
            + self.versions.len()
            + self.chunks.len()
            + self.tombstones.len()
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Carries the range on with `more`, the rows of `(self.through,
    /// more.through]`.
    fn append(&mut self, more: Changes) {
        self.through = more.through;
        self.extend_rows(more);
    }

    /// Adds `more`'s rows after this one's, table by table (the range stays).
    fn extend_rows(&mut self, more: Changes) {
        self.files.extend(more.files);
        self.metadata.extend(more.metadata);
        self.versions.extend(more.versions);
        self.chunks.extend(more.chunks);
        self.tombstones.extend(more.tombstones);
    }

    /// Splits the rows in two, both over this range: the first `at` rows,
    /// counted through the tables in the change file's order (files,
    /// versions, metadata, chunks, tombstones), and the rest.
    /// [`Changes::join`] of the two gives these changes back.
    pub fn split_at(mut self, mut at: usize) -> (Changes, Changes) {
        let mut rest = Changes {
            after: self.after,
            through: self.through,
            ..Changes::default()
        };
        fn take<T>(rows: &mut Vec<T>, at: &mut usize) -> Vec<T> {
            let n = (*at).min(rows.len());
            *at -= n;
            rows.split_off(n)
        }
        rest.files = take(&mut self.files, &mut at);
        rest.versions = take(&mut self.versions, &mut at);
        rest.metadata = take(&mut self.metadata, &mut at);
        rest.chunks = take(&mut self.chunks, &mut at);
        rest.tombstones = take(&mut self.tombstones, &mut at);
        (self, rest)
    }

    /// The rows of `parts` (each over the same range, in the order
    /// [`Changes::split_at`] made them) as one change; `None` when the
    /// parts' ranges differ or there are none.
    pub fn join(parts: impl IntoIterator<Item = Changes>) -> Option<Changes> {
        let mut parts = parts.into_iter();
        let mut whole = parts.next()?;
        for part in parts {
            if (part.after, part.through) != (whole.after, whole.through) {
                return None;
            }
            whole.extend_rows(part);
        }
        Some(whole)
    }
}

/// The tables that carry a change sequence, in dependency order: the names
/// of [`crate::tables::TABLES`].
pub const CHANGE_TABLES: [&str; 5] = {
    let t = crate::tables::TABLES;
    [t[0].name, t[1].name, t[2].name, t[3].name, t[4].name]
};

/// The most transactions, all pulls', that a push of nothing else waits
/// for ([`Snapshot::only_pulled_after`]).
pub const PUSH_PUT_OFF: i64 = 64;

/// A consistent, read-only view of the whole store (all tenants), for
/// replication: one read transaction on one of the store's reading
/// connections, held until it is dropped. Writes and other reads go on
/// meanwhile (on the other connections) and are not seen by it.
pub struct Snapshot<'a> {
    engine: ReadGuard<'a>,
    source_id: String,
    change_seq: i64,
}

impl std::fmt::Debug for Snapshot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("source_id", &self.source_id)
            .field("change_seq", &self.change_seq)
            .finish()
    }
}

impl Drop for Snapshot<'_> {
    fn drop(&mut self) {
        self.engine.end_read();
    }
}

/// Every row of `T`'s table with `change_seq` in `(after, through]`, in
/// change sequence order.
fn read_changes<T: TableRow>(e: &mut Engine, after: i64, through: i64) -> Result<Vec<T>> {
    e.query(
        sqlite::select_changes(T::TABLE),
        &[int(after), int(through)],
        |r| T::read(&mut RowCells::new(r)),
    )
}

impl Snapshot<'_> {
    /// The store's identity as a replication source.
    pub fn source_id(&self) -> &str {
        &self.source_id
    }

    /// The newest change sequence number in this snapshot.
    pub fn change_seq(&self) -> i64 {
        self.change_seq
    }

    /// The end of a window starting after `after` that holds about
    /// `max_rows` rows per table (more only when one transaction wrote more):
    /// read windows `(a, window_end(a)]` until `change_seq()` is reached.
    pub fn window_end(&mut self, after: i64, max_rows: usize) -> Result<i64> {
        let offset = int(i64::try_from(max_rows.max(1)).unwrap_or(i64::MAX) - 1);
        let params = [int(after), int(self.change_seq), offset];
        let mut end = self.change_seq;
        macro_rules! candidate {
            ($table:literal) => {
                if let Some(s) = self.engine.query_one(
                    concat!(
                        "SELECT change_seq FROM ",
                        $table,
                        " WHERE change_seq > ?1 AND change_seq <= ?2 ORDER BY change_seq LIMIT 1 OFFSET ?3"
                    ),
                    &params,
                    |r| r.int(0),
                )? {
                    end = end.min(s);
                }
            };
        }
        candidate!("file_paths");
        candidate!("version_history");
        candidate!("file_metadata");
        candidate!("content_chunks");
        candidate!("tombstones");
        Ok(end)
    }

    /// Every row with `change_seq` in `(after, through]`, each table sorted by
    /// change sequence.
    pub fn changes(&mut self, after: i64, through: i64) -> Result<Changes> {
        if through > self.change_seq || after > through {
            return Err(Error::invalid(
                "change range",
                &format!("({after}, {through}]"),
                format!("must lie within (0, {}]", self.change_seq),
            ));
        }
        let e = &mut self.engine;
        Ok(Changes {
            after,
            through,
            files: read_changes(e, after, through)?,
            versions: read_changes(e, after, through)?,
            metadata: read_changes(e, after, through)?,
            chunks: read_changes(e, after, through)?,
            tombstones: read_changes(e, after, through)?,
        })
    }

    /// How far this store had applied the change feed of the database
    /// `hub_id` at this snapshot (0: never pulled from it).
    pub fn pull_position(&mut self, hub_id: &str) -> Result<i64> {
        crate::pull::position(&mut self.engine, hub_id)
    }

    /// The change sequence numbers in `(after, through]` that were pulls
    /// (`Store::apply_pull`): the rows they stamped came from PostgreSQL.
    pub fn pulled(&mut self, after: i64, through: i64) -> Result<HashSet<i64>> {
        Ok(self
            .engine
            .query(
                "SELECT change_seq FROM nexus_pulled WHERE change_seq > ?1 AND change_seq <= ?2",
                &[int(after), int(through)],
                |r| r.int(0),
            )?
            .into_iter()
            .collect())
    }

    /// Whether a push to a server whose watermark of this store is `after`
    /// may be put off: every transaction since (up to this snapshot's
    /// change sequence, at most [`PUSH_PUT_OFF`] of them) was a pull's, so
    /// the push would send no row and only move the watermark. A client
    /// that pulls while others write would otherwise follow every pull that
    /// brought rows with such a push: a request and a transaction on the
    /// server each round. The next push covers the range (reading those
    /// pulled rows again, to leave them out), and one is sent anyway once
    /// [`PUSH_PUT_OFF`] pulls wait, which bounds that reading.
    pub fn only_pulled_after(&mut self, after: i64) -> Result<bool> {
        let waiting = self.change_seq - after;
        if waiting <= 0 || waiting > PUSH_PUT_OFF {
            return Ok(false);
        }
        let pulled = self
            .engine
            .query_one(
                "SELECT COUNT(*) FROM nexus_pulled WHERE change_seq > ?1 AND change_seq <= ?2",
                &[int(after), int(self.change_seq)],
                |r| r.int(0),
            )?
            .unwrap_or(0);
        Ok(pulled == waiting)
    }

    /// [`Snapshot::changes`] without the rows that pulls from PostgreSQL
    /// wrote (`Store::apply_pull`): what a push sends. A row changed here
    /// after a pull carries a later, local stamp and is kept.
    pub fn local_changes(&mut self, after: i64, through: i64) -> Result<Changes> {
        let mut c = self.changes(after, through)?;
        let pulled = self.pulled(after, through)?;
        if !pulled.is_empty() {
            c.files.retain(|r| !pulled.contains(&r.change_seq));
            c.versions.retain(|r| !pulled.contains(&r.change_seq));
            c.metadata.retain(|r| !pulled.contains(&r.change_seq));
            c.chunks.retain(|r| !pulled.contains(&r.change_seq));
            c.tombstones.retain(|r| !pulled.contains(&r.change_seq));
        }
        Ok(c)
    }

    /// [`Snapshot::local_changes`] made whole for a store that may never
    /// have pulled: with the rows written by pulls that its versions need
    /// there (the row of each file it holds versions of, and each
    /// version's parent), stamped `through`. A store that pulls and also
    /// trades change files would otherwise send a version of its own whose
    /// file row a pull wrote since (PostgreSQL moved the file to a conflict
    /// copy): the recipient could not place it. What this store wrote
    /// itself before `after` went in an earlier change file. Metadata does
    /// not bring a pulled file row: a row PostgreSQL had when this store
    /// pulled it could undo a later rename elsewhere (a change file is
    /// settled by version numbers); the importer leaves out keys of files it
    /// has nowhere.
    pub fn local_changes_whole(&mut self, after: i64, through: i64) -> Result<Changes> {
        let mut c = self.local_changes(after, through)?;
        // Every pull's stamp, not only this range's: a needed row may be
        // older than `after`.
        let pulled = self.pulled(0, through)?;
        if pulled.is_empty() {
            return Ok(c);
        }
        // Ids looked up already (found or not): each is read once.
        let mut asked: HashSet<String> = HashSet::new();
        loop {
            let files: HashSet<&str> = c.files.iter().map(|f| f.path_id.as_str()).collect();
            let versions: HashSet<&str> =
                c.versions.iter().map(|v| v.version_id.as_str()).collect();
            let mut need_files: Vec<String> = c
                .versions
                .iter()
                .map(|v| &v.path_id)
                .filter(|p| !files.contains(p.as_str()) && !asked.contains(p.as_str()))
                .cloned()
                .collect();
            let mut need_versions: Vec<String> = c
                .versions
                .iter()
                .filter_map(|v| v.parent_version_id.as_ref())
                .filter(|p| !versions.contains(p.as_str()) && !asked.contains(p.as_str()))
                .cloned()
                .collect();
            need_files.sort_unstable();
            need_files.dedup();
            need_versions.sort_unstable();
            need_versions.dedup();
            asked.extend(need_files.iter().chain(&need_versions).cloned());
            let e = &mut self.engine;
            let mut added = false;
            for id in need_files {
                let row: Option<FileRow> =
                    e.query_one(sqlite::select_by_key(FileRow::TABLE), &[text(&id)], |r| {
                        FileRow::read(&mut RowCells::new(r))
                    })?;
                if let Some(row) = row.filter(|r| pulled.contains(&r.change_seq)) {
                    c.files.push(FileRow {
                        change_seq: through,
                        ..row
                    });
                    added = true;
                }
            }
            for id in need_versions {
                let row: Option<VersionRow> = e.query_one(
                    sqlite::select_by_key(VersionRow::TABLE),
                    &[text(&id)],
                    |r| VersionRow::read(&mut RowCells::new(r)),
                )?;
                if let Some(row) = row.filter(|r| pulled.contains(&r.change_seq)) {
                    c.versions.push(VersionRow {
                        change_seq: through,
                        ..row
                    });
                    added = true;
                }
            }
            if !added {
                return Ok(c);
            }
        }
    }

    /// The next window of [`Snapshot::local_changes`] after `after`: about
    /// `max_rows` rows per table ([`Snapshot::window_end`]), carried on
    /// until it holds the row of every file that its versions and metadata
    /// belong to. A file's row is stamped at or after them (a rename, or a
    /// later write of the file alone, stamps it again), and a window that a
    /// sync server applies in a transaction of its own must bring the file
    /// with them: the database's foreign keys and the conflict rule need it.
    /// Read windows from `after` until `change_seq()` is reached, each
    /// starting at the `through` of the one before.
    pub fn local_window(&mut self, after: i64, max_rows: usize) -> Result<Changes> {
        let through = self.window_end(after, max_rows)?;
        let mut window = self.local_changes(after, through)?;
        // The versions and metadata rows looked at so far.
        let mut checked = (0, 0);
        loop {
            let later = {
                let have: std::collections::HashSet<&str> =
                    window.files.iter().map(|f| f.path_id.as_str()).collect();
                let mut needed: Vec<&str> = window.versions[checked.0..]
                    .iter()
                    .map(|v| v.path_id.as_str())
                    .chain(
                        window.metadata[checked.1..]
                            .iter()
                            .map(|m| m.path_id.as_str()),
                    )
                    .filter(|p| !have.contains(p))
                    .collect();
                needed.sort_unstable();
                needed.dedup();
                let mut later = window.through;
                for path_id in needed {
                    if let Some(seq) = self.engine.query_one(
                        "SELECT change_seq FROM file_paths WHERE path_id = ?1",
                        &[text(path_id)],
                        |r| r.int(0),
                    )? {
                        later = later.max(seq);
                    }
                }
                later
            };
            if later == window.through {
                return Ok(window);
            }
            checked = (window.versions.len(), window.metadata.len());
            let more = self.local_changes(window.through, later)?;
            window.append(more);
        }
    }

    /// How many rows of each table of [`CHANGE_TABLES`] (in that order) have
    /// `change_seq` in `(after, through]`.
    pub fn count_changes(&mut self, after: i64, through: i64) -> Result<[u64; 5]> {
        let p = [int(after), int(through)];
        let sqls = [
            "SELECT COUNT(*) FROM file_paths WHERE change_seq > ?1 AND change_seq <= ?2",
            "SELECT COUNT(*) FROM version_history WHERE change_seq > ?1 AND change_seq <= ?2",
            "SELECT COUNT(*) FROM file_metadata WHERE change_seq > ?1 AND change_seq <= ?2",
            "SELECT COUNT(*) FROM content_chunks WHERE change_seq > ?1 AND change_seq <= ?2",
            "SELECT COUNT(*) FROM tombstones WHERE change_seq > ?1 AND change_seq <= ?2",
        ];
        let mut out = [0u64; 5];
        for (slot, sql) in out.iter_mut().zip(sqls) {
            *slot = self.engine.query_one(sql, &p, |r| r.int(0))?.unwrap_or(0) as u64;
        }
        Ok(out)
    }

    /// Row counts per table of [`CHANGE_TABLES`], in that order.
    pub fn row_counts(&mut self) -> Result<[u64; 5]> {
        let mut out = [0u64; 5];
        let sqls = [
            "SELECT COUNT(*) FROM file_paths",
            "SELECT COUNT(*) FROM version_history",
            "SELECT COUNT(*) FROM file_metadata",
            "SELECT COUNT(*) FROM content_chunks",
            "SELECT COUNT(*) FROM tombstones",
        ];
        for (slot, sql) in out.iter_mut().zip(sqls) {
            *slot = self.engine.query_one(sql, &[], |r| r.int(0))?.unwrap_or(0) as u64;
        }
        Ok(out)
    }
}

impl Store {
    /// A consistent snapshot of the whole store for replication. While it
    /// lives it holds one of the store's reading connections (the other
    /// calls share the rest); the file's write-ahead log cannot be
    /// checkpointed past it, so do not keep it longer than needed.
    pub async fn snapshot(&self) -> Result<Snapshot<'_>> {
        let mut engine = self.reader().await;
        engine.begin_read()?;
        let state = engine.query_one(
            "SELECT change_seq, store_id FROM nexus_state WHERE id = 1",
            &[],
            |r| Ok((r.int(0)?, r.text(1)?)),
        );
        let (change_seq, source_id) = match state {
            Ok(Some(s)) => s,
            Ok(None) => {
                engine.end_read();
                return Err(Error::Corrupt {
                    table: "nexus_state",
                    detail: "the state row is missing".into(),
                });
            }
            Err(e) => {
                engine.end_read();
                return Err(e);
            }
        };
        Ok(Snapshot {
            engine,
            source_id,
            change_seq,
        })
    }
}
