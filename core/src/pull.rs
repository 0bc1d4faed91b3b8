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
//! recognised and not applied again. A page with no rows to apply (one
//! that passed over this store's own pushes) moves the position alone:
//! no change sequence number is taken for it.

use std::borrow::Cow;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::change_file::{ImportReport, Unpushed, apply_rows, row_params};
use crate::engine::{Engine, int, text};
use crate::error::{Error, Result};
use crate::pool::Exclusive;
use crate::store::Store;
use crate::tables::{TableRow, sqlite};
use crate::{CHANGE_TABLES, Changes, FileRow, Origin, VersionRow};

/// One page of a database's change feed (`nexus_pg::read_page`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedPage {
    /// The rows of every transaction with an id in `(changes.after,
    /// changes.through]`, each row in its latest state, in `change_seq`
    /// order per table. `changes.through` is the position to ask from next.
    pub changes: Changes,
    /// Whether the page reaches the newest position that was safe to read,
    /// or (a page for one tenant) the last of the tenant's changes before
    /// it (`false`: more pages are ready now).
    pub caught_up: bool,
    /// The current rows of files that the page's versions and metadata
    /// refer to but whose own row is not in the page (it was written again
    /// by a later transaction, so it is in a later page): a reader that
    /// applies the page where those files are new needs them first.
    /// Applying a later state again changes nothing.
    pub referenced_files: Vec<FileRow>,
    /// The same for versions: the current rows of the parents of the
    /// page's versions that a later transaction wrote again (a second
    /// source pushed them), and of their parents as far as those were
    /// written later too. Applied before the page's versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub referenced_versions: Vec<VersionRow>,
    /// Set when the page ends inside the transaction `changes.through`
    /// (one with more rows than a page): the last row of it the page holds,
    /// by table and snapshot order. Its rows after that row are still to
    /// come: ask again from `changes.through` with this cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<SnapshotCursor>,
    /// How many of the reader's own transactions the page passed over
    /// without reading them (a sync server's pull leaves out a source's
    /// transactions every row of which that source wrote: rows a reader
    /// leaves out anyway). Not 0: the page moves the position past changes
    /// of the reader's, which records the position (a write of the position
    /// alone, [`Store::apply_pull_within`]), where an idle page's is not.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub left_out: u64,
}

/// Serde's test for a count left out when 0.
pub(crate) fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What a pull did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PullReport {
    /// The database's id (its `nexus_state.store_id`).
    pub hub_id: String,
    /// The store's feed position before the pull.
    pub from: i64,
    /// And after it.
    pub to: i64,
    /// Pages applied.
    pub pages: u64,
    /// `file_paths` rows applied (a row a page brings again because its
    /// rows refer to it, [`FeedPage::referenced_files`], counts where it
    /// changed, not again).
    pub files: u64,
    /// `version_history` rows applied (the same for
    /// [`FeedPage::referenced_versions`]).
    pub versions: u64,
    /// `file_metadata` rows applied.
    pub metadata: u64,
    /// `content_chunks` rows applied.
    pub chunks: u64,
    /// Removals applied.
    pub tombstones: u64,
    /// Rows of the store's own changes, recognised and skipped.
    pub own: u64,
    /// Whether the store was empty and got a snapshot of the whole
    /// database (the first pull), loaded chunk by chunk.
    pub bulk: bool,
    /// Whether that load resumed one that was cut (its rows then count
    /// only what this pull loaded).
    #[serde(default)]
    pub resumed: bool,
    /// The database whose cut first pull this one discarded: a load from
    /// another database than this pull's, which could not be finished any
    /// more (its server now serves this one, or the store was pointed
    /// elsewhere). Nothing of the store's own was in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discarded: Option<String>,
    /// Seconds the pull took (the last attempt).
    pub seconds: f64,
    /// Attempts made (more than one after retryable failures).
    pub attempts: u32,
}

rows_of_tables!(PullReport);

