//! Applying a change file ([`nexus_core::ChangeFile`]) to PostgreSQL, with
//! the same rules as a sync run of its source: one transaction, the same
//! watermark per source in `nexus_sync_state`, exactly once and in order.

use std::time::Instant;

use nexus_core::{ChangeFile, Seen};
use uuid::Uuid;

use crate::convert::{self, Batch};
use crate::error::{Error, Result};
use crate::pg_tables::Landing;
use crate::replicate::Tx;
use crate::replicate::{
    SyncMode, SyncOptions, SyncReport, batch_len, begin_source, make_live, record_watermark,
    source_watermark, upsert_batch, with_retries,
};
use nexus_postgres::{PgClient, PgUrl, StatementCache, migrate};

/// Applies `file` to the database at `target` (migrating its schema first),
/// as an incremental sync run of the file's source would, but with the
/// conflict rule of a change file (by version numbers,
/// [`nexus_core::Seen::Unknown`]): rows upserted by
/// primary key and removals applied in one transaction that also moves the
/// source's watermark to `through`. A file the target already has
/// (`through` at or before the watermark) changes nothing
/// ([`SyncMode::UpToDate`]); one that starts after the watermark is refused
/// ([`nexus_core::Error::ChangeFileGap`], the same error as the embedded import's). Change files and sync runs of one source can
/// be mixed. Retryable failures are retried as [`crate::Replicator::sync`] does.
pub async fn apply_change_file(
    target: &PgUrl,
    file: ChangeFile,
    options: &SyncOptions,
) -> Result<SyncReport> {
    let (range, batch) = checked_batch(file)?;
    with_retries(options, || async {
        let mut client = target.connect(crate::APPLICATION_NAME, None).await?;
        migrate(&mut client).await?;
        let cache = StatementCache::default();
        // The conflict rule, knowing nothing of what the file's writer had
        // pulled: as an embedded store's import applies it.
        let (report, _) = apply_once(
            &mut client,
            &cache,
            &range,
            batch.clone(),
            How {
                seen: Seen::Unknown,
                tenant: None,
                own: false,
            },
        )
        .await?;
        if let Some(p) = &options.progress {
            let rows = batch_len(&batch);
            p(rows, rows);
        }
        Ok(report)
    })
    .await
}

/// Applies a push that arrived as a change file (a sync server's): as
/// [`apply_change_file`], on `client` (a pooled connection, already
/// migrated, with its prepared statements), once (a retryable failure is
/// returned, nothing applied), with the conflict rule
/// against what the source had pulled from this database (`base`; `None`:
/// nothing says, as for a change file), and,
/// with `tenant`, only if every row belongs to that tenant
/// ([`Error::WrongTenant`] otherwise, nothing applied). The file's rows
/// are converted in place, not copied (a push can be large).
pub async fn apply_push(
    client: &mut PgClient,
    file: ChangeFile,
    base: Option<i64>,
    tenant: Option<&str>,
) -> Result<PushApplied> {
    let (range, batch) = checked_batch(file)?;
    let seen = base.map_or(Seen::Unknown, Seen::Through);
    let (client, cache) = client.parts();
    let how = How {
        seen,
        tenant,
        own: true,
    };
    let (report, own_transaction) = apply_once(client, cache, &range, batch, how).await?;
    Ok(PushApplied {
        report,
        own_transaction,
    })
}

/// What [`apply_push`] did.
#[derive(Debug)]
pub struct PushApplied {
    /// What a sync run reports.
    pub report: SyncReport,
    /// The push's transaction when every row it wrote is the source's own
    /// (`nexus_pg::OWN_TRANSACTION`): the source's pulls may pass over it
    /// unread (`nexus_pg::read_tenant_page`).
    pub own_transaction: Option<nexus_pg::OwnTransaction>,
}

/// What an apply needs of a change file besides its rows.
struct Range {
    source_id: String,
    after: i64,
    through: i64,
}

/// The file's rows in PostgreSQL's types, after checking the file.
fn checked_batch(file: ChangeFile) -> Result<(Range, Batch)> {
    file.validate()?;
    let range = Range {
        source_id: file.source_id,
        after: file.changes.after,
        through: file.changes.through,
    };
    let mut problems = Vec::new();
    let batch = convert::batch(file.changes, &mut problems);
    match problems.into_iter().next() {
        None => Ok((range, batch)),
        Some(first) => Err(Error::Conversion {
            table: "change file",
            problem: first,
        }),
    }
}

/// How [`apply_once`] applies: the conflict rule's knowledge of what the
/// source had pulled, the tenant every row must belong to, and whether to
/// find out if the transaction wrote only the source's own rows.
struct How<'a> {
    seen: Seen,
    tenant: Option<&'a str>,
    own: bool,
}

