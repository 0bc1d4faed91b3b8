//! The change feed of a PostgreSQL store: every row that changed after a
//! position, whoever wrote it (the store, a sync run, a change file), in
//! pages, never missing a transaction that was still running when an
//! earlier page was read.
//!
//! Every row's `change_seq` is the id of the transaction that last wrote it
//! (`pg_current_xact_id()`, the column's default; every update sets it
//! again, but those of rows its own transaction already wrote). Ids are
//! handed out when transactions start writing, not when they commit, so
//! a lower id can commit after a higher one was read. A
//! page therefore never reaches the oldest transaction still running that
//! could write here (`xmin` of a snapshot, not counting the sessions of
//! other databases of the cluster, which never write here): every
//! transaction below it had ended when the bound was read, so the page's
//! snapshot, taken after, sees all their committed rows, and any later write
//! gets an id above the bound's `xmax`, so it lands in a later page.
//! ARCHITECTURE.md has the argument in full.

pub use nexus_core::FeedPage;
use std::collections::HashSet;
use std::sync::{LazyLock, OnceLock};

use nexus_core::tables::{Cells, Column, FILE_PATHS, Kind, TableRow, VERSION_HISTORY};
use nexus_core::{
    Changes, ChunkRow, FileRow, MetadataRow, Origin, Result, SnapshotCursor, TombstoneRow,
    VersionRow, canonical_json,
};
use nexus_postgres::Cached;
use nexus_postgres::codec::micros;
use serde_json::Value;
use tokio_postgres::{GenericClient, Row};

use crate::pg_err;

/// A table's column as the feed reads it: ids as text, times as
/// microseconds, 32-bit integers widened, the rest as they are.
fn feed_column(c: &Column) -> String {
    match c.kind {
        Kind::Uuid => format!("{}::text", c.name),
        Kind::Time => micros(c.name),
        Kind::Int4 => format!("{}::int8", c.name),
        Kind::Text | Kind::Int | Kind::Json => c.name.to_string(),
    }
}

/// The feed's query of `T`'s table: its columns, `change_seq` and the
/// origin, in stamp order, then key order: of the range `(after, through]`
/// (`$1`, `$2`), or (`tenant`) of the transactions `$1` (an array), of the
/// tenant `$2` only.
fn select_sql<T: TableRow>(tenant: bool) -> String {
    let t = T::TABLE;
    let filter = if tenant {
        format!(
            "change_seq = ANY($1::int8[]) AND {}",
            row_of_tenant(t.name, 2)
        )
    } else {
        "change_seq > $1 AND change_seq <= $2".to_string()
    };
    format!(
        "SELECT {}, change_seq, origin_id, origin_seq FROM {} WHERE {filter} ORDER BY {}",
        t.select_list(feed_column),
        t.name,
        qualified(
            t.name,
            std::iter::once("change_seq").chain(t.snapshot_order.iter().copied())
        )
    )
}

/// [`select_sql`] of the five feed tables, in the order a page reads them
/// (files, metadata, versions, chunks, removals), built once for each
/// filter.
fn feed_selects(tenant: bool) -> &'static [String; 5] {
    fn build(tenant: bool) -> [String; 5] {
        [
            select_sql::<FileRow>(tenant),
            select_sql::<MetadataRow>(tenant),
            select_sql::<VersionRow>(tenant),
            select_sql::<ChunkRow>(tenant),
            select_sql::<TombstoneRow>(tenant),
        ]
    }
    static RANGE: OnceLock<[String; 5]> = OnceLock::new();
    static TENANT: OnceLock<[String; 5]> = OnceLock::new();
    match tenant {
        false => RANGE.get_or_init(|| build(false)),
        true => TENANT.get_or_init(|| build(true)),
    }
}

/// `table.column, ...`: in an ORDER BY, a bare name would mean the select
/// list's column of that name (an id read as text), whose order no index
/// gives.
fn qualified<'a>(table: &str, columns: impl IntoIterator<Item = &'a str>) -> String {
    columns
        .into_iter()
        .map(|c| format!("{table}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A snapshot's query of `T`'s table, in its snapshot order: from the start,
/// or (`after`) from the row after a key (the values of the snapshot order
/// columns, bound as text `$1`, `$2`, ...); (`tenant`) only the rows of the
/// tenant bound next; (`limit`) at most as many as the parameter after
/// that.
fn snapshot_sql<T: TableRow>(after: bool, tenant: bool, limit: bool) -> String {
    keyed_sql::<T>(false, after, tenant, limit)
}

/// The query of the rows of one transaction of `T`'s table (its id bound
/// as `$1`), in snapshot order, from the start or (`after`) after a key
/// bound next, of the tenant (`tenant`) bound after that, at most as many
/// as the last parameter: the part of a transaction larger than a feed
/// page ([`FeedPage::within`]). The index on `(change_seq, snapshot order)`
/// starts each at its row.
fn within_sql<T: TableRow>(after: bool, tenant: bool) -> String {
    keyed_sql::<T>(true, after, tenant, true)
}

/// [`snapshot_sql`] and (`stamp`: one transaction's rows, its id as `$1`)
/// [`within_sql`].
fn keyed_sql<T: TableRow>(stamp: bool, after: bool, tenant: bool, limit: bool) -> String {
    let t = T::TABLE;
    let order: Vec<&str> = stamp
        .then_some("change_seq")
        .into_iter()
        .chain(t.snapshot_order.iter().copied())
        .collect();
    let mut conditions = Vec::new();
    let mut n = 0;
    if stamp {
        n += 1;
        conditions.push(format!("change_seq = ${n}"));
    }
    let first_key = n + 1;
    if after {
        let params: Vec<String> = stamp
            .then(|| "$1".to_string())
            .into_iter()
            .chain(t.snapshot_order.iter().map(|name| {
                n += 1;
                let cast = match t.column(name).map(|c| c.kind) {
                    Some(Kind::Uuid) => "::uuid",
                    Some(Kind::Int4) => "::int4",
                    Some(Kind::Int) => "::int8",
                    _ => "",
                };
                format!("${n}::text{cast}")
            }))
            .collect();
        conditions.push(format!("({}) > ({})", order.join(", "), params.join(", ")));
    }
    if tenant {
        // Rows that follow a file's id (in a snapshot, and within one
        // transaction's rows): their files from that id on (the join then
        // starts where the rows do).
        let from = (after && t.snapshot_order.first() == Some(&"path_id"))
            .then(|| format!("${first_key}::text::uuid"));
        n += 1;
        conditions.push(tenant_filter(t.name, n, from.as_deref()));
    }
    let limit = if limit {
        n += 1;
        format!(" LIMIT ${n}::int8")
    } else {
        String::new()
    };
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    format!(
        "SELECT {}, change_seq, origin_id, origin_seq FROM {}{filter} ORDER BY {}{limit}",
        t.select_list(feed_column),
        t.name,
        qualified(t.name, order.iter().copied())
    )
}

/// A row of the feed's query, read cell after cell.
struct PgCells<'a> {
    row: &'a Row,
    next: usize,
}

impl PgCells<'_> {
    fn get<'b, V: tokio_postgres::types::FromSql<'b>>(&'b mut self) -> Result<V> {
        let i = self.next;
        self.next += 1;
        self.row.try_get(i).map_err(|e| nexus_core::Error::Corrupt {
            table: "change feed",
            detail: format!("column {i}: {e}"),
        })
    }
}

impl Cells for PgCells<'_> {
    fn text(&mut self) -> Result<String> {
        self.get()
    }
    fn opt_text(&mut self) -> Result<Option<String>> {
        self.get()
    }
    fn int(&mut self) -> Result<i64> {
        self.get()
    }
    fn opt_int(&mut self) -> Result<Option<i64>> {
        self.get()
    }
    fn json(&mut self) -> Result<String> {
        Ok(canonical_json(&self.get::<Value>()?))
    }
}

