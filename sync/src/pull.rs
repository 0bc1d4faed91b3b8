//! `pull`: a store brings in what a PostgreSQL database has and it has not,
//! from the database's change feed (`nexus_pg::read_page`), page by page.
//!
//! Each page is applied to the store in one write transaction together with
//! the new feed position ([`nexus_core::Store::apply_pull`]), so a pull cut
//! at any point resumes from the last page applied, and nothing is applied
//! twice. The first pull into an empty store reads the feed from its start
//! (every row of the database); later ones only what changed since. Rows the
//! store pushed itself come back with it as their origin and are skipped.

use std::time::Instant;

use nexus_core::Store;
use nexus_pg::FeedPage;
use nexus_postgres::{PgUrl, StatementCache, migrate};
use serde::Serialize;

use crate::error::Result;
use crate::http::HttpHub;
use crate::remote::Remote;
use crate::replicate::{SyncOptions, hub_id, watermark, with_retries};

/// What a pull did.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct PullReport {
    /// The database's id (its `nexus_state.store_id`).
    pub hub_id: String,
    /// The store's feed position before the pull.
    pub from: i64,
    /// And after it.
    pub to: i64,
    /// Pages applied.
    pub pages: u64,
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
    /// Rows of the store's own changes, recognised and skipped.
    pub own: u64,
    /// Whether the store was empty and got a snapshot of the whole
    /// database in one transaction (the first pull).
    pub bulk: bool,
    /// Seconds the pull took (the last attempt).
    pub seconds: f64,
    /// Attempts made (more than one after retryable failures).
    pub attempts: u32,
}

impl PullReport {
    /// Rows applied, all tables together.
    pub fn rows(&self) -> u64 {
        self.files + self.versions + self.metadata + self.chunks + self.tombstones
    }
}

impl crate::replicate::Attempts for PullReport {
    fn set_attempts(&mut self, n: u32) {
        self.attempts = n;
    }
}

/// Brings into `store` every change that `from` (a database, or a sync
/// server for the token's tenant) has and the store has not, retrying
/// retryable failures as a sync run does (`options.window_rows` bounds a
/// page).
pub async fn pull(store: &Store, from: &Remote, options: &SyncOptions) -> Result<PullReport> {
    match from {
        Remote::Postgres(url) => with_retries(options, || pull_once(store, url, options)).await,
        Remote::Server(hub) => with_retries(options, || pull_http_once(store, hub, options)).await,
    }
}

/// Where a pull reads the pages of a change feed.
trait Feed {
    /// The page after `after`, and the source's watermark there.
    async fn page(&mut self, after: i64, max_rows: usize) -> Result<(FeedPage, i64)>;
}

/// A database's feed, read directly.
struct PgFeed<'a> {
    client: &'a mut tokio_postgres::Client,
    cache: StatementCache,
    watermark: i64,
}

impl Feed for PgFeed<'_> {
    async fn page(&mut self, after: i64, max_rows: usize) -> Result<(FeedPage, i64)> {
        let page = nexus_pg::read_page(self.client, &self.cache, after, max_rows).await?;
        Ok((page, self.watermark))
    }
}

/// A sync server's feed of the token's tenant.
struct ServerFeed<'a> {
    hub: &'a HttpHub,
    source: String,
}

impl Feed for ServerFeed<'_> {
    async fn page(&mut self, after: i64, max_rows: usize) -> Result<(FeedPage, i64)> {
        let p = self.hub.pull(&self.source, after, max_rows).await?;
        let page = FeedPage {
            changes: p.changes,
            caught_up: p.caught_up,
            referenced_files: p.referenced_files,
        };
        Ok((page, p.watermark))
    }
}

