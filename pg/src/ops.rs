//! The operations, one async function each, mirroring the embedded store.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use nexus_core::backend::{
    check_precondition, decode_cursor, encode_cursor, encode_value, filter_hash, new_record,
    prefix_upper_bound, rollback_reason, rolled_back_record, validate_name, validate_new_file,
    validate_prefix, validate_text,
};
use nexus_core::listing::{
    DIRECTORY_BATCH, ScanFrom as From, directories_step, scan_batch, scan_bounds, scan_start,
    scan_step,
};
use nexus_core::{
    Chunk, Error, FileRecord, ListOptions, MAX_PAGE_SIZE, MAX_PATH_BYTES, NewFile, Page,
    Precondition, Result, Stats, Timestamp, VersionDiff, VersionInfo, VersionSource, validate_path,
};
use serde_json::Value;
use tokio_postgres::GenericClient;
use tokio_postgres::Row;
use uuid::Uuid;

use nexus_postgres::Cached;
use tokio_postgres::error::SqlState;

use crate::{Inner, pg_err};

use nexus_postgres::codec::{from_time as from_sys, time as ts};

/// The columns of a file record, in `file_row`'s order.
macro_rules! file_cols {
    () => {
        "path_id, virtual_path, backend_id, physical_path, size_bytes, content_hash, file_type, created_at, updated_at, current_version"
    };
}
const FILE_COLS: &str = file_cols!();
const LIVE: &str = concat!(
    "SELECT ",
    file_cols!(),
    " FROM file_paths WHERE tenant_id = $1 AND virtual_path = $2 AND deleted_at IS NULL"
);
const LIVE_FOR_UPDATE: &str = concat!(
    "SELECT ",
    file_cols!(),
    " FROM file_paths WHERE tenant_id = $1 AND virtual_path = $2 AND deleted_at IS NULL FOR UPDATE"
);

fn file_row(r: &Row, tenant: &str) -> FileRecord {
    file_row_at(r, 0, tenant)
}

/// The record in `FILE_COLS` order from column `at` on.
fn file_row_at(r: &Row, at: usize, tenant: &str) -> FileRecord {
    FileRecord {
        path_id: r.get::<_, Uuid>(at).to_string(),
        path: r.get(at + 1),
        backend: r.get(at + 2),
        physical_path: r.get(at + 3),
        size: r.get::<_, i64>(at + 4) as u64,
        etag: r.get(at + 5),
        mime_type: r.get(at + 6),
        created_at: from_sys(r.get(at + 7)),
        modified_at: from_sys(r.get(at + 8)),
        version: r.get::<_, i32>(at + 9) as u32,
        tenant: tenant.to_string(),
    }
}

fn id(s: &str) -> Result<Uuid> {
    Uuid::parse_str(s).map_err(|_| Error::Corrupt {
        table: "file_paths",
        detail: format!("path id {s:?} is not a UUID"),
    })
}

async fn load_live(
    c: &Cached<'_, impl GenericClient + Sync>,
    tenant: &str,
    path: &str,
    lock: bool,
) -> Result<Option<FileRecord>> {
    let sql = if lock { LIVE_FOR_UPDATE } else { LIVE };
    Ok(c.query_opt(sql, &[&tenant, &path])
        .await
        .map_err(pg_err("reading a file"))?
        .map(|r| file_row(&r, tenant)))
}

async fn require_live(
    c: &Cached<'_, impl GenericClient + Sync>,
    tenant: &str,
    path: &str,
    lock: bool,
) -> Result<FileRecord> {
    load_live(c, tenant, path, lock)
        .await?
        .ok_or_else(|| Error::NotFound {
            path: path.to_string(),
        })
}

async fn insert_version(
    tx: &Cached<'_, tokio_postgres::Transaction<'_>>,
    r: &FileRecord,
    source: VersionSource,
    reason: Option<&str>,
    parent: Option<Uuid>,
) -> Result<()> {
    let source = match source {
        VersionSource::Original => "original",
        VersionSource::Update => "update",
        VersionSource::Rollback => "rollback",
    };
    tx.execute(
        "INSERT INTO version_history (version_id, path_id, version_number, backend_id, physical_path, content_hash, \
         size_bytes, mime_type, parent_version_id, source_type, change_reason, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, $12)",
        &[
            &Uuid::now_v7(),
            &id(&r.path_id)?,
            &(r.version as i32),
            &r.backend,
            &r.physical_path,
            &r.etag,
            &(r.size as i64),
            &r.mime_type,
            &parent,
            &source,
            &reason,
            &ts(r.modified_at),
        ],
    )
    .await
    .map_err(pg_err("recording a version"))?;
    Ok(())
}