/// The rows of `T`'s query, each with its origin.
fn read_rows<T: TableRow>(rows: &[Row]) -> Result<Vec<T>> {
    rows.iter()
        .map(|r| {
            let mut cells = PgCells { row: r, next: 0 };
            let mut row = T::read(&mut cells)?;
            row.set_origin(origin(r, cells.next));
            Ok(row)
        })
        .collect()
}

/// The condition that keeps a row of `table` to the tenant bound as `$n`
/// (the rule by which the triggers of PostgreSQL migration 0010 note the
/// transactions of a tenant):
/// by its own tenant, by its file's (of files from the id `from` on, when
/// given), or (a removal) by the key that names either. A plain condition,
/// not `($n IS NULL OR ...)`: PostgreSQL plans the file lookup of that form
/// as a subplan run for every row (quadratic on a large tenant), this one
/// as a join.
fn tenant_filter(table: &str, n: usize, from: Option<&str>) -> String {
    let files = match from {
        Some(id) => {
            format!("SELECT path_id FROM file_paths WHERE tenant_id = ${n} AND path_id >= {id}")
        }
        None => format!("SELECT path_id FROM file_paths WHERE tenant_id = ${n}"),
    };
    match table {
        "file_paths" | "content_chunks" => format!("tenant_id = ${n}"),
        "file_metadata" | "version_history" => format!("path_id IN ({files})"),
        _ => format!(
            "((table_name = 'content_chunks' AND key1 = ${n}) OR (table_name = 'file_metadata' \
             AND key1 IN (SELECT path_id::text FROM file_paths WHERE tenant_id = ${n})))"
        ),
    }
}

/// [`tenant_filter`] as a lookup of each row's file by its id, for rows
/// already narrowed to the tenant's transactions (about as many as the
/// tenant's changes): a join with all of the tenant's files would read
/// them all for a few rows.
fn row_of_tenant(table: &str, n: usize) -> String {
    let file_of =
        |id: &str| format!("(SELECT f.tenant_id FROM file_paths f WHERE f.path_id = {id})");
    match table {
        "file_paths" | "content_chunks" => format!("tenant_id = ${n}"),
        "file_metadata" | "version_history" => {
            format!("{} = ${n}", file_of(&format!("{table}.path_id")))
        }
        _ => format!(
            "CASE table_name WHEN 'content_chunks' THEN key1 WHEN 'file_metadata' THEN {} END = ${n}",
            file_of("nexus_file_id(key1)")
        ),
    }
}

/// When the database server started, in microseconds: a transaction id
/// names one transaction only while it runs (after a crash, ids that never
/// reached the disk are handed out again; a standby promoted in a
/// failover may not have had them).
macro_rules! started {
    () => {
        "(extract(epoch FROM pg_postmaster_start_time()) * 1000000)::int8"
    };
}

/// The feed's bounds in the current snapshot: the safe position (every
/// transaction that could still write rows of this database at or below it
/// has ended) and the next transaction id.
///
/// The safe position is one below the oldest transaction still running,
/// not counting those known to belong to another database: a session (or a
/// prepared transaction) of another database can never write here, so the
/// feed of this one does not wait for it. A running transaction whose
/// database is not known (its session ended or moved on to another
/// transaction since the snapshot) is waited for. The sessions' ids are 32
/// bits, the snapshot's 64: running ids are within 2^31 of each other, so
/// the low 32 bits name one. The third column says whether the
/// transaction that holds the position back had already ended by the time
/// the sessions were read (read again, the position moves past it).
/// ARCHITECTURE.md has the argument.
const BOUNDS: &str = concat!(
    "WITH snap AS (SELECT pg_current_snapshot() AS s), \
     elsewhere AS ( \
       SELECT backend_xid AS xid FROM pg_stat_activity \
        WHERE backend_xid IS NOT NULL AND datname IS NOT NULL AND datname <> current_database() \
       UNION ALL SELECT transaction FROM pg_prepared_xacts WHERE database <> current_database()), \
     holder AS ( \
       SELECT min(x::text::int8) AS x FROM snap, pg_snapshot_xip(snap.s) AS x \
        WHERE x::text::int8 % 4294967296 NOT IN (SELECT xid::text::int8 FROM elsewhere)) \
     SELECT coalesce(holder.x, pg_snapshot_xmax(snap.s)::text::int8) - 1, \
            pg_snapshot_xmax(snap.s)::text::int8, \
            coalesce(pg_xact_status(holder.x::text::xid8) <> 'in progress', false), ",
    started!(),
    " FROM snap, holder"
);

