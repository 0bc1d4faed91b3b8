//! The replicator: one source snapshot, one PostgreSQL transaction per run.
//!
//! A run reads the target's watermark for this source (the change sequence
//! number up to which it has applied the store), takes a snapshot of the
//! store at change `H`, streams every row with `change_seq` in
//! `(watermark, H]` in bounded windows, and commits the rows together with
//! the new watermark `H`. The target therefore moves from one consistent
//! state of the store to the next: a run that fails at any point (a cut
//! connection, a killed process) commits nothing, and the next run starts
//! from the last committed watermark. Upserts by primary key make re-applied
//! rows harmless.
//!
//! Into an empty target the rows go by binary `COPY` with the secondary
//! indexes and foreign keys dropped first and rebuilt after the load. Later
//! runs upsert with `unnest` arrays. Foreign keys are deferred to commit
//! (rows carry their latest state, so a version can arrive before its file),
//! and files that are live move in two steps (first marked with a sentinel
//! `deleted_at = -infinity`, then made live at the end), so that paths can
//! change hands within a run without tripping the unique index on live paths
//! (a change file's apply, one batch, lands them live at once when nothing
//! else moves and no path is taken: [`pg_tables::Landing`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::pin_mut;
use nexus_core::{
    CHANGE_TABLES, CONFLICT_KEY, Changes, ConflictCopy, ConflictInfo, ConflictReason, Seen, Store,
};
use nexus_postgres::codec::micros;
use serde::{Deserialize, Deserializer, Serialize};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Transaction};
use uuid::Uuid;

use crate::convert::{self, Batch};
use crate::error::{Error, Result};
use crate::pg_tables::{self, Landing};
use nexus_core::tables::{FILE_PATHS, TableRow, VERSION_HISTORY};
use nexus_postgres::{Cached, PgUrl, StatementCache, migrate};
use tokio_postgres::error::SqlState;

/// A run's transaction with its connection's prepared statements
/// ([`StatementCache`]): a statement is parsed once per connection, and
/// then costs one round trip instead of two. (It is still planned on every
/// run: [`begin_source`].)
pub type Tx<'t, 'c> = Cached<'t, Transaction<'c>>;

/// Called with (rows done, rows in total) as a run progresses.
pub type ProgressFn = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// How a run replicates.
#[derive(Clone)]
pub struct SyncOptions {
    /// Rows read from the store per window, per table (default 10,000): the
    /// memory bound of a run.
    pub window_rows: usize,
    /// Attempts before a retryable error is given up on (default 5).
    pub max_attempts: u32,
    /// First backoff between attempts, doubled each time (default 200 ms).
    pub backoff: Duration,
    /// Progress callback.
    pub progress: Option<ProgressFn>,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            window_rows: 10_000,
            max_attempts: 5,
            backoff: Duration::from_millis(200),
            progress: None,
        }
    }
}

impl std::fmt::Debug for SyncOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncOptions")
            .field("window_rows", &self.window_rows)
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .finish()
    }
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Nothing to send: the target already had the source up to the
    /// store's change sequence (or up to a change file's end).
    UpToDate,
    /// Bulk load into an empty target.
    Full,
    /// Only what changed since the watermark (always, for a change file).
    Incremental,
}

/// A report's tables as read back (from a sync server's answer): each
/// name one of [`CHANGE_TABLES`].
fn read_tables<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<TableStats>, D::Error> {
    #[derive(Deserialize)]
    struct Stats {
        table: String,
        rows: u64,
        bytes: u64,
        seconds: f64,
    }
    Vec::<Stats>::deserialize(d)?
        .into_iter()
        .map(|s| {
            let table = CHANGE_TABLES
                .iter()
                .copied()
                .find(|t| *t == s.table)
                .ok_or_else(|| serde::de::Error::custom(format!("unknown table {:?}", s.table)))?;
            Ok(TableStats {
                table,
                rows: s.rows,
                bytes: s.bytes,
                seconds: s.seconds,
            })
        })
        .collect()
}

/// Per table: rows sent, bytes of values, seconds spent.
#[derive(Debug, Clone, Serialize)]
pub struct TableStats {
    /// The table.
    pub table: &'static str,
    /// Rows sent.
    pub rows: u64,
    /// Bytes of the values sent (text lengths and fixed-size fields).
    pub bytes: u64,
    /// Seconds spent sending them.
    pub seconds: f64,
}

/// The summary of a sync run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncReport {
    /// The store's identity as a source.
    pub source_id: String,
    /// What the run did.
    pub mode: SyncMode,
    /// The watermark before the run.
    pub from_seq: i64,
    /// The watermark after it (the store's change sequence at the snapshot).
    pub to_seq: i64,
    /// Per table, in load order.
    #[serde(deserialize_with = "read_tables")]
    pub tables: Vec<TableStats>,
    /// Seconds the whole run took (the last attempt).
    pub seconds: f64,
    /// Attempts made (more than one after retryable failures).
    pub attempts: u32,
    /// The conflict copies made: files of this source that lost their path
    /// to another source's file (or whose versions diverged), and, applying
    /// a change file, files of the target that lost their path to a file of
    /// the change file made before them.
    pub conflicts: Vec<ConflictCopy>,
}

impl SyncReport {
    /// Rows sent, all tables together.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}

/// Replicates one store into one PostgreSQL database.
#[derive(Debug, Clone)]
pub struct Replicator {
    store: Store,
    target: PgUrl,
    options: SyncOptions,
}

impl Replicator {
    /// A replicator of `store` (all tenants) into the database at `target`.
    pub fn new(store: Store, target: PgUrl) -> Self {
        Replicator {
            store,
            target,
            options: SyncOptions::default(),
        }
    }