async fn version_id(
    c: &Cached<'_, impl GenericClient + Sync>,
    path_id: &str,
    version: u32,
) -> Result<Option<Uuid>> {
    Ok(c.query_opt(
        "SELECT version_id FROM version_history WHERE path_id = $1 AND version_number = $2",
        &[&id(path_id)?, &(version as i32)],
    )
    .await
    .map_err(pg_err("reading a version id"))?
    .map(|r| r.get(0)))
}

async fn update_file(
    tx: &Cached<'_, tokio_postgres::Transaction<'_>>,
    r: &FileRecord,
) -> Result<()> {
    tx.execute(
        "UPDATE file_paths SET backend_id = $1, physical_path = $2, size_bytes = $3, content_hash = $4, \
         file_type = $5, updated_at = $6, current_version = $7, origin_id = NULL, origin_seq = NULL, \
         change_seq = DEFAULT WHERE path_id = $8",
        &[
            &r.backend,
            &r.physical_path,
            &(r.size as i64),
            &r.etag,
            &r.mime_type,
            &ts(r.modified_at),
            &(r.version as i32),
            &id(&r.path_id)?,
        ],
    )
    .await
    .map_err(pg_err("updating a file"))?;
    Ok(())
}

async fn begin(client: &mut tokio_postgres::Client) -> Result<tokio_postgres::Transaction<'_>> {
    client
        .transaction()
        .await
        .map_err(pg_err("starting a transaction"))
}

/// A read-only transaction on one snapshot (repeatable read): several
/// statements see one committed state.
pub(crate) async fn begin_snapshot<'c>(
    client: &'c mut tokio_postgres::Client,
    context: &'static str,
) -> Result<tokio_postgres::Transaction<'c>> {
    client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg_err(context))
}

/// A failure inside a transaction before its COMMIT was sent: nothing was
/// committed, whatever happened to the connection, so the store may try
/// the whole transaction again.
fn uncommitted(e: Error) -> Error {
    match e {
        Error::Unavailable {
            context, source, ..
        } => Error::Unavailable {
            context,
            outcome_unknown: false,
            source,
        },
        e => e,
    }
}

async fn commit(tx: tokio_postgres::Transaction<'_>) -> Result<()> {
    tx.commit().await.map_err(pg_err("committing"))
}

/// `nexus_put` (migrations/postgres/0003): the whole put in one statement.
const PUT: &str = "SELECT applied, path_id, virtual_path, backend_id, physical_path, size_bytes, content_hash, \
     file_type, created_at, updated_at, current_version \
     FROM nexus_put($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";

/// One put, in one round trip: in autocommit its own transaction, on a
/// transaction's client part of it. The function applies the put rule
/// (the same as `nexus_core::backend::{new_record, updated_record}`: a new
/// version when the etag changes) and checks the precondition; when it
/// does not hold, the error is `check_precondition`'s, from the record the
/// function found.
async fn put_one(
    c: &Cached<'_, impl GenericClient + Sync>,
    inner: &Inner,
    tenant: &str,
    file: &NewFile,
    pre: Option<&Precondition>,
) -> Result<FileRecord> {
    let fresh = new_record(file, tenant, Uuid::now_v7().to_string(), inner.now());
    let (expect, expect_version, expect_etag) = match pre {
        None => (None, None, None),
        Some(Precondition::Absent) => (Some("absent"), None, None),
        Some(Precondition::Version(v)) => (Some("version"), Some(*v as i32), None),
        Some(Precondition::Etag(e)) => (Some("etag"), None, e.as_deref()),
    };
    let row = c
        .query_one(
            PUT,
            &[
                &tenant,
                &file.path,
                &id(&fresh.path_id)?,
                &Uuid::now_v7(),
                &file.backend,
                &file.physical_path,
                &(file.size as i64),
                &file.etag,
                &file.mime_type,
                &ts(fresh.created_at),
                &ts(fresh.modified_at),
                &expect,
                &expect_version,
                &expect_etag,
            ],
        )
        .await
        .map_err(pg_err("writing a file"))?;
    let found = row
        .get::<_, Option<Uuid>>(1)
        .map(|_| file_row_at(&row, 1, tenant));
    match (row.get::<_, bool>(0), found, pre) {
        (true, Some(record), _) => Ok(record),
        (false, found, Some(pre)) => {
            check_precondition(&file.path, pre, found.as_ref())?;
            Err(Error::Corrupt {
                table: "file_paths",
                detail: format!(
                    "nexus_put refused {} although its precondition holds",
                    file.path
                ),
            })
        }
        _ => Err(Error::Corrupt {
            table: "file_paths",
            detail: format!("nexus_put answered {} without a record", file.path),
        }),
    }
}