/// How many times [`bounds`] reads again while the transaction holding the
/// position back has ended.
const BOUNDS_READS: usize = 4;

/// The feed's safe position, the next transaction id and when the
/// database server started ([`BOUNDS`]).
struct Bounds {
    safe: i64,
    next: i64,
    started: i64,
}

/// [`Bounds`], read outside the snapshot that then reads rows up to it:
/// any snapshot taken later sees every transaction that had ended before
/// this one. Read again while the transaction that held the position back
/// has ended in the meantime (a session of another database that went on
/// quickly cannot be told apart from one of this database), so that a pull
/// right after a write sees the write.
async fn bounds(client: &Cached<'_, impl GenericClient + Sync>) -> Result<Bounds> {
    let mut read = 0;
    loop {
        read += 1;
        let row = client
            .query_one(BOUNDS, &[])
            .await
            .map_err(pg_err("reading the feed's safe position"))?;
        let ended: bool = row.get(2);
        if !ended || read == BOUNDS_READS {
            return Ok(Bounds {
                safe: row.get(0),
                next: row.get(1),
                started: row.get(3),
            });
        }
    }
}

/// The `change_seq` of the first `limit` rows that `cond` keeps, all
/// tables merged in order (an index scan per table, merged; it stops at
/// `limit`): one stamp per row.
fn first_stamps(cond: &str, limit: &str) -> String {
    let tables: Vec<String> = nexus_core::CHANGE_TABLES
        .iter()
        .map(|t| {
            format!(
                "(SELECT change_seq AS s FROM {t} WHERE {cond} ORDER BY change_seq LIMIT {limit})"
            )
        })
        .collect();
    format!(
        "SELECT s FROM ({}) AS t ORDER BY s LIMIT {limit}",
        tables.join(" UNION ALL ")
    )
}

/// The first rows after `$1` through `$2`, at most `$3` ([`first_stamps`]).
fn stamps_in_range() -> String {
    first_stamps("change_seq > $1 AND change_seq <= $2", "$3")
}

/// The first rows of the transactions `$1` (an array), at most `$2`
/// ([`first_stamps`]).
fn stamps_of_transactions() -> String {
    first_stamps("change_seq = ANY($1::int8[])", "$2")
}

/// A transaction that wrote only one source's rows
/// ([`OWN_TRANSACTION`]): that source's pulls may pass over it unread
/// ([`read_tenant_page`]'s `leave_out`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnTransaction {
    /// Its id (`change_seq` of its rows).
    pub id: i64,
    /// When the database server that ran it started ([`started!`]): the
    /// id names it only while that server runs.
    pub started: i64,
    /// How many rows it wrote: at least as many as still carry its id
    /// (a row written again carries the id of the transaction that did).
    pub rows: i64,
}

/// The statement that tells, inside a writing transaction, its id, when
/// the database server started, how many rows it wrote, and whether every
/// row it wrote has the
/// origin `$1` (each of its rows in the feed's tables, found by
/// `change_seq`, the id of the transaction that last wrote the row; one
/// that wrote none holds nothing to pass over), and its commit is as durable as
/// [`DURABLE_HERE`] makes a page's (`synchronous_commit` `on` or
/// `remote_apply`: flushed, and on the synchronous standbys if any; an id
/// whose commit a crash lost may be handed out again after the database
/// server recovers in place, which does not change its start time, and
/// one a promoted standby never received, to its own transactions): such
/// a transaction holds nothing
/// for that source's pulls, which leave out a page's rows of their own
/// origin anyway (`nexus_core::Store::apply_pull`). A row of it written
/// again later is read with the transaction that wrote it; one the
/// conflict rule marks as the database's later without stamping it again
/// (`nexus_sync`'s `OWN_VERSIONS`, `OWN_KEYS`) holds what the source sent.
pub static OWN_TRANSACTION: LazyLock<String> = LazyLock::new(|| {
    let written: Vec<String> = nexus_core::CHANGE_TABLES
        .iter()
        .map(|t| format!("SELECT origin_id FROM {t} WHERE change_seq = x.id"))
        .collect();
    format!(
        "SELECT x.id, {}, current_setting('synchronous_commit') IN ('on', 'remote_apply') \
         AND w.others = 0 AND w.rows > 0, w.rows \
         FROM (SELECT pg_current_xact_id()::text::int8 AS id) AS x, \
         LATERAL (SELECT count(*) AS rows, \
                         count(*) FILTER (WHERE origin_id IS DISTINCT FROM $1) AS others \
                  FROM ({}) AS r) AS w",
        started!(),
        written.join(" UNION ALL ")
    )
});

/// The running transaction, read by [`OWN_TRANSACTION`], when it wrote
/// only the source's rows.
pub fn own_transaction(row: &Row) -> Option<OwnTransaction> {
    row.get::<_, bool>(2).then(|| OwnTransaction {
        id: row.get(0),
        started: row.get(1),
        rows: row.get(3),
    })
}

/// [`TENANT_TRANSACTIONS`]'s text, for it and
/// [`TENANT_TRANSACTIONS_ALONE`].
macro_rules! tenant_transactions_sql {
    () => {
        "SELECT change_seq FROM ( \
         (SELECT change_seq FROM file_paths \
           WHERE tenant_id = $4 AND change_seq > $1 AND change_seq <= $2 ORDER BY change_seq LIMIT $3) \
         UNION (SELECT change_seq FROM content_chunks \
           WHERE tenant_id = $4 AND change_seq > $1 AND change_seq <= $2 ORDER BY change_seq LIMIT $3) \
         UNION (SELECT change_seq FROM nexus_feed_tenants \
           WHERE tenant_id = $4 AND change_seq > $1 AND change_seq <= $2 ORDER BY change_seq LIMIT $3) \
         UNION (SELECT DISTINCT change_seq FROM nexus_feed_tenants \
           WHERE tenant_id IS NULL AND change_seq > $1 AND change_seq <= $2 ORDER BY change_seq LIMIT $3) \
         ) AS t ORDER BY change_seq LIMIT $3"
    };
}