    /// Replaces the options.
    pub fn with_options(mut self, options: SyncOptions) -> Self {
        self.options = options;
        self
    }

    /// The target.
    pub fn target(&self) -> &PgUrl {
        &self.target
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Brings the target up to the store's current state, retrying
    /// retryable failures with exponential backoff.
    pub async fn sync(&self) -> Result<SyncReport> {
        with_retries(&self.options, || self.sync_once()).await
    }

    /// One attempt of [`Replicator::sync`].
    pub async fn sync_once(&self) -> Result<SyncReport> {
        let started = Instant::now();
        let mut client = self.target.connect(crate::APPLICATION_NAME, None).await?;
        migrate(&mut client).await?;
        let hub = hub_id(&client).await?;
        let (header, start, mut windows) = spawn_reader(
            self.store.clone(),
            self.options.window_rows,
            false,
            self.options.progress.is_some(),
            hub,
            to_batch,
        );
        let (source_id, head, base) = header.await.map_err(|_| reader_gone())??;

        let cache = StatementCache::default();
        let tx = begin_source(&mut client, &cache, &source_id, false).await?;
        let db = Tx::new(&tx, &cache);
        let (watermark, empty) = target_position(&db, &source_id, head).await?;
        let mut report = SyncReport::new(&source_id, watermark, head);
        if watermark == head {
            tx.commit().await.map_err(Error::pg("committing"))?;
            report.seconds = started.elapsed().as_secs_f64();
            return Ok(report);
        }
        report.mode = if watermark == 0 && empty {
            SyncMode::Full
        } else {
            db.execute(nexus_postgres::PLAN_ONCE, &[])
                .await
                .map_err(Error::pg("starting the sync"))?;
            SyncMode::Incremental
        };

        // The reader starts at the watermark and stays one window ahead.
        start.send(watermark).map_err(|_| reader_gone())?;
        let total = match windows.recv().await {
            Some(Ok(Read::Total(t))) => t,
            Some(Err(e)) => return Err(e),
            _ => return Err(reader_gone()),
        };
        let mut done = 0u64;
        let dropped = if report.mode == SyncMode::Full {
            drop_secondary(&tx).await?
        } else {
            Vec::new()
        };
        let mut live_ids: Vec<Uuid> = Vec::new();
        let mut held = crate::resolve::Held::new();
        loop {
            let batch = match windows.recv().await {
                Some(Ok(Read::Window(batch))) => batch,
                Some(Ok(Read::Done)) => break,
                Some(Err(e)) => return Err(e),
                Some(Ok(Read::Total(_))) | None => return Err(reader_gone()),
            };
            let rows = batch_len(&batch);
            if report.mode == SyncMode::Full {
                copy_batch(&db, &source_id, &batch, &mut report.tables).await?;
            } else {
                let mut batch = batch;
                let copies = crate::resolve::resolve(
                    &db,
                    &source_id,
                    Seen::Through(base),
                    &mut batch,
                    &mut held,
                )
                .await?;
                upsert_batch(
                    &db,
                    &source_id,
                    &batch,
                    &mut report.tables,
                    &mut live_ids,
                    Landing::Hidden,
                )
                .await?;
                report
                    .conflicts
                    .extend(crate::resolve::finish(&db, copies, &mut live_ids).await?);
            }
            done += rows;
            if let Some(p) = &self.options.progress {
                p(done, total);
            }
        }
        crate::resolve::none_held(&db, &source_id, &held).await?;
        report
            .conflicts
            .extend(make_live(&db, &source_id, Seen::Through(base), &live_ids).await?);
        rebuild_secondary(&tx, &dropped).await?;
        record_watermark(&db, &source_id, head, "sync", None).await?;
        tx.commit()
            .await
            .map_err(Error::pg("committing the sync"))?;
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }
}

impl SyncReport {
    /// A report of nothing done yet, from `from_seq` to `to_seq`.
    pub(crate) fn new(source_id: &str, from_seq: i64, to_seq: i64) -> SyncReport {
        SyncReport {
            source_id: source_id.to_string(),
            mode: SyncMode::UpToDate,
            from_seq,
            to_seq,
            tables: CHANGE_TABLES
                .iter()
                .map(|t| TableStats {
                    table: t,
                    rows: 0,
                    bytes: 0,
                    seconds: 0.0,
                })
                .collect(),
            seconds: 0.0,
            attempts: 1,
            conflicts: Vec::new(),
        }
    }
}

/// A report that counts the attempts it took.
pub(crate) trait Attempts {
    fn set_attempts(&mut self, n: u32);
}

impl Attempts for SyncReport {
    fn set_attempts(&mut self, n: u32) {
        self.attempts = n;
    }
}

/// Runs `attempt` until it succeeds, fails for good, or `options.max_attempts`
/// are used up, with exponential backoff between attempts.
pub(crate) async fn with_retries<R, F, Fut>(options: &SyncOptions, mut attempt: F) -> Result<R>
where
    R: Attempts,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<R>>,
{
    let mut n = 0;
    let mut delay = options.backoff;
    loop {
        n += 1;
        match attempt().await {
            Ok(mut report) => {
                report.set_attempts(n);
                return Ok(report);
            }
            Err(e) if e.is_retryable() && n < options.max_attempts => {
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The expression that shares the bulk-load lock ([`BULK_LOCK`] the
/// parameter `$n`): it waits while a bulk load runs.
macro_rules! share_bulk_lock {
    ($n:literal) => {
        concat!("pg_advisory_xact_lock_shared($", $n, ")")
    };
}

/// Starts the one transaction of a run and takes the source's lock in it:
/// two runs for the same source take turns. For a push (`push`: a change
/// file's apply, which reads no table before), the same statement then
/// shares the bulk-load lock ([`share_bulk_lock`]) and has the rest of the
/// transaction plan each statement once ([`nexus_postgres::plan_once!`]);
/// a sync run decides both once it knows whether it bulk-loads
/// ([`target_position`]).
pub(crate) async fn begin_source<'c>(
    client: &'c mut tokio_postgres::Client,
    cache: &StatementCache,
    source_id: &str,
    push: bool,
) -> Result<Transaction<'c>> {
    let tx = client
        .transaction()
        .await
        .map_err(Error::pg("starting the sync transaction"))?;
    let db = Tx::new(&tx, cache);
    // (A select list is evaluated in order: the source's lock first.)
    let locked = if push {
        db.execute(
            concat!(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0)), ",
                share_bulk_lock!("2"),
                ", ",
                nexus_postgres::plan_once!()
            ),
            &[&source_id, &BULK_LOCK],
        )
        .await
    } else {
        db.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&source_id],
        )
        .await
    };
    locked.map_err(Error::pg("locking the source"))?;
    Ok(tx)
}

/// The target's watermark for `source_id` (0 if it has none).
pub(crate) async fn watermark<C: GenericClient + Sync>(
    client: &Cached<'_, C>,
    source_id: &str,
) -> Result<i64> {
    source_watermark(client, source_id, None).await
}

/// The target's watermark for `source_id` (0 if it has none), as a sync
/// server reads it for a caller that may write `tenant` (`None`: database
/// credentials, every source): refused with
/// [`Error::SourceOfOtherTenant`] when another tenant's token pushed for
/// the source first.
pub async fn source_watermark<C: GenericClient + Sync>(
    client: &Cached<'_, C>,
    source_id: &str,
    tenant: Option<&str>,
) -> Result<i64> {
    let Some(row) = client
        .query_opt(
            "SELECT watermark, tenant_id FROM nexus_sync_state WHERE source_id = $1",
            &[&source_id],
        )
        .await
        .map_err(Error::pg("reading the watermark"))?
    else {
        return Ok(0);
    };
    if let (Some(allowed), Some(owner)) = (tenant, row.get::<_, Option<&str>>(1))
        && owner != allowed
    {
        return Err(Error::SourceOfOtherTenant {
            source_id: source_id.to_string(),
            allowed: allowed.to_string(),
        });
    }
    Ok(row.get(0))
}

/// Makes the files that [`upsert_batch`] left hidden (`deleted_at =
/// -infinity`) live, once every deletion and move of the run is in place.
/// A file whose path a different live file of the target holds (one the
/// source did not know: another source's) loses the path, by the conflict
/// rule: it becomes live as a conflict copy beside it
/// ([`nexus_core::ConflictInfo::copy_path`]), with the metadata key
/// [`nexus_core::CONFLICT_KEY`], and its row is marked as the target's own
/// change (no origin), stamped one microsecond after the row it moves (as
/// an embedded import stamps it): its source receives the new path on its
/// next pull, and takes it over its own row. Unless nothing orders the
/// two (`seen` is [`Seen::Unknown`]: a change file) and the run's file was
/// made first ([`nexus_core::keeps_path`]): then the file that held the
/// path becomes the copy, in the same way, and the run's file takes the
/// path. Files of the run that want one path take it in the order of
/// `live_ids` (a file that held the path here before the run comes first:
/// [`crate::resolve::finish`]); the others become conflict copies. Returns
/// the copies made.
pub(crate) async fn make_live(
    tx: &Tx<'_, '_>,
    source_id: &str,
    seen: Seen,
    live_ids: &[Uuid],
) -> Result<Vec<ConflictCopy>> {
    let mut copies = Vec::new();
    if live_ids.is_empty() {
        return Ok(copies);
    }
    // Most runs take no path that another file holds: their files become
    // live at once, in a savepoint (left to the commit to release); a path
    // taken (a unique violation) undoes that and goes the long way below.
    let client = tx.client();
    let savepoint = async {
        client
            .batch_execute("SAVEPOINT nexus_make_live")
            .await
            .map_err(Error::pg("making moved files live"))
    };
    // Sent together (pipelined).
    let ids: [&(dyn ToSql + Sync); 1] = [&live_ids];
    let (savepoint, made) = tokio::join!(savepoint, tx.execute(MAKE_LIVE, &ids));
    savepoint?;
    let made = made.map_err(Error::pg("making moved files live"));
    if unless_path_taken(tx, "nexus_make_live", made, "making moved files live")
        .await?
        .is_some()
    {
        return Ok(copies);
    }
    // A path is lost to a live file of the target, or, among the run's
    // own files that want one path, by all but the first of `live_ids`.
    let taken = tx
        .query(
            &format!(
            "WITH u AS (SELECT id, min(i) AS i FROM unnest($1::uuid[]) WITH ORDINALITY AS x(id, i) GROUP BY id), \
             c AS (SELECT n.path_id, n.tenant_id, n.virtual_path, n.updated_at, n.created_at, u.i, \
                     row_number() OVER (PARTITION BY n.tenant_id, n.virtual_path ORDER BY u.i) AS r \
                   FROM u JOIN file_paths n ON n.path_id = u.id WHERE n.deleted_at = '-infinity') \
             SELECT c.path_id, c.tenant_id, c.virtual_path, {}, c.r, {}, h.path_id, {}, {} \
             FROM c LEFT JOIN LATERAL (SELECT f.path_id, f.created_at, f.updated_at FROM file_paths f \
               WHERE f.tenant_id = c.tenant_id AND f.virtual_path = c.virtual_path \
               AND f.deleted_at IS NULL AND f.path_id <> c.path_id) h ON true \
             WHERE c.r > 1 OR h.path_id IS NOT NULL \
             ORDER BY c.tenant_id, c.virtual_path, c.i",
                micros("c.updated_at"),
                micros("c.created_at"),
                micros("h.created_at"),
                micros("h.updated_at"),
            ),
            &[&live_ids],
        )
        .await
        .map_err(Error::pg("checking the paths of moved files"))?;
    // The run's files keep the paths they have until they are made live
    // below: a copy must not take one (a conflict copy that its source
    // made and pushed has a copy's name too).
    let mut chosen = HashSet::new();
    if !taken.is_empty() {
        for row in tx
            .query(
                "SELECT tenant_id, virtual_path FROM file_paths \
                 WHERE path_id = ANY($1) AND deleted_at = '-infinity'",
                &[&live_ids],
            )
            .await
            .map_err(Error::pg("reading the paths of moved files"))?
        {
            chosen.insert((row.get(0), row.get(1)));
        }
    }
    for row in taken {
        let (mut path_id, tenant, path): (Uuid, String, String) =
            (row.get(0), row.get(1), row.get(2));
        let mut at: i64 = row.get(3);
        let holder: Option<Uuid> = row.get(6);
        // Only the first of the run's files that want the path meets the
        // holder (the others become copies, as they would beside it). A
        // change file never brings two live files at one path (`validate`
        // refuses it), so with `Seen::Unknown` this is the embedded
        // import's one-at-a-time comparison.
        if let Some(holder) = holder
            && row.get::<_, i64>(4) == 1
        {
            let (mine, theirs) = (path_id.to_string(), holder.to_string());
            let arriving = nexus_core::PathClaim {
                created_at: row.get(5),
                id: &mine,
            };
            let held = nexus_core::PathClaim {
                created_at: row.get(7),
                id: &theirs,
            };
            if !nexus_core::keeps_path(held, arriving, seen) {
                // The holder loses the path: it becomes the copy (named
                // after the source, as an embedded import names it).
                (path_id, at) = (holder, row.get(8));
            }
        }
        let info = ConflictInfo {
            path,
            source: source_id.to_string(),
            at: nexus_core::Timestamp::from_micros(at),
            reason: ConflictReason::Path,
        };
        let copy = free_copy_path(tx, &tenant, &info, &mut chosen).await?;
        tx.execute(
            "UPDATE file_paths SET virtual_path = $2, updated_at = updated_at + interval '1 microsecond', \
             origin_id = NULL, origin_seq = NULL, change_seq = DEFAULT WHERE path_id = $1",
            &[&path_id, &copy],
        )
        .await
        .map_err(Error::pg("moving a file to its conflict copy"))?;
        mark_conflict(tx, path_id, &info).await?;
        copies.push(info.into_copy(tenant, copy, path_id.to_string()));
    }
    tx.execute(MAKE_LIVE, &[&live_ids]).await.map_err(|e| {
        if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
            // Another writer made a file live at one of these paths since
            // the look above: the run is retried, and then sees it.
            Error::Raced
        } else {
            Error::pg("making moved files live")(e)
        }
    })?;
    Ok(copies)
}