/// Where a pull reads pages of a database's change feed: the database
/// itself, or a sync server in front of it.
// Used with static dispatch only: the caller's future is `Send` when the
// implementation's is.
#[allow(async_fn_in_trait)]
pub trait Feed {
    /// The feed's errors; the store's convert into them.
    type Error: From<Error>;
    /// The page after `after` (about `max_rows` rows), and the database's
    /// watermark of this store there (its rows up to it are its own). With
    /// `within`, `after` is a transaction read in part
    /// ([`FeedPage::within`]): the page goes on after that row of it.
    async fn page(
        &mut self,
        after: i64,
        within: Option<&SnapshotCursor>,
        max_rows: usize,
    ) -> std::result::Result<(FeedPage, i64), Self::Error>;
}

impl Store {
    /// Applies `feed`'s pages after `report.to` until it is caught up, each
    /// page in one write transaction with its position
    /// ([`Store::apply_pull_after`]), counting into `report`; `progress`
    /// gets the rows applied so far after each page.
    pub async fn apply_feed<F: Feed>(
        &self,
        feed: &mut F,
        report: &mut PullReport,
        max_rows: usize,
        mut progress: impl FnMut(u64),
    ) -> std::result::Result<(), F::Error> {
        // The position recorded in the store (pages with no rows are not).
        let mut stored = report.to;
        let mut within = self.pull_within(&report.hub_id).await?;
        let own = {
            let mut e = self.reader().await;
            e.read(crate::change_file::own_id)?
        };
        loop {
            let (page, pushed_through) = feed.page(report.to, within.as_ref(), max_rows).await?;
            if page.changes.is_empty()
                && page.within.is_none()
                && within.is_none()
                && page.left_out == 0
            {
                // Nothing to apply: the position moves in this run only (the
                // next pull reads the same empty range again), so an idle sync
                // writes nothing here.
                report.to = page.changes.through;
            } else if page.changes.through > page.changes.after || within.is_some() {
                // Files the page's rows refer to come first (see
                // `FeedPage::referenced_files`). They are applied again,
                // and counted where they changed: left out of the counts
                // here (those of other stores, and this store's own).
                let mine = |o: &Option<Origin>| written_by(o, &own);
                let own_files = page.referenced_files.iter().filter(|r| mine(&r.origin));
                let own_versions = page.referenced_versions.iter().filter(|r| mine(&r.origin));
                let (own_files, own_versions) = (own_files.count(), own_versions.count());
                let ref_files = (page.referenced_files.len() - own_files) as u64;
                let ref_versions = (page.referenced_versions.len() - own_versions) as u64;
                let ref_own = (own_files + own_versions) as u64;
                let mut changes = page.changes;
                let mut files = page.referenced_files;
                files.append(&mut changes.files);
                changes.files = files;
                let mut versions = page.referenced_versions;
                versions.append(&mut changes.versions);
                changes.versions = versions;
                let from = FeedPoint {
                    position: stored,
                    within: within.as_ref(),
                };
                let applied = self
                    .apply_pull_within(
                        &report.hub_id,
                        pushed_through,
                        from,
                        &changes,
                        page.within.as_ref(),
                    )
                    .await?;
                within = page.within;
                stored = applied.through;
                report.pages += 1;
                report.files += applied.files.saturating_sub(ref_files);
                report.versions += applied.versions.saturating_sub(ref_versions);
                report.metadata += applied.metadata;
                report.chunks += applied.chunks;
                report.tombstones += applied.tombstones;
                report.own += applied.own.saturating_sub(ref_own);
                report.to = applied.through;
                progress(report.rows());
            }
            if page.caught_up {
                return Ok(());
            }
        }
    }
}

/// A database's snapshot in pages, for a first pull (a sync server's
/// `/v1/snapshot`; `nexus_pg::read_snapshot_page`).
// Static dispatch only, as `Feed`.
#[allow(async_fn_in_trait)]
pub trait SnapshotSource {
    /// The source's errors; the store's convert into them.
    type Error: From<Error>;
    /// The rows after `after` (from the start without one), at most about
    /// `max_rows`, with the position their snapshot covers as
    /// `changes.through`; and where the next page starts after (`None`:
    /// the snapshot is complete).
    async fn page(
        &mut self,
        after: Option<&SnapshotCursor>,
        max_rows: usize,
    ) -> std::result::Result<(Changes, Option<SnapshotCursor>), Self::Error>;
}