/// The first `$3` transactions after `$1` through `$2` that wrote rows of
/// the tenant `$4`: its files and chunks (by their indexes on `(tenant_id,
/// change_seq)`), its versions, keys and removals, and rows whose tenant
/// was not known when written (every tenant reads those; the last two in
/// `nexus_feed_tenants`, PostgreSQL migration 0010), merged. Other tenants'
/// transactions are never read. A part cut at `$3` rows is complete below
/// its last transaction, and what it cut is made up for: the files' and
/// chunks' parts count rows (so `$3` of them fill a page before their last
/// transaction), the others distinct transactions (so the whole list is cut
/// there too: [`read_in`] then ends the page at its last transaction).
const TENANT_TRANSACTIONS: &str = tenant_transactions_sql!();

/// Where a page of the feed ends.
#[derive(Debug, PartialEq)]
enum PageEnd {
    /// After whole transactions: through this position.
    Through(i64),
    /// Inside this transaction, larger than a page alone: its first part.
    Part(i64),
}

/// The end of a page of at most `limit - 1` rows (more when one
/// transaction alone has more), from the stamps of the first rows after its
/// position, in order (at most `limit`): stop before the transaction of
/// the row past the page, unless it is the first (then that transaction in
/// parts); through `end` when no row is past the page.
fn page_end(stamps: &[i64], limit: i64, end: i64) -> PageEnd {
    match stamps.get(usize::try_from(limit - 1).unwrap_or(usize::MAX)) {
        None => PageEnd::Through(end),
        Some(&beyond) if beyond > stamps[0] => PageEnd::Through(beyond - 1),
        Some(&beyond) => PageEnd::Part(beyond),
    }
}

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
    within: Option<&SnapshotCursor>,
    max_rows: usize,
) -> Result<FeedPage> {
    read_tenant_page(client, cache, None, after, within, max_rows, &[]).await
}

/// [`read_page`] for one tenant (`Some`), or all (`None`): only rows of
/// the tenant's files and chunks and their removals, read from the
/// transactions that wrote them ([`TENANT_TRANSACTIONS`]: other tenants'
/// transactions are neither read nor counted towards the page's size).
/// Positions are those of the whole feed; a page may hold none and still
/// move the position (past other tenants' transactions, or a transaction
/// whose rows were all written again later). The tenant's transactions in
/// `leave_out` (the reader's own, every row of which it wrote:
/// [`OWN_TRANSACTION`]) are not read, when this database server ran them
/// (their `started`); they still count towards where the page ends (the
/// list of a tenant's transactions is cut by rows, not transactions, so
/// only their rows tell where the list is complete: counted, unless the
/// list holds only such transactions with fewer rows in all than would
/// cut it). The page says how many it passed over
/// ([`FeedPage::left_out`]). A tenant's page of such transactions alone
/// is read with its list only, in no transaction ([`own_pushes_page`]);
/// every other page in one read-only repeatable-read transaction.
pub async fn read_tenant_page(
    client: &mut tokio_postgres::Client,
    cache: &nexus_postgres::StatementCache,
    tenant: Option<&str>,
    after: i64,
    within: Option<&SnapshotCursor>,
    max_rows: usize,
    leave_out: &[OwnTransaction],
) -> Result<FeedPage> {
    let tables = snapshot_tables();
    let start = resume_at(&tables, within)?;
    let bounds = bounds(&Cached::new(&*client, cache)).await?;
    // Ids name the transactions noted only while the same database server
    // runs.
    let leave_out: Vec<OwnTransaction> = leave_out
        .iter()
        .filter(|t| t.started == bounds.started)
        .copied()
        .collect();
    // The common page of a store that pushed and pulls: its own pushes
    // alone, read without a transaction.
    if let (None, Some(t)) = (within, tenant) {
        let db = Cached::new(&*client, cache);
        if let Some(page) = own_pushes_page(&db, t, after, &bounds, max_rows, &leave_out).await? {
            return Ok(page);
        }
    }
    let tx = crate::ops::begin_snapshot(client, "starting a read of the change feed").await?;
    let db = Cached::new(&tx, cache);
    // The plan settings go with the page's first statement (pipelined;
    // checked first: see `read_in`).
    let settings = async {
        db.execute(nexus_postgres::PLAN_ONCE, &[])
            .await
            .map_err(pg_err("starting a read of the change feed"))
    };
    let read = async {
        match within {
            // The rest of a transaction read in part: it had ended (it was
            // below the bound of the page that began it).
            Some(cursor) => {
                let part = Part {
                    after,
                    stamp: after,
                    start,
                    cursor: Some(cursor),
                };
                read_part(&db, &tables, tenant, part, max_rows).await
            }
            None => read_in(&db, &tables, tenant, after, &bounds, max_rows, &leave_out).await,
        }
    };
    let (settings, page) = tokio::join!(settings, read);
    settings?;
    let page = page?;
    // A page that moves the position wrote a record of its own
    // ([`DURABLE_HERE`]), but one that ends at the last of the reader's
    // own pushes it passed over (durable already): this commit makes its
    // bound durable.
    tx.commit()
        .await
        .map_err(pg_err("ending a read of the change feed"))?;
    Ok(page)
}

/// The statement that makes a transaction's commit make a feed position
/// read before it durable: a transaction id that never reached the disk
/// can be handed out again after a crash, and a commit made with
/// `synchronous_commit` off can be lost (or not yet be on a synchronous
/// standby). A transactional message (`pg_logical_emit_message`) takes an
/// id, above every id of a page whose bound was read before it, and writes
/// a WAL record, so that the commit, with `synchronous_commit` on, flushes
/// the WAL up to its commit record (and waits for the synchronous
/// standbys): that record follows the commits of every transaction the page
/// covers (they had ended when its bound was read), so neither can happen
/// to anything the page covers. (A transaction that only takes an id
/// writes no WAL before its commit record, and PostgreSQL commits it
/// asynchronously whatever `synchronous_commit` says.)
macro_rules! durable_select {
    () => {
        "SELECT set_config('synchronous_commit', 'on', true), \
         pg_logical_emit_message(true, 'nexus.feed', '')"
    };
}

/// [`durable_select!`] in the page's own transaction, sent with its table
/// reads (not with its first statement: while the page holds an id, other
/// readers' pages stop below it).
const DURABLE_HERE: &str = durable_select!();