pub(crate) async fn put(
    inner: &Inner,
    tenant: &str,
    file: NewFile,
    pre: Option<Precondition>,
) -> Result<FileRecord> {
    validate_new_file(&file)?;
    let client = inner.client().await?;
    put_one(&client.cached(), inner, tenant, &file, pre.as_ref()).await
}

/// One transaction; the puts are pipelined (sent without waiting for each
/// answer), so a batch costs about one round trip plus BEGIN and COMMIT.
pub(crate) async fn put_batch(
    inner: &Inner,
    tenant: &str,
    files: Vec<NewFile>,
) -> Result<Vec<FileRecord>> {
    for f in &files {
        validate_new_file(f)?;
    }
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let mut pooled = inner.client().await?;
    let (client, cache) = pooled.parts();
    let tx = begin(client).await.map_err(uncommitted)?;
    let db = Cached::new(&tx, cache);
    let out = futures_util::future::try_join_all(
        files.iter().map(|f| put_one(&db, inner, tenant, f, None)),
    )
    .await
    .map_err(uncommitted)?;
    commit(tx).await?;
    Ok(out)
}

pub(crate) async fn get(inner: &Inner, tenant: &str, path: String) -> Result<Option<FileRecord>> {
    validate_path(&path)?;
    let pooled = inner.read_client().await?;
    let c = pooled.cached();
    load_live(&c, tenant, &path, false).await
}

pub(crate) async fn get_batch(
    inner: &Inner,
    tenant: &str,
    paths: Vec<String>,
) -> Result<HashMap<String, Option<FileRecord>>> {
    for p in &paths {
        validate_path(p)?;
    }
    let mut out = HashMap::new();
    if paths.is_empty() {
        return Ok(out);
    }
    let mut pooled = inner.read_client().await?;
    let (client, cache) = pooled.parts();
    let tx = begin_snapshot(client, "starting a read").await?;
    let db = Cached::new(&tx, cache);
    for p in paths {
        let r = load_live(&db, tenant, &p, false).await?;
        out.insert(p, r);
    }
    commit(tx).await?;
    Ok(out)
}

/// The statement that deletes the live files of tenant `$1` whose path
/// `matches` (a condition over `$2`), as this database's own change. The
/// deletion time is the clock's (`$3`), or one microsecond after the row's
/// last change when that is later, so that a deletion is always later than
/// what it deleted (`nexus_stamp_after`, migration 0009, as the embedded
/// store's `meta::stamp_after`). Its parameters: tenant, path(s), clock.
fn deletion(matches: &str) -> String {
    format!(
        "UPDATE file_paths SET deleted_at = nexus_stamp_after($3, updated_at), origin_id = NULL, \
         origin_seq = NULL, change_seq = DEFAULT \
         WHERE tenant_id = $1 AND virtual_path {matches} AND deleted_at IS NULL"
    )
}

pub(crate) async fn delete(
    inner: &Inner,
    tenant: &str,
    path: String,
) -> Result<Option<FileRecord>> {
    validate_path(&path)?;
    let pooled = inner.client().await?;
    let c = pooled.cached();
    Ok(c.query_opt(
        &format!("{} RETURNING {FILE_COLS}", deletion("= $2")),
        &[&tenant, &path, &ts(inner.now())],
    )
    .await
    .map_err(pg_err("deleting a file"))?
    .map(|r| file_row(&r, tenant)))
}

pub(crate) async fn delete_batch(inner: &Inner, tenant: &str, paths: Vec<String>) -> Result<usize> {
    for p in &paths {
        validate_path(p)?;
    }
    if paths.is_empty() {
        return Ok(0);
    }
    let pooled = inner.client().await?;
    let c = pooled.cached();
    let n = c
        .execute(
            &deletion("= ANY ($2)"),
            &[&tenant, &paths, &ts(inner.now())],
        )
        .await
        .map_err(pg_err("deleting files"))?;
    Ok(n as usize)
}

async fn scan(
    c: &Cached<'_, impl GenericClient + Sync>,
    tenant: &str,
    prefix: &str,
    recursive: bool,
    from: From,
    limit: usize,
) -> Result<Vec<FileRecord>> {
    let (_, upper) = scan_bounds(prefix);
    let mut from = scan_start(prefix, from);
    let mut items = Vec::new();
    loop {
        let batch = scan_batch(limit, items.len());
        let (op, bound) = match &from {
            From::Including(s) => (">=", s.clone()),
            From::After(s) => (">", s.clone()),
        };
        let sql = format!(
            "SELECT {FILE_COLS} FROM file_paths WHERE tenant_id = $1 AND virtual_path {op} $2 AND virtual_path < $3 \
             AND deleted_at IS NULL ORDER BY virtual_path LIMIT $4"
        );
        let rows = c
            .query(&sql, &[&tenant, &bound, &upper, &(batch as i64)])
            .await
            .map_err(pg_err("listing"))?
            .iter()
            .map(|r| file_row(r, tenant))
            .collect();
        match scan_step(prefix, recursive, rows, batch, limit, &mut items) {
            Some(next) => from = next,
            None => return Ok(items),
        }
    }
}