impl Store {
    /// The first pull's snapshot step: when this store holds no rows (or a
    /// cut first pull from `report.hub_id`), loads `source`'s pages into it
    /// ([`Store::begin_bulk_pull`], each page committed), counting into
    /// `report` and moving `report.to` to where the feed goes on; does
    /// nothing otherwise. `progress` gets the rows loaded so far after each
    /// page.
    pub async fn load_snapshot<S: SnapshotSource>(
        &self,
        source: &mut S,
        report: &mut PullReport,
        max_rows: usize,
        mut progress: impl FnMut(u64),
    ) -> std::result::Result<(), S::Error> {
        let Some(mut bulk) = self.begin_bulk_pull(&report.hub_id).await? else {
            // Durable what it may have written (a discarded load).
            self.durable().await?;
            return Ok(());
        };
        let loaded = async {
            let after = bulk.resume_after().cloned();
            let mut page = source.page(after.as_ref(), max_rows).await?;
            let through = loop {
                let (changes, next) = page;
                let Some(next) = next else {
                    bulk.load(&changes)?;
                    progress(bulk.rows());
                    break changes.through;
                };
                // The next page is asked for before this one is loaded, so the
                // source reads it (a server: its query and its answer) while
                // the store writes: `join` polls the request first, which sends
                // it, then runs the load.
                let (fetched, loaded) =
                    futures_util::future::join(source.page(Some(&next), max_rows), async {
                        bulk.load(&changes)
                    })
                    .await;
                loaded?;
                progress(bulk.rows());
                page = fetched?;
            };
            bulk.finish(through, report)?;
            Ok::<(), S::Error>(())
        }
        .await;
        // The pages loaded are committed also when the load stopped
        // part-way: made durable (and told to subscribers) either way.
        let durable = self.durable().await;
        loaded?;
        durable?;
        Ok(())
    }
}

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

rows_of_tables!(PullApplied);

/// How far the store has applied the feed of `hub_id` (0: never pulled).
pub(crate) fn position(e: &mut Engine, hub_id: &str) -> Result<i64> {
    Ok(pull_state(e, hub_id)?.0)
}

/// `hub_id`'s row of `nexus_pull_state`: its position (0: never pulled)
/// and its `within`, as stored.
fn pull_state(e: &mut Engine, hub_id: &str) -> Result<(i64, Option<String>)> {
    Ok(e.query_one(
        "SELECT position, within FROM nexus_pull_state WHERE hub_id = ?1",
        &[text(hub_id)],
        |r| Ok((r.int(0)?, r.opt_text(1)?)),
    )?
    .unwrap_or((0, None)))
}

/// The point of `hub_id`'s feed this store recorded last: the transaction
/// applied through (0: never pulled) and, when a page ended inside it
/// ([`FeedPage::within`]), how far into it.
fn stored_point(e: &mut Engine, hub_id: &str) -> Result<(i64, Option<SnapshotCursor>)> {
    let (position, json) = pull_state(e, hub_id)?;
    let within = json
        .map(|j| {
            serde_json::from_str(&j).map_err(|err| Error::Corrupt {
                table: "nexus_pull_state",
                detail: format!("within of {hub_id}: {err}"),
            })
        })
        .transpose()?;
    Ok((position, within))
}

/// Records that this store has applied `hub_id`'s feed through `position`
/// (and, with `within`, only so far into that transaction).
pub(crate) fn record_position(
    e: &mut Engine,
    hub_id: &str,
    position: i64,
    within: Option<&SnapshotCursor>,
) -> Result<()> {
    let now = e.now().as_micros();
    let within = within.map(SnapshotCursor::to_json);
    e.execute(
        "INSERT INTO nexus_pull_state (hub_id, position, pulled_at, within) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (hub_id) DO UPDATE SET position = excluded.position, \
         pulled_at = excluded.pulled_at, within = excluded.within",
        &[
            text(hub_id),
            int(position),
            int(now),
            crate::engine::opt_text(within.as_deref()),
        ],
    )?;
    Ok(())
}

/// A point of a database's feed: through transaction `position`, or (with
/// `within`) part of it (see [`FeedPage::within`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedPoint<'a> {
    /// The transaction id read through.
    pub position: i64,
    /// How far into that transaction, when not all of it.
    pub within: Option<&'a SnapshotCursor>,
}

/// Whether a row's `origin` says the store `id` wrote it (a row of its own
/// that came back).
fn written_by(origin: &Option<Origin>, id: &str) -> bool {
    origin.as_ref().is_some_and(|o| o.source_id == id)
}

