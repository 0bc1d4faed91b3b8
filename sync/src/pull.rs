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

pub use nexus_core::PullReport;
pub use nexus_core::protocol::SYNC_ROUNDS;
use nexus_core::{Changes, Feed, FeedPage, SnapshotCursor, SnapshotSource, Store};
use nexus_postgres::{PgUrl, StatementCache, migrate};
use serde::Serialize;

use crate::error::Result;
use crate::http::HttpHub;
use crate::remote::Remote;
use crate::replicate::{SyncOptions, hub_id, watermark, with_retries};

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

/// A database's feed, read directly.
struct PgFeed<'a> {
    client: &'a mut tokio_postgres::Client,
    cache: StatementCache,
    watermark: i64,
}

impl Feed for PgFeed<'_> {
    type Error = crate::Error;

    async fn page(
        &mut self,
        after: i64,
        within: Option<&SnapshotCursor>,
        max_rows: usize,
    ) -> Result<(FeedPage, i64)> {
        let page = nexus_pg::read_page(self.client, &self.cache, after, within, max_rows).await?;
        Ok((page, self.watermark))
    }
}

/// A sync server's feed of the token's tenant.
struct ServerFeed<'a> {
    hub: &'a HttpHub,
    /// The database whose feed the store's position counts in.
    hub_id: &'a str,
    /// `hub_id`, when the server checks what a request names.
    named: Option<&'a str>,
    source: String,
}

impl Feed for ServerFeed<'_> {
    type Error = crate::Error;

    async fn page(
        &mut self,
        after: i64,
        within: Option<&SnapshotCursor>,
        max_rows: usize,
    ) -> Result<(FeedPage, i64)> {
        let p = self
            .hub
            .pull(&self.source, after, within, max_rows, self.named)
            .await?;
        self.hub.check_hub(self.hub_id, &p.hub_id)?;
        let watermark = p.watermark;
        self.hub.pulled(&self.source, watermark);
        Ok((p.into_page(), watermark))
    }
}

/// A sync server's snapshot of the token's tenant.
struct ServerSnapshot<'a> {
    hub: &'a HttpHub,
    /// The database whose snapshot the store loads.
    hub_id: &'a str,
    /// `hub_id`, when the server checks what a request names.
    named: Option<&'a str>,
}

impl SnapshotSource for ServerSnapshot<'_> {
    type Error = crate::Error;

    async fn page(
        &mut self,
        after: Option<&SnapshotCursor>,
        max_rows: usize,
    ) -> Result<(Changes, Option<SnapshotCursor>)> {
        let p = self.hub.snapshot(after, max_rows, self.named).await?;
        self.hub.check_hub(self.hub_id, &p.hub_id)?;
        Ok((p.changes, p.next))
    }
}

/// The progress callback of `options`, as the page loop takes it.
fn progress(options: &SyncOptions) -> impl FnMut(u64) + '_ {
    move |rows| {
        if let Some(p) = &options.progress {
            p(rows, rows);
        }
    }
}

async fn pull_once(store: &Store, source: &PgUrl, options: &SyncOptions) -> Result<PullReport> {
    let started = Instant::now();
    let mut client = source.connect(crate::APPLICATION_NAME, None).await?;
    migrate(&mut client).await?;
    let hub = hub_id(&client).await?;
    let own = store.snapshot().await?.source_id().to_string();
    let pushed_through = watermark(
        &nexus_postgres::Cached::new(&client, &Default::default()),
        &own,
    )
    .await?;
    let mut report = PullReport {
        from: store.pull_position(&hub).await?,
        hub_id: hub,
        ..PullReport::default()
    };
    report.to = report.from;
    // Into an empty store: one snapshot of the whole database, committed
    // chunk by chunk (or the rest of one that was cut), then the feed from
    // the position it covers.
    if let Some(mut bulk) = store.begin_bulk_pull(&report.hub_id).await? {
        let after = bulk.resume_after().cloned();
        let mut progress = progress(options);
        let through =
            nexus_pg::read_snapshot(&mut client, options.window_rows, after.as_ref(), |c| {
                bulk.load(&c)?;
                progress(bulk.rows());
                Ok(())
            })
            .await?;
        bulk.finish(through, &mut report)?;
    }
    let mut feed = PgFeed {
        client: &mut client,
        cache: StatementCache::default(),
        watermark: pushed_through,
    };
    store
        .apply_feed(
            &mut feed,
            &mut report,
            options.window_rows,
            progress(options),
        )
        .await?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

async fn pull_http_once(store: &Store, hub: &HttpHub, options: &SyncOptions) -> Result<PullReport> {
    let started = Instant::now();
    let source = store.snapshot().await?.source_id().to_string();
    // The database's id as this client heard it last (from `/v1/state`,
    // asked by this round's push or an earlier one); every page says its
    // own, and one of another database stops the pull before it is applied.
    let state = hub.known_state(&source).await?;
    let hub_id = state.hub_id;
    // Named in each request to a server that checks it: one in front of
    // another database now refuses the request (409 `hub_changed`).
    let named = state.checks_hub.then_some(hub_id.as_str());
    let mut report = PullReport {
        from: store.pull_position(&hub_id).await?,
        hub_id: hub_id.clone(),
        ..PullReport::default()
    };
    report.to = report.from;
    // Into an empty store: the tenant's snapshot, page by page (or the
    // rest of one that was cut), then the feed.
    store
        .load_snapshot(
            &mut ServerSnapshot {
                hub,
                hub_id: &hub_id,
                named,
            },
            &mut report,
            options.window_rows,
            progress(options),
        )
        .await?;
    let mut feed = ServerFeed {
        hub,
        hub_id: &hub_id,
        named,
        source,
    };
    store
        .apply_feed(
            &mut feed,
            &mut report,
            options.window_rows,
            progress(options),
        )
        .await?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// What [`sync_with`] did: its last push (with the conflict copies of
/// every round's push) and its pull.
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
    // The conflict copies of earlier rounds' pushes: made and committed,
    // so reported with the last round's.
    let mut earlier = Vec::new();
    loop {
        round += 1;
        let mut push = crate::push(store, with, options).await?;
        match pull(store, with, options).await {
            Ok(pull) => {
                earlier.append(&mut push.conflicts);
                push.conflicts = earlier;
                return Ok(SyncWithReport { push, pull });
            }
            Err(crate::Error::Store(nexus_core::Error::Conflict { .. })) if round < SYNC_ROUNDS => {
                earlier.append(&mut push.conflicts);
            }
            Err(e) => return Err(e),
        }
    }
}