/// [`DURABLE_HERE`] when the page moves the position to a point not
/// durable already (`moves`; a page that does not move it hands out
/// nothing new, and one that ends at the reader's own push passed over
/// ends where a flushed commit is).
async fn durable_here(db: &Cached<'_, impl GenericClient + Sync>, moves: bool) -> Result<()> {
    if moves {
        db.execute(DURABLE_HERE, &[])
            .await
            .map_err(pg_err("making the feed's position durable"))?;
    }
    Ok(())
}

/// The rows a page reads at most, plus one (the first row beyond tells
/// where the page ends).
fn page_limit(max_rows: usize) -> i64 {
    i64::try_from(max_rows.max(1)).unwrap_or(i64::MAX - 1) + 1
}

/// [`TENANT_TRANSACTIONS`] as [`own_pushes_page`] sends it, outside a
/// page's transaction and its plan settings (`nexus_postgres::PLAN_ONCE`
/// lasts for a transaction): a statement of its own text, prepared apart,
/// so that the plan PostgreSQL keeps for it (chosen by the session's
/// settings) is never the one a page's transaction runs.
const TENANT_TRANSACTIONS_ALONE: &str = concat!(tenant_transactions_sql!(), " -- alone");

/// `sql` ([`TENANT_TRANSACTIONS`] or [`TENANT_TRANSACTIONS_ALONE`]): the
/// first `limit` transactions after `after` through `safe` that wrote rows
/// of `tenant`.
async fn tenant_transactions(
    db: &Cached<'_, impl GenericClient + Sync>,
    sql: &str,
    tenant: &str,
    after: i64,
    safe: i64,
    limit: i64,
) -> Result<Vec<i64>> {
    Ok(db
        .query(sql, &[&after, &safe, &limit, &tenant])
        .await
        .map_err(pg_err("paging the change feed"))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// The page of a tenant's transaction list (`list`, read up to the safe
/// position) that holds only the reader's own pushes (`own`), with fewer
/// rows in all than would cut a part of the list (the list's rows tell
/// where it is complete, and these need not be read): it passes over them
/// all and ends at the last of them, caught up as far as the tenant goes,
/// and needs no record of its own to be durable (their commits were
/// flushed: [`OWN_TRANSACTION`]; no id up to the last can be handed out
/// again). `None` for any other list, and for an empty one (an idle page
/// moves the position to the safe one, which a record makes durable).
fn own_pushes_only(
    list: &[i64],
    own: &[OwnTransaction],
    after: i64,
    limit: i64,
) -> Option<FeedPage> {
    let &last = list.last()?;
    let rows = list.iter().try_fold(0, |sum, s| {
        own.iter().find(|t| t.id == *s).map(|t| sum + t.rows)
    })?;
    (rows < limit).then(|| FeedPage {
        changes: Changes {
            after,
            through: last,
            ..Changes::default()
        },
        caught_up: true,
        left_out: list.len() as u64,
        ..FeedPage::default()
    })
}

/// [`own_pushes_only`]'s page, read with the list alone: one statement,
/// in no transaction of its own (no rows are read, so no snapshot need be
/// shared; any snapshot taken after `bounds` were read sees every
/// transaction up to the safe position). `None`: read the page as any
/// other ([`read_in`]).
async fn own_pushes_page(
    db: &Cached<'_, impl GenericClient + Sync>,
    tenant: &str,
    after: i64,
    &Bounds { safe, next, .. }: &Bounds,
    max_rows: usize,
    own: &[OwnTransaction],
) -> Result<Option<FeedPage>> {
    if own.is_empty() || safe <= after || after >= next {
        return Ok(None);
    }
    let limit = page_limit(max_rows);
    let list =
        tenant_transactions(db, TENANT_TRANSACTIONS_ALONE, tenant, after, safe, limit).await?;
    Ok(own_pushes_only(&list, own, after, limit))
}

async fn read_in(
    db: &Cached<'_, impl GenericClient + Sync>,
    tables: &[SnapshotTable],
    tenant: Option<&str>,
    after: i64,
    &Bounds { safe, next, .. }: &Bounds,
    max_rows: usize,
    own: &[OwnTransaction],
) -> Result<FeedPage> {
    let is_own = |s: &i64| own.iter().any(|t| t.id == *s);
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
            ..FeedPage::default()
        });
    }
    let limit = page_limit(max_rows);
    // All tenants: the first rows after the position. One tenant: the
    // transactions that wrote its rows, no others, then their first rows;
    // the page ends at the last of them when the list was cut.
    let (transactions, end, stamps) = match &tenant {
        None => {
            let rows = db.query(&stamps_in_range(), &[&after, &safe, &limit]).await;
            (Vec::new(), safe, rows)
        }
        Some(t) => {
            let list = tenant_transactions(db, TENANT_TRANSACTIONS, t, after, safe, limit).await?;
            if let Some(page) = own_pushes_only(&list, own, after, limit) {
                return Ok(page);
            }
            let end = match list.last() {
                Some(&last) if list.len() as i64 == limit => last,
                _ => safe,
            };
            let rows = db.query(&stamps_of_transactions(), &[&list, &limit]).await;
            (list, end, rows)
        }
    };
    let stamps: Vec<i64> = stamps
        .map_err(pg_err("paging the change feed"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let through = match page_end(&stamps, limit, end) {
        PageEnd::Through(through) => through,
        // A transaction of the reader's own larger than a page alone:
        // passed over whole.
        PageEnd::Part(stamp) if is_own(&stamp) => stamp,
        PageEnd::Part(stamp) => {
            let part = Part {
                after,
                stamp,
                start: 0,
                cursor: None,
            };
            return read_part(db, tables, tenant, part, max_rows).await;
        }
    };
    // The page's transactions, but those passed over unread.
    let (left_out, transactions): (Vec<i64>, Vec<i64>) = transactions
        .into_iter()
        .filter(|&s| s <= through)
        .partition(is_own);
    let caught_up = through == safe;
    // A page that passes over the reader's own pushes alone ends at the
    // last of them, needing no record of its own to be durable: their
    // commits were flushed ([`OWN_TRANSACTION`]), so no id up to it can be
    // handed out again, and no transaction of the tenant's lies between it
    // and `through` (caught up as far as the tenant goes).
    let (through, moves) = match left_out.iter().max() {
        Some(&last) if transactions.is_empty() => (last, false),
        _ => (through, through > after),
    };
    let range: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = match &tenant {
        None => [&after, &through],
        Some(t) => [&transactions, t],
    };
    // A tenant's page of none of its transactions reads nothing.
    let reads = !(tenant.is_some() && transactions.is_empty());
    let q = async |sql: &str, what: &'static str| {
        if !reads {
            return Ok(Vec::new());
        }
        db.query(sql, &range).await.map_err(pg_err(what))
    };
    let sql = feed_selects(tenant.is_some());
    // Sent together (pipelined: one round trip, not six), all in the
    // page's one snapshot; prepared first, so that each is sent when first
    // polled, in order, and checked in the order sent: the error is the
    // first statement's, not the "transaction aborted" of those behind it.
    let reads_sql = sql.iter().map(String::as_str).filter(|_| reads);
    for statement in reads_sql.chain(moves.then_some(DURABLE_HERE)) {
        db.prepare(statement)
            .await
            .map_err(pg_err("preparing a read of the change feed"))?;
    }
    let [
        files_sql,
        metadata_sql,
        versions_sql,
        chunks_sql,
        tombstones_sql,
    ] = sql;
    let (files, metadata, versions, chunks, tombstones, durable) = tokio::join!(
        q(files_sql, "reading changed files"),
        q(metadata_sql, "reading changed metadata"),
        q(versions_sql, "reading changed versions"),
        q(chunks_sql, "reading changed chunks"),
        q(tombstones_sql, "reading removals"),
        durable_here(db, moves),
    );
    let (files, metadata, versions) = (files?, metadata?, versions?);
    let (chunks, tombstones) = (chunks?, tombstones?);
    durable?;
    let files: Vec<FileRow> = read_rows(&files)?;
    let metadata: Vec<MetadataRow> = read_rows(&metadata)?;
    let versions: Vec<VersionRow> = read_rows(&versions)?;
    let changes = Changes {
        after,
        through,
        files,
        metadata,
        versions,
        chunks: read_rows(&chunks)?,
        tombstones: read_rows(&tombstones)?,
    };
    let referenced = referenced(db, &changes, tenant, through, through).await?;
    Ok(FeedPage {
        changes,
        caught_up,
        referenced_files: referenced.files,
        referenced_versions: referenced.versions,
        within: None,
        left_out: left_out.len() as u64,
    })
}