/// `changes` without the rows whose origin is `own` (borrowed when it has
/// none: a page of other stores' changes is not copied); returns how many
/// went.
fn without_own<'a>(changes: &'a Changes, own: &str) -> (Cow<'a, Changes>, u64) {
    let mine = |o: &Option<Origin>| written_by(o, own);
    let mut c = Cow::Borrowed(changes);
    // The page is copied (once) only when a table of it holds own rows.
    macro_rules! drop_own {
        ($($table:ident),*) => {$(
            if changes.$table.iter().any(|r| mine(&r.origin)) {
                c.to_mut().$table.retain(|r| !mine(&r.origin));
            }
        )*};
    }
    drop_own!(files, versions, metadata, chunks, tombstones);
    let own_rows = (changes.len() - c.len()) as u64;
    (c, own_rows)
}

impl Store {
    /// How far this store has applied the change feed of the database
    /// `hub_id` (0: never pulled from it).
    pub async fn pull_position(&self, hub_id: &str) -> Result<i64> {
        let mut e = self.reader().await;
        e.read(|e| position(e, hub_id))
    }

    /// How far into the transaction at [`Store::pull_position`] this store
    /// got, when a page ended inside it ([`FeedPage::within`]).
    pub async fn pull_within(&self, hub_id: &str) -> Result<Option<SnapshotCursor>> {
        let mut e = self.reader().await;
        e.read(|e| Ok(stored_point(e, hub_id)?.1))
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
        self.apply_pull_after(hub_id, pushed_through, changes.after, changes)
            .await
    }

    /// [`Store::apply_pull`] for a page read after pages with no rows:
    /// `(stored, changes.after]` held nothing, where `stored` is the
    /// position this store recorded last (empty pages are not recorded, so
    /// an idle pull writes nothing).
    pub async fn apply_pull_after(
        &self,
        hub_id: &str,
        pushed_through: i64,
        stored: i64,
        changes: &Changes,
    ) -> Result<PullApplied> {
        let from = FeedPoint {
            position: stored,
            within: None,
        };
        self.apply_pull_within(hub_id, pushed_through, from, changes, None)
            .await
    }

    /// [`Store::apply_pull_after`] for pages that may begin or end inside a
    /// transaction ([`FeedPage::within`]): `from` is the point this store
    /// recorded last and the page was read from; `within`, how far into
    /// `changes.through` the page goes (`None`: all of it).
    pub async fn apply_pull_within(
        &self,
        hub_id: &str,
        pushed_through: i64,
        from: FeedPoint<'_>,
        changes: &Changes,
        within: Option<&SnapshotCursor>,
    ) -> Result<PullApplied> {
        let stored = from.position;
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
        // Whether the store is where the page starts: `Ok(false)` when it
        // has applied the page already, an error when it is elsewhere.
        let starts_here = |e: &mut Engine| -> Result<bool> {
            let (at, at_within) = stored_point(e, hub_id)?;
            if at > changes.through
                || (at == changes.through
                    && changes.through > changes.after
                    && at_within.as_ref() == within)
            {
                return Ok(false);
            }
            if at != stored || at_within.as_ref() != from.within || stored > changes.after {
                return Err(Error::ChangeFileGap {
                    source_id: hub_id.to_string(),
                    applied: at,
                    after: changes.after,
                    through: changes.through,
                });
            }
            Ok(true)
        };
        if changes.is_empty() {
            // Only the position moves (a page that passed over this
            // store's own pushes, or the end of a transaction read in
            // part): no stamp, nothing applied.
            self.writer().await.write_unstamped(|e| {
                if starts_here(e)? {
                    record_position(e, hub_id, changes.through, within)?;
                } else {
                    out.skipped = true;
                }
                Ok(())
            })?;
            self.durable().await?;
            return Ok(out);
        }
        let watchers = self.shared.pool.watchers.clone();
        self.writer().await.write(|e, seq| {
            if !starts_here(e)? {
                out.skipped = true;
                return Ok(());
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
                previous: stored,
                skipped: false,
                change_seq: Some(seq),
                files: 0,
                versions: 0,
                metadata: 0,
                chunks: 0,
                tombstones: 0,
                conflicts: Vec::new(),
            };
            // First: a row this transaction writes is PostgreSQL's, not a
            // local change, also to the checks of `apply_rows` (a file that
            // went live in this page holds its path for PostgreSQL).
            e.execute(
                "INSERT INTO nexus_pulled (change_seq) VALUES (?1)",
                &[int(seq)],
            )?;
            let guard = Unpushed { pushed_through };
            watchers.note_incoming(e, &rows.files)?;
            apply_rows(e, seq, &rows, hub_id, Some(&guard), &mut report)?;
            (
                out.files,
                out.versions,
                out.metadata,
                out.chunks,
                out.tombstones,
            ) = (
                report.files,
                report.versions,
                report.metadata,
                report.chunks,
                report.tombstones,
            );
            record_position(e, hub_id, changes.through, within)?;
            Ok(())
        })?;
        self.durable().await?;
        Ok(out)
    }
}