/// `made`, the outcome of statements sent after `SAVEPOINT {savepoint}`:
/// `None` when one of them tripped a unique index (a path that another
/// live file holds), after rolling back to the savepoint (`what` names the
/// step if that fails); else the outcome.
async fn unless_path_taken<T>(
    tx: &Tx<'_, '_>,
    savepoint: &str,
    made: Result<T>,
    what: &'static str,
) -> Result<Option<T>> {
    match made {
        Err(Error::Pg(e)) if e.sqlstate() == Some(SqlState::UNIQUE_VIOLATION.code()) => {
            tx.client()
                .batch_execute(&format!("ROLLBACK TO SAVEPOINT {savepoint}"))
                .await
                .map_err(Error::pg(what))?;
            Ok(None)
        }
        made => made.map(Some),
    }
}

/// Makes the files `$1` live ([`make_live`]).
const MAKE_LIVE: &str = "UPDATE file_paths SET deleted_at = NULL WHERE path_id = ANY($1)";

/// The first conflict-copy path of `info` that no live file of `tenant`
/// holds and that is not among the paths `chosen` before it (copies the run
/// made that are not live yet); it joins them.
pub(crate) async fn free_copy_path(
    tx: &Tx<'_, '_>,
    tenant: &str,
    info: &ConflictInfo,
    chosen: &mut HashSet<(String, String)>,
) -> Result<String> {
    let (from, to) = info.copy_paths_range();
    let held: HashSet<String> = tx
        .query(
            "SELECT virtual_path FROM file_paths WHERE tenant_id = $1 AND virtual_path >= $2 \
             AND virtual_path < $3 AND deleted_at IS NULL",
            &[&tenant, &from, &to],
        )
        .await
        .map_err(Error::pg("looking for a free conflict-copy path"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let copy = info.free_copy_path(|p| {
        held.contains(p) || chosen.contains(&(tenant.to_string(), p.to_string()))
    });
    chosen.insert((tenant.to_string(), copy.clone()));
    Ok(copy)
}

/// Sets [`nexus_core::CONFLICT_KEY`] on the file `path_id`, as the target's
/// own change (`nexus_set_keys`, migration 0009: stamped after the key's
/// value or removal there, which it clears), by no clock: one microsecond
/// after the file's row that the copy moves (`info.at`), as an embedded
/// import stamps it, and as the move itself is stamped.
pub(crate) async fn mark_conflict(
    tx: &Tx<'_, '_>,
    path_id: Uuid,
    info: &ConflictInfo,
) -> Result<()> {
    let at = nexus_postgres::codec::time(nexus_core::Timestamp::from_micros(
        info.at.as_micros().saturating_add(1),
    ));
    tx.execute(
        "SELECT nexus_set_keys(ARRAY[$1::uuid], ARRAY[$2::text], ARRAY[$3::jsonb], $4)",
        &[&path_id, &CONFLICT_KEY, &info.to_json(), &at],
    )
    .await
    .map_err(Error::pg("marking a conflict copy"))?;
    Ok(())
}

/// Records that the target has applied `source_id` through `through`
/// (`via` a sync run or a change file), and advances the target's own
/// change sequence past it.
pub(crate) async fn record_watermark(
    tx: &Tx<'_, '_>,
    source_id: &str,
    through: i64,
    via: &str,
    tenant: Option<&str>,
) -> Result<()> {
    // The first tenant to push for a source through a server keeps it
    // ([`source_watermark`] refuses the others).
    tx.execute(
        "INSERT INTO nexus_sync_state (source_id, watermark, synced_at, via, tenant_id) \
         VALUES ($1, $2, now(), $3, $4) \
         ON CONFLICT (source_id) DO UPDATE SET watermark = EXCLUDED.watermark, synced_at = EXCLUDED.synced_at, \
         via = EXCLUDED.via, tenant_id = COALESCE(nexus_sync_state.tenant_id, EXCLUDED.tenant_id)",
        &[&source_id, &through, &via, &tenant],
    )
    .await
    .map_err(Error::pg("writing the watermark"))?;
    Ok(())
}

/// The target's watermark for `source_id` and whether the replicated tables
/// are empty; refuses a target that is ahead of the store (`head`).
pub(crate) async fn target_position<C: GenericClient + Sync>(
    client: &Cached<'_, C>,
    source_id: &str,
    head: i64,
) -> Result<(i64, bool)> {
    let watermark = watermark(client, source_id).await?;
    if watermark > head {
        return Err(Error::TargetAhead {
            target: watermark,
            source_seq: head,
        });
    }
    // A bulk load goes only into an empty database, one at a time: it holds
    // the bulk lock alone, while every other push shares it. A push that
    // finds the database empty takes the lock alone and looks again
    // (another source's bulk load may have committed meanwhile). It does
    // not wait for it: having read the tables, it would deadlock with the
    // loader that holds it and locks them; it is raced, and retried.
    let empty = if is_empty(client).await? {
        let took: bool = client
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&BULK_LOCK])
            .await
            .map_err(Error::pg("taking the bulk-load lock"))?
            .get(0);
        if !took {
            return Err(Error::Raced);
        }
        is_empty(client).await?
    } else {
        share_bulk_lock(client).await?;
        false
    };
    Ok((watermark, empty))
}