/// What a page's rows refer to that a later transaction wrote again (so
/// its row is in a later page, and the page would not apply where it is
/// new): the current rows of the parent versions of the page's versions
/// (and of their parents, as far as those were written after `parents_after`:
/// a second source pushing a version a store already pushed stamps it
/// again, after its children), and of the files those versions and the
/// page's versions and metadata belong to, written after `through`. Rows
/// written up to `through` came in this page or an earlier one, or in an
/// earlier part of the same transaction for files, whose part comes
/// before any version's; a parent version can come in a later part of
/// it (a conflict copy's version, whose parent is in the file it was
/// copied from, comes first when the copy's id sorts first), so parts ask
/// from the transaction before theirs. Of the tenant only (`tenant`).
async fn referenced(
    db: &Cached<'_, impl GenericClient + Sync>,
    changes: &Changes,
    tenant: Option<&str>,
    through: i64,
    parents_after: i64,
) -> Result<Referenced> {
    let in_page: HashSet<&str> = changes
        .versions
        .iter()
        .map(|v| v.version_id.as_str())
        .collect();
    let mut parents: Vec<&str> = changes
        .versions
        .iter()
        .filter_map(|v| v.parent_version_id.as_deref())
        .filter(|p| !in_page.contains(p))
        .collect();
    parents.sort_unstable();
    parents.dedup();
    // `$1`: ids, `$2`: the bound, `$3`: the tenant.
    let of_tenant = |table: &str| match tenant {
        Some(_) => format!(" AND {}", tenant_filter(table, 3, None)),
        None => String::new(),
    };
    let read = async |sql: String, ids: &[&str], after: i64, what: &'static str| {
        let ids: &(dyn tokio_postgres::types::ToSql + Sync) = &ids;
        let rows = match &tenant {
            Some(t) => db.query(&sql, &[ids, &after, t]).await,
            None => db.query(&sql, &[ids, &after]).await,
        };
        rows.map_err(pg_err(what))
    };
    let versions: Vec<VersionRow> = if parents.is_empty() {
        Vec::new()
    } else {
        let sql = format!(
            "WITH RECURSIVE later (version_id) AS ( \
                 SELECT version_id FROM version_history \
                 WHERE version_id = ANY($1::text[]::uuid[]) AND change_seq > $2 \
               UNION \
                 SELECT p.version_id FROM later l \
                 JOIN version_history v ON v.version_id = l.version_id \
                 JOIN version_history p ON p.version_id = v.parent_version_id \
                 WHERE p.change_seq > $2) \
             SELECT {}, change_seq, origin_id, origin_seq FROM version_history \
             WHERE version_id IN (SELECT version_id FROM later){} \
             ORDER BY version_number, version_id",
            VERSION_HISTORY.select_list(feed_column),
            of_tenant("version_history")
        );
        let rows = read(
            sql,
            &parents,
            parents_after,
            "reading the parents of changed versions",
        )
        .await?;
        read_rows(&rows)?
    };
    let have: HashSet<&str> = changes.files.iter().map(|f| f.path_id.as_str()).collect();
    let mut missing: Vec<&str> = changes
        .versions
        .iter()
        .chain(&versions)
        .map(|v| v.path_id.as_str())
        .chain(changes.metadata.iter().map(|m| m.path_id.as_str()))
        .filter(|p| !have.contains(p))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    let files = if missing.is_empty() {
        Vec::new()
    } else {
        let sql = format!(
            "SELECT {}, change_seq, origin_id, origin_seq FROM file_paths \
             WHERE path_id = ANY($1::text[]::uuid[]) AND change_seq > $2{} ORDER BY path_id",
            FILE_PATHS.select_list(feed_column),
            of_tenant("file_paths")
        );
        let rows = read(sql, &missing, through, "reading the files of changed rows").await?;
        read_rows::<FileRow>(&rows)?
    };
    Ok(Referenced { files, versions })
}