/// Applies the file's rows in one transaction; with the report, the
/// transaction when `how.own` and every row it wrote is the source's
/// (`nexus_pg::OWN_TRANSACTION`).
async fn apply_once(
    client: &mut tokio_postgres::Client,
    cache: &StatementCache,
    file: &Range,
    mut batch: Batch,
    How { seen, tenant, own }: How<'_>,
) -> Result<(SyncReport, Option<nexus_pg::OwnTransaction>)> {
    let started = Instant::now();
    // The bulk-load lock shared with the source's, before reading any
    // table: a bulk load holding it alone locks them.
    let tx = begin_source(client, cache, &file.source_id, true).await?;
    let db = Tx::new(&tx, cache);
    // The tenant's check and the watermark sent together (pipelined); a
    // row of another tenant is the error that counts.
    let checked = async {
        match tenant {
            Some(tenant) => check_tenant(&db, &batch, tenant).await,
            None => Ok(()),
        }
    };
    let (checked, at) = tokio::join!(checked, source_watermark(&db, &file.source_id, tenant));
    checked?;
    let at = at?;
    let mut report = SyncReport::new(&file.source_id, at, file.through);
    if file.through <= at {
        report.to_seq = at;
        tx.commit().await.map_err(Error::pg("committing"))?;
        report.seconds = started.elapsed().as_secs_f64();
        return Ok((report, None));
    }
    // A sync client's push (it says what it pulled: `Seen::Through`)
    // starts at the watermark it was told or its last push left; one that
    // starts before it would apply again rows applied already (the client
    // pushed by another way since, or its idea of the watermark is old):
    // refused, and the client asks again. A change file may overlap what
    // is applied, as an embedded import takes it.
    if matches!(seen, Seen::Through(_)) && file.after < at {
        return Err(Error::PushBehind {
            source_id: file.source_id.clone(),
            applied: at,
            after: file.after,
        });
    }
    if file.after > at {
        return Err(Error::Store(nexus_core::Error::ChangeFileGap {
            source_id: file.source_id.clone(),
            applied: at,
            after: file.after,
            through: file.through,
        }));
    }
    report.mode = SyncMode::Incremental;
    let mut live_ids: Vec<Uuid> = Vec::new();
    let mut held = crate::resolve::Held::new();
    let copies = crate::resolve::resolve(&db, &file.source_id, seen, &mut batch, &mut held).await?;
    crate::resolve::none_held(&db, &file.source_id, &held).await?;
    // One batch, the whole run: its files land live at once unless the
    // rule moves a file here to a pushed path after them.
    let how = if copies.moves_nothing() {
        Landing::Live
    } else {
        Landing::Hidden
    };
    upsert_batch(
        &db,
        &file.source_id,
        &batch,
        &mut report.tables,
        &mut live_ids,
        how,
    )
    .await?;
    report
        .conflicts
        .extend(crate::resolve::finish(&db, copies, &mut live_ids).await?);
    report
        .conflicts
        .extend(make_live(&db, &file.source_id, seen, &live_ids).await?);
    // Sent together (pipelined): the watermark, and whether the rows
    // written are all the source's own.
    let watermark = record_watermark(&db, &file.source_id, file.through, "change_file", tenant);
    let written = async {
        if !own {
            return Ok::<_, Error>(None);
        }
        let row = db
            .query_one(nexus_pg::OWN_TRANSACTION.as_str(), &[&file.source_id])
            .await
            .map_err(Error::pg("reading what the push wrote"))?;
        Ok(nexus_pg::own_transaction(&row))
    };
    let (watermark, written) = tokio::join!(watermark, written);
    watermark?;
    let own_transaction = written?;
    tx.commit()
        .await
        .map_err(Error::pg("committing the change file"))?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok((report, own_transaction))
}

/// Refuses the rows of `b` unless every row belongs to `tenant`: files
/// and chunks by their tenant, versions, metadata and metadata removals by
/// their file's (in the push, else in the database), chunk removals by
/// their key. A file id, a version id or a version's parent that the
/// database holds for another tenant is refused too.
async fn check_tenant(tx: &Tx<'_, '_>, b: &Batch, tenant: &str) -> Result<()> {
    let wrong = |found: &str| Error::WrongTenant {
        allowed: tenant.to_string(),
        found: found.to_string(),
    };
    if let Some(f) = b.files.iter().find(|f| f.row.tenant_id != tenant) {
        return Err(wrong(&f.row.tenant_id));
    }
    if let Some(ch) = b.chunks.iter().find(|ch| ch.row.tenant_id != tenant) {
        return Err(wrong(&ch.row.tenant_id));
    }
    let mut ids: Vec<&str> = Vec::new();
    for t in &b.tombstones {
        match t.row.table_name.as_str() {
            "content_chunks" if t.row.key1 != tenant => return Err(wrong(&t.row.key1)),
            "file_metadata" => ids.push(&t.row.key1),
            _ => {}
        }
    }
    ids.extend(b.files.iter().map(|f| f.row.path_id.as_str()));
    ids.extend(b.versions.iter().map(|v| v.row.path_id.as_str()));
    ids.extend(b.metadata.iter().map(|m| m.row.path_id.as_str()));
    ids.sort_unstable();
    ids.dedup();
    let ids: Vec<Uuid> = ids.iter().filter_map(|s| Uuid::parse_str(s).ok()).collect();
    // Versions and their parents, by id: a version id of another tenant's
    // would move its row here; a parent of another tenant's would bring
    // its rows into this tenant's pulls (`nexus_pg::read_tenant_page`).
    let mut versions: Vec<Uuid> = b
        .versions
        .iter()
        .flat_map(|v| std::iter::once(&v.row.version_id).chain(&v.row.parent_version_id))
        .filter_map(|s| Uuid::parse_str(s).ok())
        .collect();
    versions.sort_unstable();
    versions.dedup();
    // The files of those the database holds are checked with the pushed
    // files, in one statement (planned once: `plan_once!`).
    if ids.is_empty() && versions.is_empty() {
        return Ok(());
    }
    if let Some(row) = tx
        .query_opt(
            "SELECT tenant_id FROM file_paths WHERE path_id = ANY($1::uuid[] || \
             ARRAY(SELECT path_id FROM version_history WHERE version_id = ANY($3))) \
             AND tenant_id <> $2 LIMIT 1",
            &[&ids, &tenant, &versions],
        )
        .await
        .map_err(Error::pg("checking the tenant of the changes"))?
    {
        return Err(wrong(&row.get::<_, String>(0)));
    }
    Ok(())
}
