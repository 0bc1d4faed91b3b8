//! Pulls: applying pages of a PostgreSQL database's change feed to this
//! store, exactly once and in order, and telling a push which rows came
//! from pulls (those are not sent back).
//!
//! Each page is applied in one write transaction together with the new feed
//! position (`nexus_pull_state`), so a pull cut at any point resumes from
//! the last page applied. The transaction's change sequence number is
//! recorded in `nexus_pulled`: [`crate::Snapshot::local_changes`] leaves
//! those rows out, so that what came from the database does not go back to
//! it, while a local write after the pull restamps a row and is sent.
//! Rows that this store wrote itself (their origin is this store) are
//! recognised and not applied again.

use serde::Serialize;

use crate::change_file::{ImportReport, Unpushed, apply_rows};
use crate::engine::{Engine, int, text};
use crate::error::{Error, Result};
use crate::pool::Exclusive;
use crate::store::Store;
use crate::{Changes, Origin};

/// What [`Store::apply_pull`] did with one page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PullApplied {
    /// The page's range: `(after, through]` of the database's feed.
    pub after: i64,
    /// Its inclusive upper bound: this store's position afterwards.
    pub through: i64,
    /// Whether this store had already applied the page (nothing written).
    pub skipped: bool,
    /// Rows applied, per table (the counts of an import).
    pub files: u64,
    /// `version_history` rows applied.
    pub versions: u64,
    /// `file_metadata` rows applied.
    pub metadata: u64,
    /// `content_chunks` rows applied.
    pub chunks: u64,
    /// Removals applied.
    pub tombstones: u64,
    /// Rows of this store's own changes, recognised and not applied again.
    pub own: u64,
}

impl PullApplied {
    /// Rows applied, all tables together.
    pub fn rows(&self) -> u64 {
        self.files + self.versions + self.metadata + self.chunks + self.tombstones
    }
}

fn position(e: &mut Engine, hub_id: &str) -> Result<i64> {
    Ok(e.query_one(
        "SELECT position FROM nexus_pull_state WHERE hub_id = ?1",
        &[text(hub_id)],
        |r| r.int(0),
    )?
    .unwrap_or(0))
}

/// `changes` without the rows whose origin is `own`; returns how many went.
fn without_own(changes: &Changes, own: &str) -> (Changes, u64) {
    let mine = |o: &Option<Origin>| o.as_ref().is_some_and(|o| o.source_id == own);
    let mut c = changes.clone();
    let before = c.len();
    c.files.retain(|r| !mine(&r.origin));
    c.versions.retain(|r| !mine(&r.origin));
    c.metadata.retain(|r| !mine(&r.origin));
    c.chunks.retain(|r| !mine(&r.origin));
    c.tombstones.retain(|r| !mine(&r.origin));
    let own_rows = (before - c.len()) as u64;
    (c, own_rows)
}

impl Store {
    /// How far this store has applied the change feed of the database
    /// `hub_id` (0: never pulled from it).
    pub async fn pull_position(&self, hub_id: &str) -> Result<i64> {
        let mut e = self.reader().await;
        e.read(|e| position(e, hub_id))
    }