/// The advisory lock that a bulk load holds alone and other pushes share.
const BULK_LOCK: i64 = 0x6e65_7875_7362_6c6b;

/// Shares the bulk-load lock: waits while a bulk load runs.
pub(crate) async fn share_bulk_lock<C: GenericClient + Sync>(client: &Cached<'_, C>) -> Result<()> {
    client
        .execute(concat!("SELECT ", share_bulk_lock!("1")), &[&BULK_LOCK])
        .await
        .map_err(Error::pg("sharing the bulk-load lock"))?;
    Ok(())
}

/// Whether the replicated tables are all empty. It reads them in the order
/// of [`CHANGE_TABLES`], the order in which [`drop_secondary`] locks them.
async fn is_empty<C: GenericClient + Sync>(client: &Cached<'_, C>) -> Result<bool> {
    let sql = format!(
        "SELECT {}",
        CHANGE_TABLES
            .iter()
            .map(|t| format!("NOT EXISTS (SELECT 1 FROM {t})"))
            .collect::<Vec<_>>()
            .join(" AND ")
    );
    Ok(client
        .query_one(&sql, &[])
        .await
        .map_err(Error::pg("checking whether the target is empty"))?
        .get(0))
}

/// What the reader sends: the row total (0 when not counted), then
/// windows, then `Done`.
pub(crate) enum Read<W> {
    Total(u64),
    Window(W),
    Done,
}

