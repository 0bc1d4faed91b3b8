//! The change feed of a PostgreSQL store: every row that changed after a
//! position, whoever wrote it (the store, a sync run, a change file), in
//! pages, never missing a transaction that was still running when an
//! earlier page was read.
//!
//! Every row's `change_seq` is the id of the transaction that last wrote it
//! (`pg_current_xact_id()`, the column's default; every update sets it
//! again). Ids are handed out when transactions start writing, not when
//! they commit, so a lower id can commit after a higher one was read. A
//! page therefore never reaches past `xmin - 1`, where `xmin` is the oldest
//! transaction id still running in the page's own snapshot
//! (`pg_snapshot_xmin(pg_current_snapshot())`): every transaction below it
//! had ended when the snapshot was taken, so the snapshot sees all their
//! committed rows, and any later write gets an id above the snapshot's
//! `xmax`, so it lands in a later page. ARCHITECTURE.md has the argument in
//! full.

use nexus_core::{
    Changes, ChunkRow, FileRow, MetadataRow, Origin, Result, TombstoneRow, VersionRow,
    canonical_json,
};
use nexus_postgres::Cached;
use serde_json::Value;
use tokio_postgres::{GenericClient, Row};

use crate::pg_err;

/// One page of the feed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedPage {
    /// The rows of every transaction with an id in `(changes.after,
    /// changes.through]`, each row in its latest state, in `change_seq`
    /// order per table. `changes.through` is the position to ask from next.
    pub changes: Changes,
    /// Whether the page reaches the newest position that was safe to read
    /// (`false`: more pages are ready now).
    pub caught_up: bool,
}

/// `(table, its columns in the order of the core row type)`; times as
/// microseconds since the epoch, ids as text.
const MICROS: &str = "(extract(epoch FROM {c}) * 1000000)::int8";

fn micros(column: &str) -> String {
    MICROS.replace("{c}", column)
}

fn files_sql(range: bool) -> String {
    format!(
        "SELECT path_id::text, tenant_id, virtual_path, backend_id, physical_path, size_bytes, content_hash, \
         file_type, {}, {}, {}, current_version::int8, change_seq, origin_id, origin_seq FROM file_paths \
         {}",
        micros("created_at"),
        micros("updated_at"),
        micros("deleted_at"),
        order(range, "path_id")
    )
}

fn metadata_sql(range: bool) -> String {
    format!(
        "SELECT path_id::text, key, value, {}, {}, change_seq, origin_id, origin_seq FROM file_metadata{}",
        micros("created_at"),
        micros("updated_at"),
        order(range, "path_id, key")
    )
}

fn versions_sql(range: bool) -> String {
    format!(
        "SELECT version_id::text, path_id::text, version_number::int8, backend_id, physical_path, content_hash, \
         size_bytes, mime_type, parent_version_id::text, source_type, change_reason, created_by, {}, change_seq, \
         origin_id, origin_seq FROM version_history{}",
        micros("created_at"),
        order(range, "version_id")
    )
}

fn chunks_sql(range: bool) -> String {
    format!(
        "SELECT tenant_id, content_hash, size_bytes, storage_path, ref_count, {}, {}, {}, change_seq, \
         origin_id, origin_seq FROM content_chunks{}",
        micros("created_at"),
        micros("last_accessed_at"),
        micros("protected_until"),
        order(range, "tenant_id, content_hash")
    )
}

fn tombstones_sql(range: bool) -> String {
    format!(
        "SELECT table_name, key1, key2, {}, change_seq, origin_id, origin_seq FROM tombstones{}",
        micros("deleted_at"),
        order(range, "table_name, key1, key2")
    )
}

/// The tail of a table's query: the feed's range `(after, through]` in
/// stamp order, or (a snapshot) every row in key order.
fn order(range: bool, key: &str) -> String {
    if range {
        format!(" WHERE change_seq > $1 AND change_seq <= $2 ORDER BY change_seq, {key}")
    } else {
        format!(" ORDER BY {key}")
    }
}

/// The `change_seq` of the first `limit` rows after `after`, all tables
/// merged in order (an index scan per table, merged; it stops at `limit`).
const FIRST_STAMPS: &str = "SELECT s FROM ( \
     (SELECT change_seq AS s FROM file_paths WHERE change_seq > $1 AND change_seq <= $2 ORDER BY change_seq LIMIT $3) \
     UNION ALL (SELECT change_seq FROM file_metadata WHERE change_seq > $1 AND change_seq <= $2 ORDER BY change_seq LIMIT $3) \
     UNION ALL (SELECT change_seq FROM version_history WHERE change_seq > $1 AND change_seq <= $2 ORDER BY change_seq LIMIT $3) \
     UNION ALL (SELECT change_seq FROM content_chunks WHERE change_seq > $1 AND change_seq <= $2 ORDER BY change_seq LIMIT $3) \
     UNION ALL (SELECT change_seq FROM tombstones WHERE change_seq > $1 AND change_seq <= $2 ORDER BY change_seq LIMIT $3) \
     ) AS t ORDER BY s LIMIT $3";

