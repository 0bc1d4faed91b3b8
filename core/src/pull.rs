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
            };
            let guard = Unpushed { pushed_through };
            apply_rows(e, seq, &rows, "PostgreSQL", Some(&guard), &mut report)?;
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