/// Turns a window of the store's local changes into what a push sends.
pub(crate) type Convert<W> = fn(Changes) -> Result<W>;

/// A window as the PostgreSQL push sends it: rows converted to PostgreSQL's
/// types (the first value that does not convert stops the run).
fn to_batch(changes: Changes) -> Result<Batch> {
    let mut problems = Vec::new();
    let batch = convert::batch(changes, &mut problems);
    match problems.into_iter().next() {
        None => Ok(batch),
        Some(first) => Err(Error::Conversion {
            table: "source",
            problem: format!("{first} (run `nexus sync --dry-run` to list every such value)"),
        }),
    }
}

pub(crate) fn reader_gone() -> Error {
    Error::Store(nexus_core::Error::Engine {
        context: "reading the store",
        source: "the snapshot reader stopped before the end".into(),
    })
}

/// The source's id, its change sequence at the snapshot, and how far it had
/// pulled from the target then (the last state of the target it has seen).
pub(crate) type Header = tokio::sync::oneshot::Receiver<Result<(String, i64, i64)>>;

/// The target's identity (its `nexus_state.store_id`): what a store's pull
/// position is kept under.
pub(crate) async fn hub_id(client: &impl tokio_postgres::GenericClient) -> Result<String> {
    Ok(client
        .query_one("SELECT store_id FROM nexus_state WHERE id = 1", &[])
        .await
        .map_err(Error::pg("reading the database's id"))?
        .get(0))
}