fn origin(r: &Row, at: usize) -> Option<Origin> {
    let source_id: Option<String> = r.get(at);
    let seq: Option<i64> = r.get(at + 1);
    Some(Origin {
        source_id: source_id?,
        seq: seq?,
    })
}

/// Reads the page after position `after` (0: from the beginning): the
/// rows of whole transactions, about `max_rows` of them (more when one
/// transaction alone has more). Runs in one read-only repeatable-read
/// transaction on `client`, which must not be in a transaction already.
pub async fn read_page(
    client: &mut tokio_postgres::Client,
    cache: &nexus_postgres::StatementCache,
    after: i64,
    max_rows: usize,
) -> Result<FeedPage> {
    let tx = crate::ops::begin_snapshot(client, "starting a read of the change feed").await?;
    let db = Cached::new(&tx, cache);
    let page = read_in(&db, after, max_rows).await?;
    tx.commit()
        .await
        .map_err(pg_err("ending a read of the change feed"))?;
    // Make the page's bound durable before handing it out: a transaction id
    // that never reached the disk can be handed out again after a crash,
    // and a commit made with synchronous_commit off can be lost. This
    // commit takes an id above every id of the page and flushes the WAL up
    // to it, so neither can happen to anything the page covers.
    make_durable(client).await?;
    Ok(page)
}