/// Where a first pull's load got to: the last row loaded, by its table and
/// its values of the table's [`crate::tables::Table::snapshot_order`]
/// columns. A snapshot read resumes after it (`nexus_pg::read_snapshot`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotCursor {
    /// The table.
    pub table: String,
    /// The row's values of the table's snapshot order columns, as text.
    pub key: Vec<String>,
}

impl SnapshotCursor {
    /// The cursor of the last row of `c`'s last non-empty table (in
    /// dependency order), or `None` when `c` is empty.
    pub fn last_of(c: &Changes) -> Option<SnapshotCursor> {
        fn at<T: TableRow>(rows: &[T]) -> Option<SnapshotCursor> {
            rows.last().map(|r| SnapshotCursor {
                table: T::TABLE.name.to_string(),
                key: crate::tables::snapshot_key(r),
            })
        }
        at(&c.tombstones)
            .or_else(|| at(&c.chunks))
            .or_else(|| at(&c.metadata))
            .or_else(|| at(&c.versions))
            .or_else(|| at(&c.files))
    }

    /// The cursor as JSON: how it is stored (`nexus_pull_state.within`)
    /// and sent (`/v1/pull?within=`, `/v1/snapshot?after=`).
    pub fn to_json(&self) -> String {
        to_json(self)
    }
}

/// The first pull into an empty store: a snapshot of the whole database,
/// loaded chunk by chunk ([`BulkPull::load`]) with plain inserts (nothing
/// here to compare with) and the secondary indexes dropped, then finished
/// with the feed position the snapshot covers ([`BulkPull::finish`]), which
/// rebuilds the indexes.
///
/// Each chunk commits together with the point it reached
/// (`nexus_bulk_pull`), so memory holds one chunk, not the store, and a
/// pull cut at any point (dropped unfinished, the process killed) loses at
/// most the chunk in flight: the next [`Store::begin_bulk_pull`] from the
/// same database resumes after the last row committed
/// ([`BulkPull::resume_after`]), from a new snapshot. Its position is the
/// first snapshot's, so the feed brings every change made since (rows the
/// later snapshot already holds are applied again, which changes nothing).
/// Until the load finishes the store holds part of the database, and every
/// other write fails with [`Error::PullUnfinished`]. The load has every
/// connection of the store: other calls wait until it ends.
pub struct BulkPull<'a> {
    all: Option<Exclusive<'a>>,
    seq: i64,
    hub_id: String,
    /// The secondary indexes dropped for the load, rebuilt at the end.
    indexes: Vec<String>,
    /// The feed position of the first snapshot read (`None` until a chunk
    /// came).
    position: Option<i64>,
    /// Where the committed load got to.
    cursor: Option<SnapshotCursor>,
    resumed: bool,
    /// The database whose cut load this one discarded to start.
    discarded: Option<String>,
    /// Rows loaded by this run, per table, in [`crate::tables::TABLES`] order.
    counts: [u64; 5],
}

impl std::fmt::Debug for BulkPull<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkPull")
            .field("hub_id", &self.hub_id)
            .field("seq", &self.seq)
            .field("counts", &self.counts)
            .field("cursor", &self.cursor)
            .finish()
    }
}

impl Drop for BulkPull<'_> {
    fn drop(&mut self) {
        if let Some(mut all) = self.all.take() {
            let _ = all.writer.end_long_write(false);
            // A rollback before the first commit brought the indexes back:
            // no statement prepared in between may survive.
            let _ = all.reconnect();
        }
    }
}