    /// Applies one page of the change feed of the database `hub_id` (rows
    /// in `(changes.after, changes.through]`), in one write transaction that
    /// also moves this store's position to `changes.through`. A page this
    /// store already has is skipped; one that starts after its position is
    /// refused ([`Error::ChangeFileGap`]). Rows whose origin is this store
    /// are left out. `pushed_through` is how far the database has this
    /// store's own changes: a row changed here after it (and not by a pull)
    /// is refused rather than overwritten ([`Error::Conflict`] naming the
    /// path; push first).
    pub async fn apply_pull(
        &self,
        hub_id: &str,
        pushed_through: i64,
        changes: &Changes,
    ) -> Result<PullApplied> {
        let mut out = PullApplied {
            after: changes.after,
            through: changes.through,
            skipped: false,
            files: 0,
            versions: 0,
            metadata: 0,
            chunks: 0,
            tombstones: 0,
            own: 0,
        };
        self.writer().await.write(|e, seq| {
            let at = position(e, hub_id)?;
            if at >= changes.through && changes.through > changes.after {
                out.skipped = true;
                return Ok(());
            }
            if at != changes.after {
                return Err(Error::ChangeFileGap {
                    source_id: hub_id.to_string(),
                    applied: at,
                    after: changes.after,
                    through: changes.through,
                });
            }
            let own = e
                .query_one("SELECT store_id FROM nexus_state WHERE id = 1", &[], |r| {
                    r.text(0)
                })?
                .unwrap_or_default();
            let (rows, own_rows) = without_own(changes, &own);
            out.own = own_rows;
            let mut report = ImportReport {
                source_id: hub_id.to_string(),
                after: changes.after,
                through: changes.through,
                previous: at,
                skipped: false,
                change_seq: Some(seq),
                files: 0,
                versions: 0,
                metadata: 0,
                chunks: 0,
                tombstones: 0,
                conflicts: Vec::new(),
            };
            let guard = Unpushed { pushed_through };
            apply_rows(e, seq, &rows, "PostgreSQL", hub_id, Some(&guard), &mut report)?;
            (out.files, out.versions, out.metadata, out.chunks, out.tombstones) = (
                report.files,
                report.versions,
                report.metadata,
                report.chunks,
                report.tombstones,
            );
            e.execute("INSERT INTO nexus_pulled (change_seq) VALUES (?1)", &[int(seq)])?;
            let now = e.now().as_micros();
            e.execute(
                "INSERT INTO nexus_pull_state (hub_id, position, pulled_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (hub_id) DO UPDATE SET position = excluded.position, pulled_at = excluded.pulled_at",
                &[text(hub_id), int(changes.through), int(now)],
            )?;
            Ok(())
        })?;
        Ok(out)
    }
}

/// The first pull into an empty store: a snapshot of the whole database
/// loaded in one write transaction fed in chunks ([`BulkPull::load`]), with
/// plain inserts (nothing here to compare with), then committed together
/// with the feed position the snapshot covers ([`BulkPull::finish`]). Cut
/// at any point (dropped unfinished), it rolls back and the store stays
/// empty. Other writes wait for it; reads see the empty store until it
/// commits.
pub struct BulkPull<'a> {
    all: Option<Exclusive<'a>>,
    seq: i64,
    hub_id: String,
    rows: u64,
    /// The secondary indexes dropped for the load, rebuilt at the end.
    indexes: Vec<String>,
}

impl std::fmt::Debug for BulkPull<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkPull")
            .field("hub_id", &self.hub_id)
            .field("seq", &self.seq)
            .field("rows", &self.rows)
            .finish()
    }
}

impl Drop for BulkPull<'_> {
    fn drop(&mut self) {
        if let Some(mut all) = self.all.take() {
            let _ = all.writer.end_long_write(false);
            // The rollback brought the indexes back: no statement prepared
            // in between may survive.
            let _ = all.reconnect();
        }
    }
}

impl Store {
    /// Starts a bulk pull from the database `hub_id` when this store has
    /// never pulled from it and holds no rows at all (`None` otherwise: use
    /// [`Store::apply_pull`]). The load has the store to itself (reads wait
    /// too) and builds the secondary indexes once, at the end.
    pub async fn begin_bulk_pull(&self, hub_id: &str) -> Result<Option<BulkPull<'_>>> {
        let mut all = self.shared.pool.exclusive().await;
        let e = &mut all.writer;
        let seq = e.begin_long_write()?;
        let empty = (|| -> Result<bool> {
            if position(e, hub_id)? != 0 {
                return Ok(false);
            }
            for sql in [
                "SELECT 1 FROM file_paths LIMIT 1",
                "SELECT 1 FROM version_history LIMIT 1",
                "SELECT 1 FROM file_metadata LIMIT 1",
                "SELECT 1 FROM content_chunks LIMIT 1",
                "SELECT 1 FROM tombstones LIMIT 1",
            ] {
                if e.query_one(sql, &[], |_| Ok(()))?.is_some() {
                    return Ok(false);
                }
            }
            Ok(true)
        })();
        let dropped = match empty {
            Ok(true) => drop_indexes(e).map(Some),
            Ok(false) => Ok(None),
            Err(err) => Err(err),
        };
        match dropped {
            Ok(Some(indexes)) => Ok(Some(BulkPull {
                all: Some(all),
                seq,
                hub_id: hub_id.to_string(),
                rows: 0,
                indexes,
            })),
            Ok(None) => {
                e.end_long_write(false)?;
                Ok(None)
            }
            Err(err) => {
                let _ = e.end_long_write(false);
                let _ = all.reconnect();
                Err(err)
            }
        }
    }
}