async fn read_in(
    db: &Cached<'_, impl GenericClient + Sync>,
    after: i64,
    max_rows: usize,
) -> Result<FeedPage> {
    // Everything below the oldest running transaction has ended.
    let bounds = db
        .query_one(
            "SELECT pg_snapshot_xmin(s)::text::int8 - 1, pg_snapshot_xmax(s)::text::int8 \
             FROM pg_current_snapshot() AS s",
            &[],
        )
        .await
        .map_err(pg_err("reading the feed's safe position"))?;
    let (safe, next): (i64, i64) = (bounds.get(0), bounds.get(1));
    if after >= next {
        return Err(nexus_core::Error::InvalidArgument {
            name: "feed position",
            value: after.to_string(),
            reason: format!(
                "is ahead of this server, whose next transaction id is {next}: the database was \
                 restored from a copy or failed over to a standby that had not received every \
                 transaction; read the feed again from 0"
            ),
        });
    }
    if safe <= after {
        return Ok(FeedPage {
            changes: Changes {
                after,
                through: after,
                ..Changes::default()
            },
            caught_up: true,
        });
    }
    let limit = i64::try_from(max_rows.max(1)).unwrap_or(i64::MAX - 1) + 1;
    let stamps: Vec<i64> = db
        .query(FIRST_STAMPS, &[&after, &safe, &limit])
        .await
        .map_err(pg_err("paging the change feed"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Whole transactions only: stop before the transaction of the first row
    // past the limit, unless that is the first transaction of the page.
    let through = if (stamps.len() as i64) < limit {
        safe
    } else {
        let beyond = stamps[stamps.len() - 1];
        if beyond > stamps[0] {
            beyond - 1
        } else {
            beyond
        }
    };
    let range: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&after, &through];
    let q =
        async |sql: String, what: &'static str| db.query(&sql, &range).await.map_err(pg_err(what));
    let files = q(files_sql(true), "reading changed files").await?;
    let metadata = q(metadata_sql(true), "reading changed metadata").await?;
    let versions = q(versions_sql(true), "reading changed versions").await?;
    let chunks = q(chunks_sql(true), "reading changed chunks").await?;
    let tombstones = q(tombstones_sql(true), "reading removals").await?;
    Ok(FeedPage {
        changes: Changes {
            after,
            through,
            files: files.iter().map(file_row).collect(),
            metadata: metadata.iter().map(metadata_row).collect(),
            versions: versions.iter().map(version_row).collect(),
            chunks: chunks.iter().map(chunk_row).collect(),
            tombstones: tombstones.iter().map(tombstone_row).collect(),
        },
        caught_up: through == safe,
    })
}

fn file_row(r: &Row) -> FileRow {
    FileRow {
        path_id: r.get(0),
        tenant_id: r.get(1),
        virtual_path: r.get(2),
        backend_id: r.get(3),
        physical_path: r.get(4),
        size_bytes: r.get(5),
        content_hash: r.get(6),
        file_type: r.get(7),
        created_at: r.get(8),
        updated_at: r.get(9),
        deleted_at: r.get(10),
        current_version: r.get(11),
        change_seq: r.get(12),
        origin: origin(r, 13),
    }
}

fn metadata_row(r: &Row) -> MetadataRow {
    MetadataRow {
        path_id: r.get(0),
        key: r.get(1),
        value: canonical_json(&r.get::<_, Value>(2)),
        created_at: r.get(3),
        updated_at: r.get(4),
        change_seq: r.get(5),
        origin: origin(r, 6),
    }
}

fn version_row(r: &Row) -> VersionRow {
    VersionRow {
        version_id: r.get(0),
        path_id: r.get(1),
        version_number: r.get(2),
        backend_id: r.get(3),
        physical_path: r.get(4),
        content_hash: r.get(5),
        size_bytes: r.get(6),
        mime_type: r.get(7),
        parent_version_id: r.get(8),
        source_type: r.get(9),
        change_reason: r.get(10),
        created_by: r.get(11),
        created_at: r.get(12),
        change_seq: r.get(13),
        origin: origin(r, 14),
    }
}

fn chunk_row(r: &Row) -> ChunkRow {
    ChunkRow {
        tenant_id: r.get(0),
        content_hash: r.get(1),
        size_bytes: r.get(2),
        storage_path: r.get(3),
        ref_count: r.get(4),
        created_at: r.get(5),
        last_accessed_at: r.get(6),
        protected_until: r.get(7),
        change_seq: r.get(8),
        origin: origin(r, 9),
    }
}

fn tombstone_row(r: &Row) -> TombstoneRow {
    TombstoneRow {
        table_name: r.get(0),
        key1: r.get(1),
        key2: r.get(2),
        deleted_at: r.get(3),
        change_seq: r.get(4),
        origin: origin(r, 5),
    }
}

/// Puts rows of one table into a chunk.
type Fill = fn(&[Row], &mut Changes);

/// Reads every row of the database from one snapshot, for a first pull
/// into an empty store: hands `sink` chunks of about `max_rows` rows (one
/// table per chunk, tables in dependency order, through server-side
/// portals, so memory holds one chunk), and returns the feed position the
/// snapshot covers (every transaction up to it is in the snapshot; rows of
/// later transactions that it happens to hold come again from the feed,
/// where applying them again changes nothing).
pub async fn read_snapshot(
    client: &mut tokio_postgres::Client,
    max_rows: usize,
    mut sink: impl FnMut(Changes) -> Result<()>,
) -> Result<i64> {
    let tx = crate::ops::begin_snapshot(client, "starting a snapshot read").await?;
    let safe: i64 = tx
        .query_one(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::int8 - 1",
            &[],
        )
        .await
        .map_err(pg_err("reading the snapshot's position"))?
        .get(0);
    let chunk = i32::try_from(max_rows.max(1)).unwrap_or(i32::MAX);
    let tables: [(String, Fill); 5] = [
        (files_sql(false), |rows, c| {
            c.files = rows.iter().map(file_row).collect()
        }),
        (versions_sql(false), |rows, c| {
            c.versions = rows.iter().map(version_row).collect()
        }),
        (metadata_sql(false), |rows, c| {
            c.metadata = rows.iter().map(metadata_row).collect()
        }),
        (chunks_sql(false), |rows, c| {
            c.chunks = rows.iter().map(chunk_row).collect()
        }),
        (tombstones_sql(false), |rows, c| {
            c.tombstones = rows.iter().map(tombstone_row).collect()
        }),
    ];
    for (sql, fill) in tables {
        let portal = tx
            .bind(sql.as_str(), &[])
            .await
            .map_err(pg_err("reading a snapshot"))?;
        loop {
            let rows = tx
                .query_portal(&portal, chunk)
                .await
                .map_err(pg_err("reading a snapshot"))?;
            if rows.is_empty() {
                break;
            }
            let mut c = Changes {
                after: 0,
                through: safe,
                ..Changes::default()
            };
            fill(&rows, &mut c);
            sink(c)?;
        }
    }
    tx.commit()
        .await
        .map_err(pg_err("ending a snapshot read"))?;
    make_durable(client).await?;
    Ok(safe)
}

/// Makes a position read from a snapshot durable before it is handed out
/// (see [`read_page`]).
async fn make_durable(client: &mut tokio_postgres::Client) -> Result<()> {
    client
        .batch_execute(
            "BEGIN; SET LOCAL synchronous_commit = on; SELECT pg_current_xact_id(); COMMIT",
        )
        .await
        .map_err(pg_err("making the feed's position durable"))
}
