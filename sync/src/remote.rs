//! Where a store pushes to and pulls from: a PostgreSQL database directly,
//! or a sync server (`nexus serve`) in front of one.

use std::sync::Mutex;
use std::time::Instant;

use nexus_core::{ChangeFile, Changes, Store};

use crate::error::{Error, Result};
use crate::http::{HttpHub, is_http_url};
use crate::replicate::{
    Read, Replicator, SyncMode, SyncOptions, SyncReport, reader_gone, spawn_reader, with_retries,
};
use nexus_postgres::PgUrl;

/// A database (`postgresql://...`) or a sync server (`http(s)://...`).
#[derive(Debug, Clone)]
pub enum Remote {
    /// PostgreSQL, reached directly.
    Postgres(Box<PgUrl>),
    /// A sync server, with its token.
    Server(HttpHub),
}

impl Remote {
    /// The remote that `url` names; `token` is for a sync server (a
    /// database URL carries its own credentials).
    pub fn parse(url: &str, token: Option<String>) -> Result<Remote> {
        if is_http_url(url) {
            Ok(Remote::Server(HttpHub::new(url, token)?))
        } else {
            Ok(Remote::Postgres(Box::new(PgUrl::parse(url)?)))
        }
    }
}

impl From<PgUrl> for Remote {
    fn from(url: PgUrl) -> Remote {
        Remote::Postgres(Box::new(url))
    }
}

impl std::fmt::Display for Remote {
    /// The URL without its password (a server's token is never in it).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Remote::Postgres(url) => url.fmt(f),
            Remote::Server(hub) => f.write_str(hub.url()),
        }
    }
}

/// Pushes the store's changes that `to` has not applied (the conflict rule
/// decides where both sides changed), retrying retryable failures.
pub async fn push(store: &Store, to: &Remote, options: &SyncOptions) -> Result<SyncReport> {
    match to {
        Remote::Postgres(url) => {
            Replicator::new(store.clone(), (**url).clone())
                .with_options(options.clone())
                .sync()
                .await
        }
        Remote::Server(hub) => {
            let committed = Mutex::new(None);
            with_retries(options, || push_http_once(store, hub, options, &committed)).await
        }
    }
}

fn as_changes(c: Changes) -> Result<Changes> {
    Ok(c)
}

/// One push to a sync server: the local changes after the server's
/// watermark (as the client's last push left it, else asked:
/// [`HttpHub::known_state`]), read from one snapshot, one window per
/// request (each applied exactly once by the server, so a push cut between
/// windows resumes where the server stopped). `committed` carries what the windows the
/// server applied hold across attempts: a window applied stays applied when
/// a later one fails, and its rows and conflict copies belong in the run's
/// report.
async fn push_http_once(
    store: &Store,
    hub: &HttpHub,
    options: &SyncOptions,
    committed: &Mutex<Option<SyncReport>>,
) -> Result<SyncReport> {
    let started = Instant::now();
    let source = store.snapshot().await?.source_id().to_string();
    let state = hub.known_state(&source).await?;
    // Only pulls since the server's watermark: no row to send, and the push
    // waits for one that has (`only_pulled_after`); the watermark stays.
    // Asked before the reader below takes a reading connection of its own.
    if store.snapshot().await?.only_pulled_after(state.watermark)? {
        let mut report = SyncReport::new(&source, state.watermark, state.watermark);
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    let (header, start, mut windows) = spawn_reader(
        store.clone(),
        options.window_rows,
        true,
        options.progress.is_some(),
        state.hub_id.clone(),
        as_changes,
    );
    let (source_id, head, base) = header.await.map_err(|_| reader_gone())??;
    if state.watermark > head {
        return Err(Error::TargetAhead {
            target: state.watermark,
            source_seq: head,
        });
    }
    let finish = |mode: Option<SyncMode>| {
        let mut guard = committed.lock().expect("not poisoned");
        let report =
            guard.get_or_insert_with(|| SyncReport::new(&source_id, state.watermark, head));
        report.to_seq = head;
        if let Some(mode) = mode {
            report.mode = mode;
        }
        report.seconds = started.elapsed().as_secs_f64();
        report.clone()
    };
    if state.watermark == head {
        return Ok(finish(None));
    }
    finish(Some(SyncMode::Incremental));
    start.send(state.watermark).map_err(|_| reader_gone())?;
    let total = match windows.recv().await {
        Some(Ok(Read::Total(t))) => t,
        Some(Err(e)) => return Err(e),
        _ => return Err(reader_gone()),
    };
    let mut pushed = state.watermark;
    let mut done = 0u64;
    let mut next = windows.recv().await;
    loop {
        let changes = match next {
            Some(Ok(Read::Window(c))) => c,
            Some(Ok(Read::Done)) => break,
            Some(Err(e)) => return Err(e),
            Some(Ok(Read::Total(_))) | None => return Err(reader_gone()),
        };
        next = windows.recv().await;
        let last = matches!(next, Some(Ok(Read::Done)));
        // A window of pulled rows only is not sent on its own: the next
        // one covers its range too.
        if changes.is_empty() && !last {
            continue;
        }
        let rows = changes.len() as u64;
        let file = ChangeFile {
            source_id: source_id.clone(),
            changes: Changes {
                after: pushed,
                ..changes
            },
        };
        let applied = hub.push(&file, base, &state).await?;
        {
            let mut guard = committed.lock().expect("not poisoned");
            let report = guard.as_mut().expect("set before the first window");
            for (mine, theirs) in report.tables.iter_mut().zip(&applied.tables) {
                mine.rows += theirs.rows;
                mine.bytes += theirs.bytes;
                mine.seconds += theirs.seconds;
            }
            report.conflicts.extend(applied.conflicts);
        }
        pushed = file.changes.through;
        done += rows;
        if let Some(p) = &options.progress {
            p(done, total);
        }
    }
    Ok(finish(None))
}