pub(crate) async fn list(inner: &Inner, tenant: &str, prefix: String) -> Result<Vec<FileRecord>> {
    validate_prefix(&prefix)?;
    let pooled = inner.read_client().await?;
    let c = pooled.cached();
    scan(
        &c,
        tenant,
        &prefix,
        true,
        From::Including(prefix.clone()),
        usize::MAX,
    )
    .await
}

pub(crate) async fn list_page(inner: &Inner, tenant: &str, opts: ListOptions) -> Result<Page> {
    validate_prefix(&opts.prefix)?;
    let limit = opts.limit.clamp(1, MAX_PAGE_SIZE);
    let filters = filter_hash(tenant, &opts.prefix, opts.recursive);
    let from = match &opts.cursor {
        Some(c) => From::After(decode_cursor(c, &filters, &opts.prefix)?),
        None => From::Including(opts.prefix.clone()),
    };
    let pooled = inner.read_client().await?;
    let c = pooled.cached();
    let mut items = scan(&c, tenant, &opts.prefix, opts.recursive, from, limit + 1).await?;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|last| encode_cursor(&filters, &last.path))
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

pub(crate) async fn list_directories(
    inner: &Inner,
    tenant: &str,
    prefix: String,
) -> Result<Vec<String>> {
    validate_prefix(&prefix)?;
    let pooled = inner.read_client().await?;
    let c = pooled.cached();
    let mut dirs = Vec::new();
    let mut from = From::Including(prefix.clone());
    loop {
        let rows = scan(&c, tenant, &prefix, true, from, DIRECTORY_BATCH).await?;
        match directories_step(&prefix, &rows, &mut dirs) {
            Some(next) => from = next,
            None => return Ok(dirs),
        }
    }
}

async fn is_directory_in(
    c: &Cached<'_, impl GenericClient + Sync>,
    tenant: &str,
    path: &str,
) -> Result<bool> {
    let dir = if path == "/" {
        "/".to_string()
    } else {
        format!("{path}/")
    };
    let upper = prefix_upper_bound(&dir).expect("non-empty");
    Ok(c.query_opt(
        "SELECT 1 FROM file_paths WHERE tenant_id = $1 AND virtual_path >= $2 AND virtual_path < $3 \
         AND deleted_at IS NULL LIMIT 1",
        &[&tenant, &dir, &upper],
    )
    .await
    .map_err(pg_err("checking a directory"))?
    .is_some())
}

pub(crate) async fn is_directory(inner: &Inner, tenant: &str, path: String) -> Result<bool> {
    if path != "/" {
        validate_path(&path)?;
    }
    let pooled = inner.read_client().await?;
    let c = pooled.cached();
    is_directory_in(&c, tenant, &path).await
}

pub(crate) async fn rename(inner: &Inner, tenant: &str, old: String, new: String) -> Result<usize> {
    validate_path(&old)?;
    validate_path(&new)?;
    if new.len() > old.len() && new.starts_with(&old) && new.as_bytes()[old.len()] == b'/' {
        return Err(Error::InvalidPath {
            path: new,
            reason: "cannot move a path below itself",
        });
    }
    let (old_dir, new_dir) = (format!("{old}/"), format!("{new}/"));
    let old_upper = prefix_upper_bound(&old_dir).expect("non-empty");
    let new_upper = prefix_upper_bound(&new_dir).expect("non-empty");
    let pooled = inner.client().await?;
    let c = pooled.cached();
    let row = c
        .query_one(
            "SELECT status, moved, detail FROM nexus_rename($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &tenant,
                &old,
                &old_dir,
                &old_upper,
                &new,
                &new_dir,
                &new_upper,
                &ts(inner.now()),
                &(MAX_PATH_BYTES as i32),
            ],
        )
        .await
        .map_err(|e| match e.code() {
            // A put made the destination live after the function looked.
            Some(&SqlState::UNIQUE_VIOLATION) => Error::AlreadyExists { path: new.clone() },
            _ => pg_err("renaming")(e),
        })?;
    match row.get::<_, &str>(0) {
        "renamed" => Ok(row.get::<_, i32>(1) as usize),
        "not_found" => Err(Error::NotFound { path: old }),
        "exists" => Err(Error::AlreadyExists { path: new }),
        "too_long" => Err(Error::InvalidPath {
            path: row.get(2),
            reason: "the renamed path would be longer than 4096 bytes",
        }),
        other => Err(Error::Corrupt {
            table: "file_paths",
            detail: format!("nexus_rename answered {other:?}"),
        }),
    }
}