/// Reads the store on a blocking thread: takes a snapshot and sends its
/// `(source id, change sequence)`, waits for the watermark to start from,
/// then reads and converts one window at a time, at most one window ahead of
/// the writer, so that reading and PostgreSQL's work overlap. With
/// `whole_files` (each window applied in a transaction of its own, as a
/// sync server does), a window goes on until it holds the rows of the files
/// its versions and metadata belong to ([`nexus_core::Snapshot::local_window`]);
/// without, windows end at about `window_rows` rows, and the run, one
/// transaction, holds back what waits for a later window. The rows to
/// send are counted first (a count per table) only for a progress
/// callback (`count`); else the total it sends is 0.
pub(crate) fn spawn_reader<W: Send + 'static>(
    store: Store,
    window_rows: usize,
    whole_files: bool,
    count: bool,
    hub_id: String,
    convert: Convert<W>,
) -> (
    Header,
    tokio::sync::oneshot::Sender<i64>,
    tokio::sync::mpsc::Receiver<Result<Read<W>>>,
) {
    let (header_tx, header_rx) = tokio::sync::oneshot::channel();
    let (start_tx, start_rx) = tokio::sync::oneshot::channel::<i64>();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        handle.block_on(async move {
            let mut snap = match store.snapshot().await {
                Ok(s) => s,
                Err(e) => {
                    let _ = header_tx.send(Err(e.into()));
                    return;
                }
            };
            let head = snap.change_seq();
            let base = match snap.pull_position(&hub_id) {
                Ok(b) => b,
                Err(e) => {
                    let _ = header_tx.send(Err(e.into()));
                    return;
                }
            };
            if header_tx
                .send(Ok((snap.source_id().to_string(), head, base)))
                .is_err()
            {
                return;
            }
            // Dropped without a start: the run had nothing to do.
            let Ok(mut after) = start_rx.await else {
                return;
            };
            let send = |m: Result<Read<W>>| tx.send(m);
            let total = match count {
                true => snap.count_changes(after, head),
                false => Ok([0; 5]),
            };
            match total {
                Ok(c) => {
                    if send(Ok(Read::Total(c.iter().sum()))).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = send(Err(e.into())).await;
                    return;
                }
            }
            while after < head {
                let read = if whole_files {
                    snap.local_window(after, window_rows)
                } else {
                    snap.window_end(after, window_rows)
                        .and_then(|through| snap.local_changes(after, through))
                }
                .map(|changes| (changes.through, changes));
                let (through, changes) = match read {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = send(Err(e.into())).await;
                        return;
                    }
                };
                let window = match convert(changes) {
                    Ok(w) => w,
                    Err(e) => {
                        let _ = send(Err(e)).await;
                        return;
                    }
                };
                if send(Ok(Read::Window(window))).await.is_err() {
                    return; // the writer gave up
                }
                after = through;
            }
            let _ = send(Ok(Read::Done)).await;
        })
    });
    (header_rx, start_tx, rx)
}

pub(crate) fn batch_len(b: &Batch) -> u64 {
    (b.files.len() + b.versions.len() + b.metadata.len() + b.chunks.len() + b.tombstones.len())
        as u64
}

/// Drops the secondary indexes and foreign keys of the replicated tables
/// and turns off the triggers that note which tenant's rows each
/// transaction wrote (PostgreSQL migration 0010, which would note every
/// copied statement) before a bulk load, and returns the statements that
/// rebuild them and note the whole load at once (for
/// [`rebuild_secondary`]). The definitions are read from the catalog, so
/// the migrations stay the only description of the schema.
///
/// It first locks the tables, all in one statement and in the order of
/// [`CHANGE_TABLES`] (the order in which every push reads them to see
/// whether the database is empty): dropping index after index would take
/// their locks one table at a time, and a push that had read the first
/// table and waited for the second would deadlock with the load.
pub async fn drop_secondary(tx: &Transaction<'_>) -> Result<Vec<String>> {
    tx.batch_execute(&format!(
        "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        CHANGE_TABLES.join(", ")
    ))
    .await
    .map_err(Error::pg("locking the tables for the bulk load"))?;
    // (what to do now, if anything; what to do after the load)
    let rows = tx
        .query(
            "SELECT format('ALTER TABLE %I DROP CONSTRAINT %I', c.conrelid::regclass::text, c.conname), \
                    format('ALTER TABLE %I ADD CONSTRAINT %I %s', c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)) \
             FROM pg_constraint c WHERE c.contype = 'f' \
               AND c.conrelid::regclass::text = ANY($1) \
             UNION ALL \
             SELECT format('DROP INDEX %I', i.indexname), i.indexdef \
             FROM pg_indexes i WHERE i.schemaname = current_schema() AND i.tablename = ANY($1) \
               AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = format('%I', i.indexname)::regclass) \
             UNION ALL \
             SELECT format('ALTER TABLE %I DISABLE TRIGGER %I', t.tgrelid::regclass::text, t.tgname), \
                    format('ALTER TABLE %I ENABLE TRIGGER %I', t.tgrelid::regclass::text, t.tgname) \
             FROM pg_trigger t WHERE NOT t.tgisinternal AND t.tgfoid = to_regproc('nexus_note_feed') \
               AND t.tgrelid::regclass::text = ANY($1) \
             UNION ALL \
             SELECT NULL, 'SELECT nexus_note_feed_load()' WHERE to_regproc('nexus_note_feed_load') IS NOT NULL",
            &[&CHANGE_TABLES.to_vec()],
        )
        .await
        .map_err(Error::pg(
            "reading the indexes, foreign keys and triggers to set aside for the bulk load",
        ))?;
    let mut recreate = Vec::new();
    for r in rows {
        if let Some(now) = r.get::<_, Option<String>>(0) {
            tx.batch_execute(&now).await.map_err(Error::pg(
                "setting an index, foreign key or trigger aside for the bulk load",
            ))?;
        }
        recreate.push(r.get(1));
    }
    Ok(recreate)
}