/// Drops the secondary indexes of the loaded tables (in the open
/// transaction) and returns their definitions, read from the schema, so
/// that the migrations stay their only description.
fn drop_indexes(e: &mut Engine) -> Result<Vec<String>> {
    let found = e.query(
        "SELECT name, sql FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL \
         AND tbl_name IN ('file_paths', 'version_history', 'file_metadata', 'content_chunks', 'tombstones') \
         ORDER BY name",
        &[],
        |r| Ok((r.text(0)?, r.text(1)?)),
    )?;
    for (name, _) in &found {
        e.execute_script(&format!("DROP INDEX \"{name}\""))?;
    }
    e.clear_statements();
    Ok(found.into_iter().map(|(_, sql)| sql).collect())
}

impl BulkPull<'_> {
    /// Inserts a chunk of the snapshot's rows (any tables, any order of
    /// chunks: each key appears once in a snapshot).
    pub fn load(&mut self, c: &Changes) -> Result<()> {
        use crate::engine::{opt_int, opt_text};
        let seq = int(self.seq);
        let e = &mut self.all.as_mut().expect("open until finished").writer;
        FILES.run(
            e,
            c.files.iter().map(|r| {
                vec![
                    text(&r.path_id),
                    text(&r.tenant_id),
                    text(&r.virtual_path),
                    text(&r.backend_id),
                    text(&r.physical_path),
                    int(r.size_bytes),
                    opt_text(r.content_hash.as_deref()),
                    opt_text(r.file_type.as_deref()),
                    int(r.created_at),
                    int(r.updated_at),
                    opt_int(r.deleted_at),
                    int(r.current_version),
                    seq.clone(),
                ]
            }),
        )?;
        VERSIONS.run(
            e,
            c.versions.iter().map(|r| {
                vec![
                    text(&r.version_id),
                    text(&r.path_id),
                    int(r.version_number),
                    text(&r.backend_id),
                    text(&r.physical_path),
                    opt_text(r.content_hash.as_deref()),
                    int(r.size_bytes),
                    opt_text(r.mime_type.as_deref()),
                    opt_text(r.parent_version_id.as_deref()),
                    text(&r.source_type),
                    opt_text(r.change_reason.as_deref()),
                    opt_text(r.created_by.as_deref()),
                    int(r.created_at),
                    seq.clone(),
                ]
            }),
        )?;
        METADATA.run(
            e,
            c.metadata.iter().map(|r| {
                vec![
                    text(&r.path_id),
                    text(&r.key),
                    text(&r.value),
                    int(r.created_at),
                    int(r.updated_at),
                    seq.clone(),
                ]
            }),
        )?;
        CHUNKS.run(
            e,
            c.chunks.iter().map(|r| {
                vec![
                    text(&r.tenant_id),
                    text(&r.content_hash),
                    int(r.size_bytes),
                    text(&r.storage_path),
                    int(r.ref_count),
                    int(r.created_at),
                    opt_int(r.last_accessed_at),
                    opt_int(r.protected_until),
                    seq.clone(),
                ]
            }),
        )?;
        TOMBSTONES.run(
            e,
            c.tombstones.iter().map(|r| {
                vec![
                    text(&r.table_name),
                    text(&r.key1),
                    text(&r.key2),
                    int(r.deleted_at),
                    seq.clone(),
                ]
            }),
        )?;
        self.rows += c.len() as u64;
        Ok(())
    }

    /// Rows loaded so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Commits the load with this store's position in the database's feed:
    /// `through`, up to which the snapshot holds every transaction.
    pub fn finish(mut self, through: i64) -> Result<()> {
        let seq = self.seq;
        let mut all = self.all.take().expect("open until finished");
        let e = &mut all.writer;
        let done = (|| -> Result<()> {
            for sql in &self.indexes {
                e.execute_script(sql)?;
            }
            e.clear_statements();
            e.execute(
                "INSERT INTO nexus_pulled (change_seq) VALUES (?1)",
                &[int(seq)],
            )?;
            let now = e.now().as_micros();
            e.execute(
                "INSERT INTO nexus_pull_state (hub_id, position, pulled_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (hub_id) DO UPDATE SET position = excluded.position, pulled_at = excluded.pulled_at",
                &[text(&self.hub_id), int(through), int(now)],
            )?;
            Ok(())
        })();
        let ended = match done {
            Ok(()) => e.end_long_write(true),
            Err(err) => {
                let _ = e.end_long_write(false);
                Err(err)
            }
        };
        // The schema changed under every connection's statements.
        let fresh = all.reconnect();
        ended.and(fresh)
    }
}