pub(crate) async fn set_metadata(
    inner: &Inner,
    tenant: &str,
    entries: Vec<(String, String, Value)>,
) -> Result<()> {
    for (path, key, value) in &entries {
        validate_path(path)?;
        validate_name("metadata key", key)?;
        encode_value(key, value)?;
    }
    if entries.is_empty() {
        return Ok(());
    }
    let paths: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    let keys: Vec<&str> = entries.iter().map(|e| e.1.as_str()).collect();
    let values: Vec<&Value> = entries.iter().map(|e| &e.2).collect();
    let pooled = inner.client().await?;
    let c = pooled.cached();
    let missing: Option<String> = c
        .query_one(
            "SELECT nexus_set_metadata($1, $2, $3, $4, $5)",
            &[&tenant, &paths, &keys, &values, &ts(inner.now())],
        )
        .await
        .map_err(pg_err("setting metadata"))?
        .get(0);
    match missing {
        Some(path) => Err(Error::NotFound { path }),
        None => Ok(()),
    }
}

pub(crate) async fn get_metadata(
    inner: &Inner,
    tenant: &str,
    path: String,
    key: String,
) -> Result<Option<Value>> {
    validate_path(&path)?;
    validate_name("metadata key", &key)?;
    let pooled = inner.read_client().await?;
    let c = pooled.cached();
    let file = require_live(&c, tenant, &path, false).await?;
    Ok(c.query_opt(
        "SELECT value FROM file_metadata WHERE path_id = $1 AND key = $2",
        &[&id(&file.path_id)?, &key],
    )
    .await
    .map_err(pg_err("reading metadata"))?
    .map(|r| r.get(0)))
}

pub(crate) async fn list_metadata(
    inner: &Inner,
    tenant: &str,
    path: String,
) -> Result<BTreeMap<String, Value>> {
    validate_path(&path)?;
    let pooled = inner.read_client().await?;
    let c = pooled.cached();
    let file = require_live(&c, tenant, &path, false).await?;
    Ok(c.query(
        "SELECT key, value FROM file_metadata WHERE path_id = $1 ORDER BY key",
        &[&id(&file.path_id)?],
    )
    .await
    .map_err(pg_err("reading metadata"))?
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect())
}

pub(crate) async fn delete_metadata(
    inner: &Inner,
    tenant: &str,
    path: String,
    key: String,
) -> Result<bool> {
    validate_path(&path)?;
    validate_name("metadata key", &key)?;
    let pooled = inner.client().await?;
    let c = pooled.cached();
    let row = c
        .query_one(
            "WITH f AS (SELECT path_id FROM file_paths WHERE tenant_id = $1 AND virtual_path = $2 \
               AND deleted_at IS NULL FOR SHARE), \
             d AS (DELETE FROM file_metadata m USING f WHERE m.path_id = f.path_id AND m.key = $3 \
               RETURNING m.path_id, m.updated_at), \
             t AS (INSERT INTO tombstones (table_name, key1, key2, deleted_at) \
               SELECT 'file_metadata', d.path_id::text, $3, \
                 nexus_stamp_after($4, d.updated_at) FROM d \
               ON CONFLICT (table_name, key1, key2) DO UPDATE SET deleted_at = EXCLUDED.deleted_at, \
               origin_id = NULL, origin_seq = NULL, change_seq = DEFAULT) \
             SELECT EXISTS (SELECT 1 FROM f), EXISTS (SELECT 1 FROM d)",
            &[&tenant, &path, &key, &ts(inner.now())],
        )
        .await
        .map_err(pg_err("deleting metadata"))?;
    if !row.get::<_, bool>(0) {
        return Err(Error::NotFound { path });
    }
    Ok(row.get(1))
}