async fn pull_once(store: &Store, source: &PgUrl, options: &SyncOptions) -> Result<PullReport> {
    let started = Instant::now();
    let mut client = source.connect(crate::APPLICATION_NAME, None).await?;
    migrate(&mut client).await?;
    let hub = hub_id(&client).await?;
    let own = store.snapshot().await?.source_id().to_string();
    let pushed_through = watermark(&client, &own).await?;
    let mut report = PullReport {
        from: store.pull_position(&hub).await?,
        hub_id: hub,
        ..PullReport::default()
    };
    report.to = report.from;
    // Into an empty store: one snapshot of the whole database, in one
    // local transaction, then the feed from the position it covers.
    if let Some(mut bulk) = store.begin_bulk_pull(&report.hub_id).await? {
        let mut counts = [0u64; 5];
        let through = nexus_pg::read_snapshot(&mut client, options.window_rows, |c| {
            counts[0] += c.files.len() as u64;
            counts[1] += c.versions.len() as u64;
            counts[2] += c.metadata.len() as u64;
            counts[3] += c.chunks.len() as u64;
            counts[4] += c.tombstones.len() as u64;
            bulk.load(&c)?;
            if let Some(p) = &options.progress {
                let n = bulk.rows();
                p(n, n);
            }
            Ok(())
        })
        .await?;
        bulk.finish(through)?;
        [
            report.files,
            report.versions,
            report.metadata,
            report.chunks,
            report.tombstones,
        ] = counts;
        report.pages += 1;
        report.bulk = true;
        report.to = through;
    }
    let mut feed = PgFeed {
        client: &mut client,
        cache: StatementCache::default(),
        watermark: pushed_through,
    };
    apply_pages(store, &mut feed, &mut report, options).await?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

async fn pull_http_once(store: &Store, hub: &HttpHub, options: &SyncOptions) -> Result<PullReport> {
    let started = Instant::now();
    let source = store.snapshot().await?.source_id().to_string();
    let state = hub.state(&source).await?;
    let mut report = PullReport {
        from: store.pull_position(&state.hub_id).await?,
        hub_id: state.hub_id,
        ..PullReport::default()
    };
    report.to = report.from;
    let mut feed = ServerFeed { hub, source };
    apply_pages(store, &mut feed, &mut report, options).await?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Applies the feed's pages after `report.to` until it is caught up, each
/// page in one local transaction with its position.
async fn apply_pages(
    store: &Store,
    feed: &mut impl Feed,
    report: &mut PullReport,
    options: &SyncOptions,
) -> Result<()> {
    // The position recorded in the store (pages with no rows are not).
    let mut stored = report.to;
    loop {
        let (page, pushed_through) = feed.page(report.to, options.window_rows).await?;
        if page.changes.is_empty() {
            // Nothing to apply: the position moves in this run only (the
            // next pull reads the same empty range again), so an idle sync
            // writes nothing here.
            report.to = page.changes.through;
        } else if page.changes.through > page.changes.after {
            // Files the page's rows refer to come first (see
            // `FeedPage::referenced_files`).
            let mut changes = page.changes;
            let mut files = page.referenced_files;
            files.append(&mut changes.files);
            changes.files = files;
            let applied = store
                .apply_pull_after(&report.hub_id, pushed_through, stored, &changes)
                .await?;
            stored = applied.through;
            report.pages += 1;
            report.files += applied.files;
            report.versions += applied.versions;
            report.metadata += applied.metadata;
            report.chunks += applied.chunks;
            report.tombstones += applied.tombstones;
            report.own += applied.own;
            report.to = applied.through;
            if let Some(p) = &options.progress {
                p(report.rows(), report.rows());
            }
        }
        if page.caught_up {
            return Ok(());
        }
    }
}

/// How many times [`sync_with`] pushes and pulls again when a local write
/// landed between its push and its pull.
pub const SYNC_ROUNDS: u32 = 3;

/// What [`sync_with`] did: its last push and its pull.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct SyncWithReport {
    /// The push.
    pub push: crate::SyncReport,
    /// The pull.
    pub pull: PullReport,
}

/// Syncs `store` both ways with the database at `url`: pushes its changes
/// (conflicts resolved by the rule, reported in `push.conflicts`), then
/// pulls. When a local write lands between the two and the pull refuses to
/// overwrite it, pushes and pulls again (up to [`SYNC_ROUNDS`] times).
pub async fn sync_with(
    store: &Store,
    with: &Remote,
    options: &SyncOptions,
) -> Result<SyncWithReport> {
    let mut round = 0;
    loop {
        round += 1;
        let push = crate::push(store, with, options).await?;
        match pull(store, with, options).await {
            Ok(pull) => return Ok(SyncWithReport { push, pull }),
            Err(crate::Error::Store(nexus_core::Error::Conflict { .. })) if round < SYNC_ROUNDS => {
            }
            Err(e) => return Err(e),
        }
    }
}