/// Rebuilds what [`drop_secondary`] dropped: indexes first (and the
/// feed's entries of the load), then foreign keys (and the feed's triggers).
pub async fn rebuild_secondary(tx: &Transaction<'_>, statements: &[String]) -> Result<()> {
    // Indexes first (constraints may need them), then foreign keys.
    let (fks, indexes): (Vec<&String>, Vec<&String>) = statements
        .iter()
        .partition(|s| s.starts_with("ALTER TABLE"));
    for sql in indexes.into_iter().chain(fks) {
        tx.batch_execute(sql).await.map_err(Error::pg(
            "rebuilding indexes, foreign keys or the feed's triggers after the bulk load",
        ))?;
    }
    Ok(())
}

/// Sends `rows` of one table by binary `COPY`.
async fn copy_rows<'r, R: TableRow + 'r>(
    tx: &Tx<'_, '_>,
    source: &str,
    rows: impl Iterator<Item = &'r R>,
    stats: &mut [TableStats],
) -> Result<()> {
    let started = Instant::now();
    let into = pg_tables::copy_into(R::TABLE);
    let sink = tx
        .client()
        .copy_in(into.sql.as_str())
        .await
        .map_err(Error::pg("starting COPY"))?;
    let writer = BinaryCopyInWriter::new(sink, &into.types);
    pin_mut!(writer);
    let (mut count, mut bytes) = (0, 0);
    for row in rows {
        let values = pg_tables::values(row)?;
        bytes += pg_tables::size(&values);
        count += 1;
        let cells: Vec<&(dyn ToSql + Sync)> = values
            .iter()
            .map(|v| v as &(dyn ToSql + Sync))
            .chain([&source as &(dyn ToSql + Sync)])
            .collect();
        writer
            .as_mut()
            .write(&cells)
            .await
            .map_err(Error::pg("sending COPY rows"))?;
    }
    writer.finish().await.map_err(Error::pg("finishing COPY"))?;
    Tally::of::<R>(count, bytes, started).add(stats);
    Ok(())
}

/// Upserts `rows` of one table ([`pg_tables::upsert`]); `failed` says what
/// a refusal means. Returns what to add to the run's figures (so that
/// several upserts can be sent at once).
async fn upsert_rows<'r, R: TableRow + 'r>(
    tx: &Tx<'_, '_>,
    source: &str,
    rows: impl Iterator<Item = &'r R>,
    failed: impl FnOnce(tokio_postgres::Error) -> Error,
) -> Result<Tally> {
    upsert_landing(tx, source, Landing::Hidden, rows, failed).await
}

/// [`upsert_rows`], live files landing `how`.
async fn upsert_landing<'r, R: TableRow + 'r>(
    tx: &Tx<'_, '_>,
    source: &str,
    how: Landing,
    rows: impl Iterator<Item = &'r R>,
    failed: impl FnOnce(tokio_postgres::Error) -> Error,
) -> Result<Tally> {
    let started = Instant::now();
    let mut columns: Vec<Vec<pg_tables::Value<'_>>> = vec![Vec::new(); R::TABLE.columns.len() + 1];
    let (mut count, mut bytes) = (0, 0);
    for row in rows {
        let values = pg_tables::values(row)?;
        bytes += pg_tables::size(&values);
        count += 1;
        for (column, v) in columns.iter_mut().zip(values) {
            column.push(v);
        }
    }
    if count == 0 {
        return Ok(Tally::of::<R>(0, 0, started));
    }
    let params: Vec<&(dyn ToSql + Sync)> = columns
        .iter()
        .map(|c| c as &(dyn ToSql + Sync))
        .chain([&source as &(dyn ToSql + Sync)])
        .collect();
    tx.execute(pg_tables::upsert_landing(R::TABLE, how), &params)
        .await
        .map_err(failed)?;
    Ok(Tally::of::<R>(count, bytes, started))
}

/// Rows and bytes written into one table, and since when: added to a
/// run's figures ([`TableStats`]; two upserts sent together each count
/// the time of both).
struct Tally {
    table: usize,
    rows: usize,
    bytes: u64,
    started: Instant,
}

impl Tally {
    fn of<R: TableRow>(rows: usize, bytes: u64, started: Instant) -> Tally {
        Tally {
            table: R::TABLE.index(),
            rows,
            bytes,
            started,
        }
    }

    /// Nothing written adds nothing.
    fn add(self, stats: &mut [TableStats]) {
        if self.rows == 0 {
            return;
        }
        let s = &mut stats[self.table];
        s.rows += self.rows as u64;
        s.bytes += self.bytes;
        s.seconds += self.started.elapsed().as_secs_f64();
    }
}

async fn copy_batch(
    tx: &Tx<'_, '_>,
    source: &str,
    b: &Batch,
    stats: &mut [TableStats],
) -> Result<()> {
    copy_rows(tx, source, b.files.iter().map(|x| &x.row), stats).await?;
    copy_rows(tx, source, b.versions.iter().map(|x| &x.row), stats).await?;
    copy_rows(tx, source, b.metadata.iter().map(|x| &x.row), stats).await?;
    copy_rows(tx, source, b.chunks.iter().map(|x| &x.row), stats).await?;
    copy_rows(tx, source, b.tombstones.iter().map(|x| &x.row), stats).await
}