/// The rows [`referenced`] finds (`FeedPage::referenced_files` and
/// `referenced_versions`).
struct Referenced {
    files: Vec<FileRow>,
    versions: Vec<VersionRow>,
}

/// Which part of one transaction a page reads.
struct Part<'a> {
    /// The position the page is read from (`changes.after`).
    after: i64,
    /// The transaction.
    stamp: i64,
    /// The table to begin with (the cursor's).
    start: usize,
    /// The last row already read, if any.
    cursor: Option<&'a SnapshotCursor>,
}

/// A page of one transaction's rows (one larger than a page), after
/// `part.cursor`, tables in dependency order, each in snapshot order, at
/// most `max_rows`. Its `changes.through` is the transaction; `within` is
/// its last row while more may follow, `None` once the transaction is
/// read whole.
async fn read_part(
    db: &Cached<'_, impl GenericClient + Sync>,
    tables: &[SnapshotTable],
    tenant: Option<&str>,
    part: Part<'_>,
    max_rows: usize,
) -> Result<FeedPage> {
    let mut changes = Changes {
        after: part.after,
        through: part.stamp,
        ..Changes::default()
    };
    let mut left = max_rows.max(1);
    for (i, t) in tables.iter().enumerate().skip(part.start) {
        let limit = i64::try_from(left).unwrap_or(i64::MAX);
        let resume = part.cursor.filter(|_| i == part.start);
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&part.stamp];
        params.extend(resume.map(key_params).unwrap_or_default());
        if let Some(t) = &tenant {
            params.push(t);
        }
        params.push(&limit);
        let rows = db
            .query(&(t.within)(resume.is_some(), tenant.is_some()), &params)
            .await
            .map_err(pg_err("reading a transaction in parts"))?;
        (t.fill)(&rows, &mut changes)?;
        left -= rows.len();
        if left == 0 {
            break;
        }
    }
    let within = if left == 0 {
        SnapshotCursor::last_of(&changes)
    } else {
        None
    };
    let referenced = referenced(db, &changes, tenant, part.stamp, part.stamp - 1).await?;
    // The first part of a transaction moves the position to it; the next
    // ones stay in it (the first made it durable).
    durable_here(db, part.after < part.stamp).await?;
    Ok(FeedPage {
        changes,
        caught_up: false,
        referenced_files: referenced.files,
        referenced_versions: referenced.versions,
        within,
        left_out: 0,
    })
}

/// Puts rows of one table into a chunk.
type Fill = fn(&[Row], &mut Changes) -> Result<()>;

/// One table of a snapshot: its name, its query ([`snapshot_sql`]), and
/// how its rows go into a chunk.
struct SnapshotTable {
    table: &'static nexus_core::tables::Table,
    sql: fn(bool, bool, bool) -> String,
    /// Its query of one transaction's rows ([`within_sql`]).
    within: fn(bool, bool) -> String,
    fill: Fill,
}

fn snapshot_table<T: TableRow>(fill: Fill) -> SnapshotTable {
    SnapshotTable {
        table: T::TABLE,
        sql: snapshot_sql::<T>,
        within: within_sql::<T>,
        fill,
    }
}

/// The five tables of a snapshot, in dependency order.
fn snapshot_tables() -> [SnapshotTable; 5] {
    [
        snapshot_table::<FileRow>(|rows, c| {
            c.files = read_rows(rows)?;
            Ok(())
        }),
        snapshot_table::<VersionRow>(|rows, c| {
            c.versions = read_rows(rows)?;
            Ok(())
        }),
        snapshot_table::<MetadataRow>(|rows, c| {
            c.metadata = read_rows(rows)?;
            Ok(())
        }),
        snapshot_table::<ChunkRow>(|rows, c| {
            c.chunks = read_rows(rows)?;
            Ok(())
        }),
        snapshot_table::<TombstoneRow>(|rows, c| {
            c.tombstones = read_rows(rows)?;
            Ok(())
        }),
    ]
}

/// The index of the table that `after` names (0 without one), once its key
/// is checked: as many values as the table's snapshot order has columns,
/// UUIDs and integers where those are.
fn resume_at(tables: &[SnapshotTable], after: Option<&SnapshotCursor>) -> Result<usize> {
    let Some(cursor) = after else {
        return Ok(0);
    };
    let invalid = |reason: String| nexus_core::Error::InvalidArgument {
        name: "snapshot cursor",
        value: format!("{} {:?}", cursor.table, cursor.key),
        reason,
    };
    let i = tables
        .iter()
        .position(|t| t.table.name == cursor.table)
        .ok_or_else(|| invalid("names no table of a snapshot".into()))?;
    let order = tables[i].table.snapshot_order;
    if cursor.key.len() != order.len() {
        return Err(invalid(format!(
            "a key of {} needs {} values ({})",
            cursor.table,
            order.len(),
            order.join(", ")
        )));
    }
    for (name, value) in order.iter().zip(&cursor.key) {
        let ok = match tables[i].table.column(name).map(|c| c.kind) {
            Some(Kind::Uuid) => uuid::Uuid::parse_str(value).is_ok(),
            Some(Kind::Int4) => value.parse::<i32>().is_ok(),
            Some(Kind::Int) => value.parse::<i64>().is_ok(),
            _ => true,
        };
        if !ok {
            return Err(invalid(format!(
                "{name} {value:?} is not a value of its column"
            )));
        }
    }
    Ok(i)
}

fn key_params(cursor: &SnapshotCursor) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    cursor
        .key
        .iter()
        .map(|k| k as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect()
}

