//! Applying a change file ([`nexus_core::ChangeFile`]) to PostgreSQL, with
//! the same rules as a sync run of its source: one transaction, the same
//! watermark per source in `nexus_sync_state`, exactly once and in order.

use std::time::Instant;

use nexus_core::ChangeFile;
use uuid::Uuid;

use crate::convert::{self, Batch};
use crate::error::{Error, Result};
use crate::replicate::{
    SyncMode, SyncOptions, SyncReport, batch_len, begin_source, make_live, record_watermark,
    upsert_batch, watermark, with_retries,
};
use nexus_postgres::{PgUrl, migrate};

/// Applies `file` to the database at `target` (migrating its schema first),
/// as an incremental sync run of the file's source would: rows upserted by
/// primary key and removals applied in one transaction that also moves the
/// source's watermark to `through`. A file the target already has
/// (`through` at or before the watermark) changes nothing
/// ([`SyncMode::UpToDate`]); one that starts after the watermark is refused
/// ([`nexus_core::Error::ChangeFileGap`], the same error as the embedded import's). Change files and sync runs of one source can
/// be mixed. Retryable failures are retried as [`crate::Replicator::sync`] does.
pub async fn apply_change_file(
    target: &PgUrl,
    file: &ChangeFile,
    options: &SyncOptions,
) -> Result<SyncReport> {
    file.validate()?;
    let mut problems = Vec::new();
    let batch = convert::batch(file.changes.clone(), &mut problems);
    if let Some(first) = problems.into_iter().next() {
        return Err(Error::Conversion {
            table: "change file",
            problem: first,
        });
    }
    with_retries(options, || apply_once(target, file, &batch, options)).await
}

async fn apply_once(
    target: &PgUrl,
    file: &ChangeFile,
    batch: &Batch,
    options: &SyncOptions,
) -> Result<SyncReport> {
    let started = Instant::now();
    let c = &file.changes;
    let mut client = target.connect(crate::APPLICATION_NAME, None).await?;
    migrate(&mut client).await?;
    let tx = begin_source(&mut client, &file.source_id).await?;
    crate::replicate::share_bulk_lock(&tx).await?;
    let at = watermark(&tx, &file.source_id).await?;
    let mut report = SyncReport::new(&file.source_id, at, c.through);
    if c.through <= at {
        report.to_seq = at;
        tx.commit().await.map_err(Error::pg("committing"))?;
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    if c.after > at {
        return Err(Error::Store(nexus_core::Error::ChangeFileGap {
            source_id: file.source_id.clone(),
            applied: at,
            after: c.after,
            through: c.through,
        }));
    }
    report.mode = SyncMode::Incremental;
    let mut live_ids: Vec<Uuid> = Vec::new();
    // The conflict rule, as for a push of a store that never pulled: its
    // base is the empty database.
    let mut batch = batch.clone();
    let mut held = crate::resolve::Held::new();
    let copies = crate::resolve::resolve(&tx, &file.source_id, 0, &mut batch, &mut held).await?;
    crate::resolve::none_held(&held)?;
    upsert_batch(
        &tx,
        &file.source_id,
        &batch,
        &mut report.tables,
        &mut live_ids,
    )
    .await?;
    report
        .conflicts
        .extend(crate::resolve::finish(&tx, copies).await?);
    report
        .conflicts
        .extend(make_live(&tx, &file.source_id, &live_ids).await?);
    record_watermark(&tx, &file.source_id, c.through, "change_file").await?;
    tx.commit()
        .await
        .map_err(Error::pg("committing the change file"))?;
    if let Some(p) = &options.progress {
        let rows = batch_len(&batch);
        p(rows, rows);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