/// The files and versions of a batch, sent together (pipelined: one round
/// trip), in that order (the versions' feed trigger finds their files'
/// tenant): both statements prepared first, so that each future sends its
/// statement when first polled, in order. Each is checked in the order
/// sent (a failure makes the statements behind it fail as "transaction
/// aborted"). Files landing live go in a savepoint (`nexus_files_live`,
/// sent first, left to the commit to release).
async fn files_and_versions(
    tx: &Tx<'_, '_>,
    source: &str,
    b: &Batch,
    how: Landing,
) -> Result<(Tally, Tally)> {
    if !b.files.is_empty() && !b.versions.is_empty() {
        for sql in [
            pg_tables::upsert_landing(&FILE_PATHS, how),
            pg_tables::upsert(&VERSION_HISTORY),
        ] {
            tx.prepare(sql)
                .await
                .map_err(Error::pg("preparing an upsert"))?;
        }
    }
    let savepoint = async {
        if how == Landing::Live {
            tx.client()
                .batch_execute("SAVEPOINT nexus_files_live")
                .await
                .map_err(Error::pg("landing files live"))?;
        }
        Ok::<(), Error>(())
    };
    let (savepoint, files, versions) = tokio::join!(
        savepoint,
        upsert_landing(
            tx,
            source,
            how,
            b.files.iter().map(|f| &f.row),
            Error::pg("upserting file_paths"),
        ),
        upsert_rows(tx, source, b.versions.iter().map(|v| &v.row), |e| {
            if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                // Another push made a version of one of these files at the
                // same moment: retried, the rule then sees it.
                Error::Raced
            } else {
                Error::pg("upserting version_history")(e)
            }
        }),
    );
    savepoint?;
    Ok((files?, versions?))
}

/// Upserts the rows of a batch. Its live files land `how`: hidden, made
/// live by [`make_live`] at the end of the run (their ids go to
/// `live_ids`), or live at once when asked and their paths allow it
/// ([`pg_tables::Landing::Live`]; none go to `live_ids` then).
pub(crate) async fn upsert_batch(
    tx: &Tx<'_, '_>,
    source: &str,
    b: &Batch,
    stats: &mut [TableStats],
    live_ids: &mut Vec<Uuid>,
    how: Landing,
) -> Result<()> {
    let live = how == Landing::Live && b.files.iter().any(|f| f.deleted_at.is_none());
    let landed = if live {
        // In a savepoint: a path that another live file holds, or that a
        // file of the batch leaves only after another takes it, trips the
        // unique index on live paths; then they land hidden after all.
        let made = files_and_versions(tx, source, b, Landing::Live).await;
        unless_path_taken(tx, "nexus_files_live", made, "landing files hidden").await?
    } else {
        None
    };
    let (files, versions) = match landed {
        Some(tallies) => tallies,
        None => {
            let tallies = files_and_versions(tx, source, b, Landing::Hidden).await?;
            live_ids.extend(
                b.files
                    .iter()
                    .filter(|f| f.deleted_at.is_none())
                    .map(|f| f.path_id),
            );
            tallies
        }
    };
    files.add(stats);
    versions.add(stats);

    if !b.metadata.is_empty() {
        let m = &b.metadata;
        upsert_rows(
            tx,
            source,
            m.iter().map(|x| &x.row),
            Error::pg("upserting file_metadata"),
        )
        .await?
        .add(stats);
        let key1: Vec<String> = m.iter().map(|x| x.row.path_id.clone()).collect();
        let key2: Vec<String> = m.iter().map(|x| x.row.key.clone()).collect();
        clear_tombstones(tx, "file_metadata", &key1, &key2).await?;
    }

    if !b.chunks.is_empty() {
        let c = &b.chunks;
        upsert_rows(
            tx,
            source,
            c.iter().map(|x| &x.row),
            Error::pg("upserting content_chunks"),
        )
        .await?
        .add(stats);
        let tenants: Vec<String> = c.iter().map(|x| x.row.tenant_id.clone()).collect();
        let hashes: Vec<String> = c.iter().map(|x| x.row.content_hash.clone()).collect();
        clear_tombstones(tx, "content_chunks", &tenants, &hashes).await?;
    }

    if !b.tombstones.is_empty() {
        let x = &b.tombstones;
        let (meta, chunks): (Vec<_>, Vec<_>) = x.iter().partition(|t| t.path_id.is_some());
        if !meta.is_empty() {
            let ids: Vec<Uuid> = meta.iter().filter_map(|t| t.path_id).collect();
            let keys: Vec<String> = meta.iter().map(|t| t.row.key2.clone()).collect();
            tx.execute(
                "DELETE FROM file_metadata m USING unnest($1::uuid[], $2::text[]) AS u(p, k) \
                 WHERE m.path_id = u.p AND m.key = u.k",
                &[&ids, &keys],
            )
            .await
            .map_err(Error::pg("deleting removed metadata"))?;
        }
        if !chunks.is_empty() {
            let tenants: Vec<String> = chunks.iter().map(|t| t.row.key1.clone()).collect();
            let hashes: Vec<String> = chunks.iter().map(|t| t.row.key2.clone()).collect();
            tx.execute(
                "DELETE FROM content_chunks c USING unnest($1::text[], $2::text[]) AS u(t, h) \
                 WHERE c.tenant_id = u.t AND c.content_hash = u.h",
                &[&tenants, &hashes],
            )
            .await
            .map_err(Error::pg("deleting collected chunks"))?;
        }
        upsert_rows(
            tx,
            source,
            x.iter().map(|t| &t.row),
            Error::pg("recording tombstones"),
        )
        .await?
        .add(stats);
    }
    Ok(())
}

/// A key that is live again has no tombstone (as in the source).
async fn clear_tombstones(
    tx: &Tx<'_, '_>,
    table: &str,
    key1: &[String],
    key2: &[String],
) -> Result<()> {
    tx.execute(
        "DELETE FROM tombstones t USING unnest($2::text[], $3::text[]) AS u(k1, k2) \
         WHERE t.table_name = $1 AND t.key1 = u.k1 AND t.key2 = u.k2",
        &[&table, &key1, &key2],
    )
    .await
    .map_err(Error::pg("clearing tombstones"))?;
    Ok(())
}