/// Reads every row of the database from one snapshot, for a first pull
/// into an empty store: hands `sink` chunks of about `max_rows` rows (one
/// table per chunk, tables in dependency order, each in its snapshot order,
/// through server-side portals, so memory holds one chunk), and returns the
/// feed position the snapshot covers (every transaction up to it is in the
/// snapshot; rows of later transactions that it happens to hold come again
/// from the feed, where applying them again changes nothing). Every chunk
/// carries that position as its `through`. With `after` (where an earlier
/// read's loading stopped), it reads only the rows after that one: the
/// tables before its table are skipped.
pub async fn read_snapshot(
    client: &mut tokio_postgres::Client,
    max_rows: usize,
    after: Option<&SnapshotCursor>,
    mut sink: impl FnMut(Changes) -> Result<()>,
) -> Result<i64> {
    let tables = snapshot_tables();
    let start = resume_at(&tables, after)?;
    let safe = bounds(&Cached::new(&*client, &Default::default()))
        .await?
        .safe;
    let tx = crate::ops::begin_snapshot(client, "starting a snapshot read").await?;
    let chunk = i32::try_from(max_rows.max(1)).unwrap_or(i32::MAX);
    for (i, t) in tables.iter().enumerate().skip(start) {
        let portal = match after {
            Some(cursor) if i == start => {
                tx.bind(&(t.sql)(true, false, false), &key_params(cursor))
                    .await
            }
            _ => tx.bind(&(t.sql)(false, false, false), &[]).await,
        }
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
            (t.fill)(&rows, &mut c)?;
            sink(c)?;
        }
    }
    tx.commit()
        .await
        .map_err(pg_err("ending a snapshot read"))?;
    make_durable(client).await?;
    Ok(safe)
}

/// One answer of a paged snapshot read ([`read_snapshot_page`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotPage {
    /// The rows (`through`: the feed position this page's snapshot covers).
    pub changes: Changes,
    /// Where the next page starts after; `None`: the snapshot is complete.
    pub next: Option<SnapshotCursor>,
}

/// [`read_snapshot`] one page at a time, for a sync server: the rows of
/// the tenant (`None`: all) after `after` (or from the start), at most
/// `max_rows`, across tables, read from a snapshot of their own. A client
/// loads the pages in order and takes the first page's position (the
/// smallest) as where the feed continues: what changed between two pages'
/// snapshots comes again from the feed.
pub async fn read_snapshot_page(
    client: &mut tokio_postgres::Client,
    cache: &nexus_postgres::StatementCache,
    tenant: Option<&str>,
    after: Option<&SnapshotCursor>,
    max_rows: usize,
) -> Result<SnapshotPage> {
    let tables = snapshot_tables();
    let start = resume_at(&tables, after)?;
    let through = bounds(&Cached::new(&*client, cache)).await?.safe;
    let tx = crate::ops::begin_snapshot(client, "starting a snapshot read").await?;
    let mut changes = Changes {
        after: 0,
        through,
        ..Changes::default()
    };
    let mut left = max_rows.max(1);
    for (i, t) in tables.iter().enumerate().skip(start) {
        let limit = i64::try_from(left).unwrap_or(i64::MAX);
        let resume = after.filter(|_| i == start);
        let mut params = resume.map(key_params).unwrap_or_default();
        if let Some(t) = &tenant {
            params.push(t);
        }
        params.push(&limit);
        let rows = tx
            .query(&(t.sql)(resume.is_some(), tenant.is_some(), true), &params)
            .await
            .map_err(pg_err("reading a snapshot"))?;
        (t.fill)(&rows, &mut changes)?;
        left -= rows.len();
        if left == 0 {
            break;
        }
    }
    tx.commit()
        .await
        .map_err(pg_err("ending a snapshot read"))?;
    make_durable(client).await?;
    let next = if left == 0 {
        SnapshotCursor::last_of(&changes)
    } else {
        None
    };
    Ok(SnapshotPage { changes, next })
}

/// Makes the position of a snapshot read durable before it is handed out,
/// by a transaction of its own after the snapshot's (the argument of
/// [`durable_select!`]; a snapshot read is long, and an id it held all
/// along would stop every feed reader's pages below it).
async fn make_durable(client: &mut tokio_postgres::Client) -> Result<()> {
    let made = client
        .batch_execute(concat!("BEGIN; ", durable_select!(), "; COMMIT"))
        .await;
    if made.is_err() {
        // A statement of the batch failed: the ones after it, the commit
        // among them, did not run. The connection goes back to its pool
        // out of the transaction (if it is still open at all).
        let _ = client.batch_execute("ROLLBACK").await;
    }
    made.map_err(pg_err("making the feed's position durable"))
}

#[cfg(test)]
mod tests {
    use super::{OwnTransaction, PageEnd, own_pushes_only, page_end};

    #[test]
    fn a_list_of_own_pushes_alone_is_passed_over_whole() {
        let own = |id, rows| OwnTransaction {
            id,
            started: 1,
            rows,
        };
        let mine = [own(10, 2), own(12, 3)];
        // Pages of 9 rows (limit 10): both pushes, 5 rows, passed over;
        // the page ends at the last of them.
        let page = own_pushes_only(&[10, 12], &mine, 7, 10).unwrap();
        assert_eq!((page.changes.after, page.changes.through), (7, 12));
        assert!(page.caught_up && page.changes.is_empty() && page.within.is_none());
        assert_eq!(page.left_out, 2);
        // Another writer's transaction in the list, no list at all, or as
        // many rows as would cut it: read as any page.
        assert!(own_pushes_only(&[10, 11, 12], &mine, 7, 10).is_none());
        assert!(own_pushes_only(&[], &mine, 7, 10).is_none());
        assert!(own_pushes_only(&[10, 12], &mine, 7, 5).is_none());
        assert!(own_pushes_only(&[10, 12], &mine, 7, 6).is_some());
    }

    #[test]
    fn a_page_ends_before_the_transaction_that_fills_it() {
        // Pages of 4 rows (limit 5): transactions 10 (2 rows), 11 (2), 12 (3).
        let stamps = [10, 10, 11, 11, 12];
        assert_eq!(page_end(&stamps, 5, 99), PageEnd::Through(11));
        // No row past the page: through the end given.
        assert_eq!(page_end(&stamps[..4], 5, 99), PageEnd::Through(99));
        assert_eq!(page_end(&[], 5, 99), PageEnd::Through(99));
        // The first transaction alone fills the page: read in parts.
        assert_eq!(page_end(&[10; 5], 5, 99), PageEnd::Part(10));
    }
}