pub(crate) async fn find_by_metadata(
    inner: &Inner,
    tenant: &str,
    key: String,
    value: Option<Value>,
) -> Result<Vec<(String, Value)>> {
    validate_name("metadata key", &key)?;
    if let Some(v) = &value {
        encode_value(&key, v)?;
    }
    let pooled = inner.read_client().await?;
    let c = pooled.cached();
    let rows = match &value {
        None => c
            .query(
                "SELECT p.virtual_path, m.value FROM file_metadata m JOIN file_paths p ON p.path_id = m.path_id \
                 WHERE m.key = $1 AND p.tenant_id = $2 AND p.deleted_at IS NULL ORDER BY p.virtual_path",
                &[&key, &tenant],
            )
            .await,
        Some(v) => c
            .query(
                "SELECT p.virtual_path, m.value FROM file_metadata m JOIN file_paths p ON p.path_id = m.path_id \
                 WHERE m.key = $1 AND m.value = $3 AND p.tenant_id = $2 AND p.deleted_at IS NULL \
                 ORDER BY p.virtual_path",
                &[&key, &tenant, v],
            )
            .await,
    }
    .map_err(pg_err("finding by metadata"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

const VERSION_SELECT: &str = "SELECT v.version_number, v.content_hash, v.size_bytes, v.mime_type, v.backend_id, \
     v.physical_path, v.source_type, v.change_reason, p.version_number, v.created_at FROM version_history v \
     LEFT JOIN version_history p ON p.version_id = v.parent_version_id";

fn version_row(r: &Row) -> Result<VersionInfo> {
    let source: String = r.get(6);
    Ok(VersionInfo {
        version: r.get::<_, i32>(0) as u32,
        etag: r.get(1),
        size: r.get::<_, i64>(2) as u64,
        mime_type: r.get(3),
        backend: r.get(4),
        physical_path: r.get(5),
        source: match source.as_str() {
            "original" => VersionSource::Original,
            "update" => VersionSource::Update,
            "rollback" => VersionSource::Rollback,
            other => {
                return Err(Error::Corrupt {
                    table: "version_history",
                    detail: format!("unknown source_type {other:?}"),
                });
            }
        },
        change_reason: r.get(7),
        parent_version: r.get::<_, Option<i32>>(8).map(|v| v as u32),
        created_at: from_sys(r.get(9)),
    })
}

async fn load_version(
    c: &Cached<'_, impl GenericClient + Sync>,
    path_id: &str,
    version: u32,
) -> Result<Option<VersionInfo>> {
    c.query_opt(
        &format!("{VERSION_SELECT} WHERE v.path_id = $1 AND v.version_number = $2"),
        &[&id(path_id)?, &(version as i32)],
    )
    .await
    .map_err(pg_err("reading a version"))?
    .map(|r| version_row(&r))
    .transpose()
}

async fn require_version(
    c: &Cached<'_, impl GenericClient + Sync>,
    file: &FileRecord,
    version: u32,
) -> Result<VersionInfo> {
    load_version(c, &file.path_id, version)
        .await?
        .ok_or_else(|| Error::VersionNotFound {
            path: file.path.clone(),
            version,
        })
}

pub(crate) async fn list_versions(
    inner: &Inner,
    tenant: &str,
    path: String,
) -> Result<Vec<VersionInfo>> {
    validate_path(&path)?;
    let pooled = inner.read_client().await?;
    let c = pooled.cached();
    let file = require_live(&c, tenant, &path, false).await?;
    c.query(
        &format!("{VERSION_SELECT} WHERE v.path_id = $1 ORDER BY v.version_number DESC"),
        &[&id(&file.path_id)?],
    )
    .await
    .map_err(pg_err("listing versions"))?
    .iter()
    .map(version_row)
    .collect()
}

pub(crate) async fn get_version(
    inner: &Inner,
    tenant: &str,
    path: String,
    version: u32,
) -> Result<Option<VersionInfo>> {
    validate_path(&path)?;
    let pooled = inner.read_client().await?;
    let c = pooled.cached();
    let file = require_live(&c, tenant, &path, false).await?;
    load_version(&c, &file.path_id, version).await
}

pub(crate) async fn rollback(
    inner: &Inner,
    tenant: &str,
    path: String,
    version: u32,
) -> Result<FileRecord> {
    validate_path(&path)?;
    let mut pooled = inner.client().await?;
    let (client, cache) = pooled.parts();
    let tx = begin(client).await.map_err(uncommitted)?;
    let db = Cached::new(&tx, cache);
    let record = async {
        let current = require_live(&db, tenant, &path, true).await?;
        let target = require_version(&db, &current, version).await?;
        let parent = version_id(&db, &current.path_id, current.version).await?;
        let record = rolled_back_record(current, target, inner.now());
        update_file(&db, &record).await?;
        let reason = rollback_reason(version);
        insert_version(&db, &record, VersionSource::Rollback, Some(&reason), parent).await?;
        Ok(record)
    }
    .await
    .map_err(uncommitted)?;
    commit(tx).await?;
    Ok(record)
}

pub(crate) async fn diff_versions(
    inner: &Inner,
    tenant: &str,
    path: String,
    v1: u32,
    v2: u32,
) -> Result<VersionDiff> {
    validate_path(&path)?;
    let pooled = inner.read_client().await?;
    let c = pooled.cached();
    let file = require_live(&c, tenant, &path, false).await?;
    let a = require_version(&c, &file, v1).await?;
    let b = require_version(&c, &file, v2).await?;
    Ok(VersionDiff {
        path: file.path,
        content_changed: a.etag != b.etag,
        size_delta: b.size as i64 - a.size as i64,
        v1: a,
        v2: b,
    })
}

const CHUNK_SELECT: &str = "SELECT content_hash, size_bytes, storage_path, ref_count, created_at, last_accessed_at, \
     protected_until FROM content_chunks";

fn chunk_row(r: &Row) -> Chunk {
    Chunk {
        content_hash: r.get(0),
        size: r.get::<_, i64>(1) as u64,
        storage_path: r.get(2),
        ref_count: r.get::<_, i64>(3) as u64,
        created_at: from_sys(r.get(4)),
        last_accessed_at: r.get::<_, Option<SystemTime>>(5).map(from_sys),
        protected_until: r.get::<_, Option<SystemTime>>(6).map(from_sys),
    }
}

async fn load_chunk(
    c: &Cached<'_, impl GenericClient + Sync>,
    tenant: &str,
    hash: &str,
) -> Result<Option<Chunk>> {
    Ok(c.query_opt(
        &format!("{CHUNK_SELECT} WHERE tenant_id = $1 AND content_hash = $2"),
        &[&tenant, &hash],
    )
    .await
    .map_err(pg_err("reading a chunk"))?
    .map(|r| chunk_row(&r)))
}

async fn require_chunk(
    c: &Cached<'_, impl GenericClient + Sync>,
    tenant: &str,
    hash: &str,
) -> Result<Chunk> {
    load_chunk(c, tenant, hash)
        .await?
        .ok_or_else(|| Error::ChunkNotFound {
            content_hash: hash.to_string(),
        })
}

pub(crate) async fn add_chunk_ref(
    inner: &Inner,
    tenant: &str,
    hash: String,
    size: u64,
    storage: String,
) -> Result<Chunk> {
    validate_name("content_hash", &hash)?;
    validate_text("storage_path", &storage, MAX_PATH_BYTES)?;
    let size = i64::try_from(size).map_err(|_| Error::InvalidArgument {
        name: "size",
        value: size.to_string(),
        reason: "must be at most 2^63 - 1".into(),
    })?;
    let pooled = inner.client().await?;
    let c = pooled.cached();
    let row = c
        .query_one(
            "SELECT content_hash, size_bytes, storage_path, ref_count, created_at, last_accessed_at, \
             protected_until FROM nexus_add_chunk_ref($1, $2, $3, $4, $5)",
            &[&tenant, &hash, &size, &storage, &ts(inner.now())],
        )
        .await
        .map_err(pg_err("adding a chunk reference"))?;
    Ok(chunk_row(&row))
}

pub(crate) async fn release_chunk_ref(
    inner: &Inner,
    tenant: &str,
    hash: String,
    grace: Duration,
) -> Result<Chunk> {
    validate_name("content_hash", &hash)?;
    let mut pooled = inner.client().await?;
    let (client, cache) = pooled.parts();
    let tx = begin(client).await.map_err(uncommitted)?;
    let db = Cached::new(&tx, cache);
    let chunk = async {
        let chunk = db
            .query_opt(
                &format!("{CHUNK_SELECT} WHERE tenant_id = $1 AND content_hash = $2 FOR UPDATE"),
                &[&tenant, &hash],
            )
            .await
            .map_err(pg_err("reading a chunk"))?
            .map(|r| chunk_row(&r))
            .ok_or_else(|| Error::ChunkNotFound {
                content_hash: hash.clone(),
            })?;
        if chunk.ref_count == 0 {
            return Err(Error::InvalidArgument {
                name: "content_hash",
                value: hash,
                reason: "the chunk has no references left to release".into(),
            });
        }
        let now = inner.now();
        let protected = (chunk.ref_count == 1).then(|| {
            ts(Timestamp::from_micros(now.as_micros().saturating_add(
                i64::try_from(grace.as_micros()).unwrap_or(i64::MAX),
            )))
        });
        db.execute(
            "UPDATE content_chunks SET ref_count = ref_count - 1, last_accessed_at = $1, \
         protected_until = COALESCE($2, protected_until), origin_id = NULL, origin_seq = NULL, \
         change_seq = DEFAULT WHERE tenant_id = $3 AND content_hash = $4",
            &[&ts(now), &protected, &tenant, &hash],
        )
        .await
        .map_err(pg_err("releasing a chunk reference"))?;
        require_chunk(&db, tenant, &hash).await
    }
    .await
    .map_err(uncommitted)?;
    commit(tx).await?;
    Ok(chunk)
}

pub(crate) async fn get_chunk(inner: &Inner, tenant: &str, hash: String) -> Result<Option<Chunk>> {
    validate_name("content_hash", &hash)?;
    let pooled = inner.read_client().await?;
    let c = pooled.cached();
    load_chunk(&c, tenant, &hash).await
}

pub(crate) async fn gc_candidates(inner: &Inner, tenant: &str, limit: usize) -> Result<Vec<Chunk>> {
    let pooled = inner.read_client().await?;
    let c = pooled.cached();
    let now = ts(inner.now());
    Ok(c.query(
        &format!(
            "{CHUNK_SELECT} WHERE tenant_id = $1 AND ref_count = 0 AND (protected_until IS NULL OR protected_until <= $2) \
             ORDER BY content_hash LIMIT $3"
        ),
        &[&tenant, &now, &(i64::try_from(limit).unwrap_or(i64::MAX))],
    )
    .await
    .map_err(pg_err("listing GC candidates"))?
    .iter()
    .map(chunk_row)
    .collect())
}

pub(crate) async fn remove_chunk(inner: &Inner, tenant: &str, hash: String) -> Result<bool> {
    validate_name("content_hash", &hash)?;
    let pooled = inner.client().await?;
    let c = pooled.cached();
    let now = ts(inner.now());
    Ok(c.query_one(
        "WITH d AS (DELETE FROM content_chunks WHERE tenant_id = $1 AND content_hash = $2 AND ref_count = 0 \
           AND (protected_until IS NULL OR protected_until <= $3) RETURNING 1), \
         t AS (INSERT INTO tombstones (table_name, key1, key2, deleted_at) \
           SELECT 'content_chunks', $1, $2, $3 FROM d \
           ON CONFLICT (table_name, key1, key2) DO UPDATE SET deleted_at = EXCLUDED.deleted_at, \
           origin_id = NULL, origin_seq = NULL, change_seq = DEFAULT) \
         SELECT EXISTS (SELECT 1 FROM d)",
        &[&tenant, &hash, &now],
    )
    .await
    .map_err(pg_err("removing a chunk"))?
    .get(0))
}

pub(crate) async fn stats(inner: &Inner, tenant: &str) -> Result<Stats> {
    let pooled = inner.read_client().await?;
    let c = pooled.cached();
    let count = |sql: &'static str| {
        let c = &c;
        async move {
            Ok::<i64, Error>(
                c.query_one(sql, &[&tenant])
                    .await
                    .map_err(pg_err("counting"))?
                    .get(0),
            )
        }
    };
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    // The live files and their bytes in one statement; the bytes as text,
    // since a sum of sizes may pass a signed 64-bit integer (SUM gives a
    // numeric).
    let row = c
        .query_one(
            "SELECT COUNT(*), COALESCE(SUM(size_bytes), 0)::text \
             FROM file_paths WHERE tenant_id = $1 AND deleted_at IS NULL",
            &[&tenant],
        )
        .await
        .map_err(pg_err("counting"))?;
    let files: i64 = row.get(0);
    let total_bytes = row.get::<_, &str>(1).parse::<u64>().unwrap_or(u64::MAX);
    let deleted =
        count("SELECT COUNT(*) FROM file_paths WHERE tenant_id = $1 AND deleted_at IS NOT NULL")
            .await?;
    let metadata = count(
        "SELECT COUNT(*) FROM file_metadata m JOIN file_paths p ON p.path_id = m.path_id \
         WHERE p.tenant_id = $1 AND p.deleted_at IS NULL",
    )
    .await?;
    let versions = count(
        "SELECT COUNT(*) FROM version_history v JOIN file_paths p ON p.path_id = v.path_id \
         WHERE p.tenant_id = $1 AND p.deleted_at IS NULL",
    )
    .await?;
    let chunks = count("SELECT COUNT(*) FROM content_chunks WHERE tenant_id = $1").await?;
    // The newest stamp of any row (0 before the first write), as the
    // embedded store's change sequence is after its last write.
    let change_seq: i64 = c
        .query_one(
            "SELECT GREATEST(0, (SELECT MAX(change_seq) FROM file_paths), \
             (SELECT MAX(change_seq) FROM version_history), (SELECT MAX(change_seq) FROM file_metadata), \
             (SELECT MAX(change_seq) FROM content_chunks), (SELECT MAX(change_seq) FROM tombstones))",
            &[],
        )
        .await
        .map_err(pg_err("reading the change sequence"))?
        .get(0);
    let schema: i32 = c
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM _nexus_migrations",
            &[],
        )
        .await
        .map_err(pg_err("reading the schema version"))?
        .get(0);
    Ok(Stats {
        tenant: tenant.to_string(),
        files: n(files),
        total_bytes,
        deleted_files: n(deleted),
        metadata_entries: n(metadata),
        versions: n(versions),
        chunks: n(chunks),
        change_seq,
        schema_version: schema as u32,
    })
}

pub(crate) async fn debug_query(
    inner: &Inner,
    _tenant: &str,
    sql: String,
) -> Result<Vec<Vec<Option<String>>>> {
    let pooled = inner.client().await?;
    let c = pooled.cached();
    let messages = c
        .client()
        .simple_query(&sql)
        .await
        .map_err(pg_err("running a query"))?;
    Ok(messages
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}