/// Rows per statement of a bulk load: one statement, bound and stepped
/// once, inserts this many rows (the engine's cost is per statement more
/// than per row).
const ROWS_PER_INSERT: usize = 64;

/// A plain insert into one table, as one statement of [`ROWS_PER_INSERT`]
/// rows and one of a single row (for the rest).
struct Insert {
    head: &'static str,
    columns: usize,
    many: std::sync::OnceLock<&'static str>,
    one: std::sync::OnceLock<&'static str>,
}

impl Insert {
    const fn new(head: &'static str, columns: usize) -> Insert {
        Insert {
            head,
            columns,
            many: std::sync::OnceLock::new(),
            one: std::sync::OnceLock::new(),
        }
    }

    /// The statement for `rows` rows (built once; the engine caches
    /// statements by their `'static` text).
    fn sql(&self, rows: usize) -> &'static str {
        let cell = if rows == 1 { &self.one } else { &self.many };
        cell.get_or_init(|| {
            let tuple = format!("({})", vec!["?"; self.columns].join(", "));
            let sql = format!("{}{}", self.head, vec![tuple; rows].join(", "));
            Box::leak(sql.into_boxed_str())
        })
    }

    fn run(
        &self,
        e: &mut Engine,
        rows: impl Iterator<Item = Vec<crate::engine::Param>>,
    ) -> Result<()> {
        let mut params = Vec::with_capacity(self.columns * ROWS_PER_INSERT);
        let mut n = 0;
        for row in rows {
            params.extend(row);
            n += 1;
            if n == ROWS_PER_INSERT {
                e.execute(self.sql(ROWS_PER_INSERT), &params)?;
                params.clear();
                n = 0;
            }
        }
        for row in params.chunks(self.columns) {
            e.execute(self.sql(1), row)?;
        }
        Ok(())
    }
}

static FILES: Insert = Insert::new(
    "INSERT INTO file_paths (path_id, tenant_id, virtual_path, backend_id, physical_path, size_bytes, \
     content_hash, file_type, created_at, updated_at, deleted_at, current_version, change_seq) VALUES ",
    13,
);
static VERSIONS: Insert = Insert::new(
    "INSERT INTO version_history (version_id, path_id, version_number, backend_id, physical_path, \
     content_hash, size_bytes, mime_type, parent_version_id, source_type, change_reason, created_by, \
     created_at, change_seq) VALUES ",
    14,
);
static METADATA: Insert = Insert::new(
    "INSERT INTO file_metadata (path_id, key, value, created_at, updated_at, change_seq) VALUES ",
    6,
);
static CHUNKS: Insert = Insert::new(
    "INSERT INTO content_chunks (tenant_id, content_hash, size_bytes, storage_path, ref_count, created_at, \
     last_accessed_at, protected_until, change_seq) VALUES ",
    9,
);
static TOMBSTONES: Insert = Insert::new(
    "INSERT INTO tombstones (table_name, key1, key2, deleted_at, change_seq) VALUES ",
    5,
);