/// The state of an unfinished first pull, as `nexus_bulk_pull` keeps it.
struct Unfinished {
    hub_id: String,
    position: i64,
    seq: i64,
    cursor: SnapshotCursor,
    indexes: Vec<String>,
}

fn unfinished(e: &mut Engine) -> Result<Option<Unfinished>> {
    let corrupt = |detail: String| Error::Corrupt {
        table: "nexus_bulk_pull",
        detail,
    };
    let row = e.query_one(
        "SELECT hub_id, position, change_seq, resume, indexes FROM nexus_bulk_pull LIMIT 1",
        &[],
        |r| Ok((r.text(0)?, r.int(1)?, r.int(2)?, r.text(3)?, r.text(4)?)),
    )?;
    let Some((hub_id, position, seq, resume, indexes)) = row else {
        return Ok(None);
    };
    Ok(Some(Unfinished {
        hub_id,
        position,
        seq,
        cursor: serde_json::from_str(&resume).map_err(|e| corrupt(format!("resume: {e}")))?,
        indexes: serde_json::from_str(&indexes).map_err(|e| corrupt(format!("indexes: {e}")))?,
    }))
}

impl Store {
    /// Starts a bulk pull from the database `hub_id`: a new one when this
    /// store has never pulled from it and holds no rows at all, or the
    /// rest of one that was cut ([`BulkPull::resume_after`] says where it
    /// got to). `None` when neither: use [`Store::apply_pull`].
    ///
    /// A cut first pull from another database is discarded first (see
    /// [`discard_load`]): it began on an empty store, which refused every
    /// other write since, so all it holds came from that database and can
    /// be pulled again; but the store could only ever finish it from there,
    /// and its server may now serve this database instead.
    pub async fn begin_bulk_pull(&self, hub_id: &str) -> Result<Option<BulkPull<'_>>> {
        // The common case, a store that has pulled from `hub_id` and has no
        // load to finish or discard, told by a read: no connection of the
        // store is taken from the others.
        let settled = self
            .reader()
            .await
            .read(|e| Ok(position(e, hub_id)? != 0 && e.unfinished_pull()?.is_none()))?;
        if settled {
            return Ok(None);
        }
        let mut all = self.shared.pool.exclusive().await;
        let e = &mut all.writer;
        e.begin_long_write()?;
        let mut discarded = None;
        // A load to resume, or a new one: its stamp, the dropped indexes,
        // and (resumed) its position and where it got to.
        type Start = (i64, Vec<String>, Option<(i64, SnapshotCursor)>);
        let started = (|| -> Result<Option<Start>> {
            if let Some(u) = unfinished(e)? {
                if u.hub_id == hub_id && u.position != DISCARDING {
                    return Ok(Some((u.seq, u.indexes, Some((u.position, u.cursor)))));
                }
                discard_load(e, &u, &self.shared.pool.watchers)?;
                discarded = Some(u.hub_id);
            }
            if position(e, hub_id)? != 0 {
                return Ok(None);
            }
            // Built once: the engine caches statements by their 'static text.
            static ANY_ROW: OnceLock<Vec<String>> = OnceLock::new();
            let any_row = ANY_ROW.get_or_init(|| {
                CHANGE_TABLES
                    .iter()
                    .map(|t| format!("SELECT 1 FROM {t} LIMIT 1"))
                    .collect()
            });
            for sql in any_row {
                if e.query_one(sql, &[], |_| Ok(()))?.is_some() {
                    return Ok(None);
                }
            }
            let seq = e.next_seq()?;
            e.execute(
                "INSERT INTO nexus_pulled (change_seq) VALUES (?1)",
                &[int(seq)],
            )?;
            let indexes = drop_indexes(e)?;
            Ok(Some((seq, indexes, None)))
        })();
        match started {
            Ok(Some((seq, indexes, resume))) => {
                // Rows come in the snapshot's key order: a conflict copy's
                // version can come before its parent in the file it was
                // copied from (in a later chunk). PostgreSQL checked the
                // snapshot whole; every way out of the load (finish, drop,
                // an error) reconnects, which checks them again.
                e.skip_foreign_keys();
                Ok(Some(BulkPull {
                    all: Some(all),
                    seq,
                    hub_id: hub_id.to_string(),
                    indexes,
                    resumed: resume.is_some(),
                    discarded,
                    position: resume.as_ref().map(|(p, _)| *p),
                    cursor: resume.map(|(_, c)| c),
                    counts: [0; 5],
                }))
            }
            Ok(None) => {
                // Nothing was written: committed, not rolled back. In turso
                // 0.8.3 a rollback makes every statement the connection has
                // prepared re-prepare on its next run (a quarter of a small
                // client's time went to that, when every pull ended here
                // with one).
                e.end_long_write(true)?;
                if discarded.is_some() {
                    // The discard built the indexes again.
                    all.reconnect()?;
                }
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

/// The position of a cut first pull whose discard has begun
/// ([`discard_load`]): never a feed position, so that no pull resumes it.
const DISCARDING: i64 = -1;

/// Discards the cut first pull `u` (in the open long write, which it
/// leaves open): marks it as being discarded ([`DISCARDING`]) and empties
/// the tables it loaded, each in a transaction of its own (a load can be
/// large), without the foreign keys' checks and actions (the load was
/// inserted without them, and all of it goes); builds the indexes it
/// dropped ([`build_indexes`]); then, in one last transaction, forgets it
/// and takes a stamp of its own, whose event tells subscribers that
/// everything may have changed. Cut anywhere, it is still the unfinished load, now marked:
/// the next bulk pull, from any database (also the one it came from),
/// discards it again. The store is then as before the load began: empty,
/// with every index.
fn discard_load(e: &mut Engine, u: &Unfinished, watchers: &crate::watch::Watchers) -> Result<()> {
    e.skip_foreign_keys();
    e.execute(
        "UPDATE nexus_bulk_pull SET position = ?1 WHERE hub_id = ?2",
        &[int(DISCARDING), text(&u.hub_id)],
    )?;
    for table in CHANGE_TABLES.iter().rev() {
        e.execute_script(&format!("DELETE FROM {table}"))?;
        e.end_long_write(true)?;
        e.begin_long_write()?;
    }
    build_indexes(e, &u.indexes)?;
    e.execute(
        "DELETE FROM nexus_pulled WHERE change_seq = ?1",
        &[int(u.seq)],
    )?;
    e.execute(
        "DELETE FROM nexus_bulk_pull WHERE hub_id = ?1",
        &[text(&u.hub_id)],
    )?;
    e.next_seq()?;
    watchers.changed_everything();
    e.end_long_write(true)?;
    e.begin_long_write()
}

/// Builds the indexes of `sqls` (a load's dropped definitions) that the
/// schema lacks, in the open long write, which it leaves open. Each in a
/// transaction of its own: the engine holds a transaction's pages in
/// memory until it commits, so one transaction for all of them held every
/// index at once. One already there (a finish or a discard cut after
/// building it) is not built again.
fn build_indexes(e: &mut Engine, sqls: &[String]) -> Result<()> {
    for sql in sqls {
        let built = e
            .query_one(
                "SELECT 1 FROM sqlite_schema WHERE type = 'index' AND sql = ?1",
                &[text(sql)],
                |_| Ok(()),
            )?
            .is_some();
        if !built {
            e.execute_script(sql)?;
            e.clear_statements();
            e.end_long_write(true)?;
            e.begin_long_write()?;
        }
    }
    Ok(())
}

/// Drops the secondary indexes of the loaded tables (in the open
/// transaction) and returns their definitions, read from the schema, so
/// that the migrations stay their only description.
fn drop_indexes(e: &mut Engine) -> Result<Vec<String>> {
    let mut found = e.query(
        "SELECT name, sql, tbl_name FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL \
         ORDER BY name",
        &[],
        |r| Ok((r.text(0)?, r.text(1)?, r.text(2)?)),
    )?;
    found.retain(|(_, _, table)| CHANGE_TABLES.contains(&table.as_str()));
    for (name, _, _) in &found {
        e.execute_script(&format!("DROP INDEX \"{name}\""))?;
    }
    e.clear_statements();
    Ok(found.into_iter().map(|(_, sql, _)| sql).collect())
}

impl BulkPull<'_> {
    /// Where an earlier, cut load from this database got to (`None` for a
    /// new load): read the snapshot from the row after it.
    pub fn resume_after(&self) -> Option<&SnapshotCursor> {
        self.cursor.as_ref()
    }

    /// Whether this load resumes one that was cut.
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// Inserts a chunk of the snapshot's rows and commits it with the point
    /// it reached. Chunks come in the snapshot's order (tables in
    /// dependency order, each in its snapshot order; a chunk's last row of
    /// its last table is where a cut load resumes after), each with the
    /// snapshot's position as its `through`.
    pub fn load(&mut self, c: &Changes) -> Result<()> {
        let Some(cursor) = SnapshotCursor::last_of(c) else {
            return Ok(());
        };
        let seq = self.seq;
        let position = self.position.map_or(c.through, |p| p.min(c.through));
        let e = &mut self.all.as_mut().expect("open until finished").writer;
        let done = (|| -> Result<()> {
            insert_all(e, seq, &c.files)?;
            insert_all(e, seq, &c.versions)?;
            insert_all(e, seq, &c.metadata)?;
            insert_all(e, seq, &c.chunks)?;
            insert_all(e, seq, &c.tombstones)?;
            e.execute(
                "INSERT INTO nexus_bulk_pull (hub_id, position, change_seq, resume, indexes) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (hub_id) DO UPDATE SET \
                 position = excluded.position, resume = excluded.resume",
                &[
                    text(&self.hub_id),
                    int(position),
                    int(seq),
                    text(&to_json(&cursor)),
                    text(&to_json(&self.indexes)),
                ],
            )?;
            e.end_long_write(true)?;
            e.begin_long_write()
        })();
        done?;
        for (n, rows) in self.counts.iter_mut().zip([
            c.files.len(),
            c.versions.len(),
            c.metadata.len(),
            c.chunks.len(),
            c.tombstones.len(),
        ]) {
            *n += rows as u64;
        }
        self.position = Some(position);
        self.cursor = Some(cursor);
        Ok(())
    }

    /// Rows loaded so far (by this run).
    pub fn rows(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Finishes the load: rebuilds the indexes and records this store's
    /// position in the database's feed, the smaller of `through` (up to
    /// which the last snapshot holds every transaction) and the first
    /// snapshot's. Counts the load into `report` (one page, `bulk`,
    /// `resumed`, the rows per table) and moves `report.to` to that
    /// position.
    pub fn finish(mut self, through: i64, report: &mut PullReport) -> Result<()> {
        let position = self.position.map_or(through, |p| p.min(through));
        let mut all = self.all.take().expect("open until finished");
        let e = &mut all.writer;
        let done = (|| -> Result<()> {
            build_indexes(e, &self.indexes)?;
            e.execute(
                "DELETE FROM nexus_bulk_pull WHERE hub_id = ?1",
                &[text(&self.hub_id)],
            )?;
            record_position(e, &self.hub_id, position, None)?;
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
        ended.and(fresh)?;
        let [files, versions, metadata, chunks, tombstones] = self.counts;
        report.files += files;
        report.versions += versions;
        report.metadata += metadata;
        report.chunks += chunks;
        report.tombstones += tombstones;
        report.pages += 1;
        report.bulk = true;
        report.resumed = self.resumed;
        report.discarded = self.discarded.take();
        report.to = position;
        Ok(())
    }
}

fn to_json(v: &impl Serialize) -> String {
    serde_json::to_string(v).expect("plain data serializes")
}

/// Rows per statement of a bulk load: one statement, bound and stepped
/// once, inserts this many rows (the engine's cost is per statement more
/// than per row).
const ROWS_PER_INSERT: usize = 64;

/// Plain inserts of `rows`, [`ROWS_PER_INSERT`] per statement (the rest one
/// by one), stamped `seq`.
fn insert_all<T: TableRow>(e: &mut Engine, seq: i64, rows: &[T]) -> Result<()> {
    let mut chunks = rows.chunks_exact(ROWS_PER_INSERT);
    for chunk in &mut chunks {
        let params: Vec<_> = chunk.iter().flat_map(|r| row_params(r, seq)).collect();
        e.execute(sqlite::insert(T::TABLE, ROWS_PER_INSERT), &params)?;
    }
    for r in chunks.remainder() {
        e.execute(sqlite::insert(T::TABLE, 1), &row_params(r, seq))?;
    }
    Ok(())
}
