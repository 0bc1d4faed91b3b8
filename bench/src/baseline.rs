//! The baselines of the benchmarks: the store's work per put, get and list
//! done by hand, written once over a small interface ([`Sql`]) and run on
//! two engines: C SQLite through rusqlite, and turso_core (the store's own
//! engine) used directly. The first shows the gap to C SQLite; the second
//! shows how much of it is the engine's (the same statements on the same
//! engine, without the store around them). `nexus-bench` runs both;
//! `nexus-backend-bench` runs the rusqlite one with a connection per
//! client.

use std::collections::HashMap;
use std::num::NonZero;
use std::path::Path;
use std::sync::Arc;

use nexus_core::NewFile;
use nexus_migrations::Dialect;
use turso_core::{Database, IO, Numeric, SqliteDialect, StepResult, Value};

/// How the C SQLite baselines (rusqlite) open their files: as the store
/// opens its own (WAL, `synchronous=FULL`, foreign keys on) and with the same
/// page cache as turso_core 0.8.3 gives each connection (2,000 pages;
/// SQLite's default is 2,000 KiB, a quarter of that).
pub const SQLITE_SETTINGS: &str = "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; \
     PRAGMA foreign_keys=ON; PRAGMA cache_size=2000;";

/// A parameter, borrowed from the caller.
#[derive(Debug, Clone, Copy)]
pub enum P<'a> {
    Text(&'a str),
    OptText(Option<&'a str>),
    Int(i64),
}

/// A row of a result, read by column.
pub trait Cols {
    fn text(&self, i: usize) -> String;
    fn opt_text(&self, i: usize) -> Option<String>;
    fn int(&self, i: usize) -> i64;
}

/// What a baseline needs of an engine: statements prepared once, run with
/// parameters.
pub trait Sql {
    /// Runs `sql`; calls `row` for each row it returns.
    fn run(&mut self, sql: &'static str, params: &[P<'_>], row: &mut dyn FnMut(&dyn Cols));

    fn execute(&mut self, sql: &'static str, params: &[P<'_>]) {
        self.run(sql, params, &mut |_| {});
    }

    /// Runs a read outside any transaction (where the engine wants one).
    fn read(&mut self, sql: &'static str, params: &[P<'_>], row: &mut dyn FnMut(&dyn Cols)) {
        self.run(sql, params, row);
    }
}

const BEGIN: &str = "BEGIN IMMEDIATE";
const COMMIT: &str = "COMMIT";
const NEXT_SEQ: &str = "UPDATE nexus_state SET change_seq = change_seq + 1 WHERE id = 1";
const SEQ: &str = "SELECT change_seq FROM nexus_state WHERE id = 1";
const LIVE: &str = "SELECT path_id, content_hash, current_version FROM file_paths \
     WHERE tenant_id = ?1 AND virtual_path = ?2 AND deleted_at IS NULL";
const INSERT_FILE: &str = "INSERT INTO file_paths (path_id, tenant_id, virtual_path, backend_id, \
     physical_path, size_bytes, content_hash, file_type, created_at, updated_at, deleted_at, \
     current_version, change_seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, NULL, 1, ?10)";
const UPDATE_FILE: &str = "UPDATE file_paths SET backend_id = ?1, physical_path = ?2, \
     size_bytes = ?3, content_hash = ?4, file_type = ?5, updated_at = ?6, current_version = ?7, \
     change_seq = ?8 WHERE path_id = ?9";
const INSERT_VERSION: &str = "INSERT INTO version_history (version_id, path_id, version_number, \
     backend_id, physical_path, content_hash, size_bytes, mime_type, parent_version_id, \
     source_type, change_reason, created_by, created_at, change_seq) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL, 'original', NULL, NULL, ?9, ?10)";
const GET: &str = "SELECT path_id, virtual_path, backend_id, physical_path, size_bytes, \
     content_hash, file_type, created_at, updated_at, current_version FROM file_paths \
     WHERE tenant_id = ?1 AND virtual_path = ?2 AND deleted_at IS NULL";
const LIST: &str = "SELECT path_id, virtual_path, backend_id, physical_path, size_bytes, \
     content_hash, file_type, created_at, updated_at, current_version FROM file_paths \
     WHERE tenant_id = ?1 AND virtual_path >= ?2 AND virtual_path < ?3 AND deleted_at IS NULL \
     ORDER BY virtual_path";
const LIST_PAGE: &str = "SELECT path_id, virtual_path, backend_id, physical_path, size_bytes, \
     content_hash, file_type, created_at, updated_at, current_version FROM file_paths \
     WHERE tenant_id = ?1 AND virtual_path >= ?2 AND virtual_path < ?3 AND deleted_at IS NULL \
     ORDER BY virtual_path LIMIT ?4";

/// The store's work, by hand: look up the live row, insert or update it,
/// append a version row, stamp the change sequence.
#[derive(Debug)]
pub struct Baseline<S> {
    sql: S,
    now: i64,
}

/// What a baseline materializes per row: the same fields as a `FileRecord`.
#[allow(dead_code)]
#[derive(Debug)]
pub struct Record {
    path_id: String,
    path: String,
    backend: String,
    physical_path: String,
    size: i64,
    etag: Option<String>,
    mime: Option<String>,
    created: i64,
    modified: i64,
    version: i64,
}

impl Record {
    fn read(r: &dyn Cols) -> Record {
        Record {
            path_id: r.text(0),
            path: r.text(1),
            backend: r.text(2),
            physical_path: r.text(3),
            size: r.int(4),
            etag: r.opt_text(5),
            mime: r.opt_text(6),
            created: r.int(7),
            modified: r.int(8),
            version: r.int(9),
        }
    }
}

fn uuid_like(n: i64) -> String {
    format!(
        "{:08x}-0000-4000-8000-{:012x}",
        (n >> 32) as u32,
        n & 0xffff_ffff_ffff
    )
}

impl<S: Sql> Baseline<S> {
    fn tick(&mut self) -> i64 {
        self.now += 1;
        self.now
    }

    pub fn put_in_txn(&mut self, seq: i64, f: &NewFile) {
        let now = self.tick();
        let mut existing: Option<(String, i64)> = None;
        self.sql
            .run(LIVE, &[P::Text("default"), P::Text(&f.path)], &mut |r| {
                existing = Some((r.text(0), r.int(2)))
            });
        let (path_id, version) = match existing {
            None => {
                let id = uuid_like(now);
                self.sql.execute(
                    INSERT_FILE,
                    &[
                        P::Text(&id),
                        P::Text("default"),
                        P::Text(&f.path),
                        P::Text(&f.backend),
                        P::Text(&f.physical_path),
                        P::Int(f.size as i64),
                        P::OptText(f.etag.as_deref()),
                        P::OptText(f.mime_type.as_deref()),
                        P::Int(now),
                        P::Int(seq),
                    ],
                );
                (id, 1)
            }
            Some((id, v)) => {
                self.sql.execute(
                    UPDATE_FILE,
                    &[
                        P::Text(&f.backend),
                        P::Text(&f.physical_path),
                        P::Int(f.size as i64),
                        P::OptText(f.etag.as_deref()),
                        P::OptText(f.mime_type.as_deref()),
                        P::Int(now),
                        P::Int(v + 1),
                        P::Int(seq),
                        P::Text(&id),
                    ],
                );
                (id, v + 1)
            }
        };
        let version_id = uuid_like(now + (1 << 40));
        self.sql.execute(
            INSERT_VERSION,
            &[
                P::Text(&version_id),
                P::Text(&path_id),
                P::Int(version),
                P::Text(&f.backend),
                P::Text(&f.physical_path),
                P::OptText(f.etag.as_deref()),
                P::Int(f.size as i64),
                P::OptText(f.mime_type.as_deref()),
                P::Int(now),
                P::Int(seq),
            ],
        );
    }

    /// One write transaction stamped with the next change sequence number.
    pub fn write<T>(&mut self, f: impl FnOnce(&mut Self, i64) -> T) -> T {
        self.sql.execute(BEGIN, &[]);
        self.sql.execute(NEXT_SEQ, &[]);
        let mut seq = 0;
        self.sql.run(SEQ, &[], &mut |r| seq = r.int(0));
        let out = f(self, seq);
        self.sql.execute(COMMIT, &[]);
        out
    }

    pub fn get(&mut self, path: &str) -> Option<Record> {
        let mut out = None;
        self.sql
            .read(GET, &[P::Text("default"), P::Text(path)], &mut |r| {
                out = Some(Record::read(r))
            });
        out
    }

    /// Every live file in `[prefix, upper)`, in path order.
    pub fn list(&mut self, prefix: &str, upper: &str) -> Vec<Record> {
        let mut out = Vec::new();
        self.sql.read(
            LIST,
            &[P::Text("default"), P::Text(prefix), P::Text(upper)],
            &mut |r| out.push(Record::read(r)),
        );
        out
    }

    /// The first `limit` of [`Baseline::list`].
    pub fn list_page(&mut self, prefix: &str, upper: &str, limit: usize) -> Vec<Record> {
        let mut out = Vec::new();
        self.sql.read(
            LIST_PAGE,
            &[
                P::Text("default"),
                P::Text(prefix),
                P::Text(upper),
                P::Int(limit as i64),
            ],
            &mut |r| out.push(Record::read(r)),
        );
        out
    }
}

// ---- C SQLite through rusqlite ----------------------------------------------

impl rusqlite::ToSql for P<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match *self {
            P::Text(s) | P::OptText(Some(s)) => ValueRef::Text(s.as_bytes()),
            P::OptText(None) => ValueRef::Null,
            P::Int(i) => ValueRef::Integer(i),
        }))
    }
}

impl Cols for rusqlite::Row<'_> {
    fn text(&self, i: usize) -> String {
        self.get(i).unwrap()
    }
    fn opt_text(&self, i: usize) -> Option<String> {
        self.get(i).unwrap()
    }
    fn int(&self, i: usize) -> i64 {
        self.get(i).unwrap()
    }
}

impl Sql for rusqlite::Connection {
    fn run(&mut self, sql: &'static str, params: &[P<'_>], row: &mut dyn FnMut(&dyn Cols)) {
        let mut stmt = self.prepare_cached(sql).unwrap();
        let mut rows = stmt.query(rusqlite::params_from_iter(params)).unwrap();
        while let Some(r) = rows.next().unwrap() {
            row(r);
        }
    }
}

/// C SQLite (bundled with rusqlite) on a new file with the store's schema,
/// with [`SQLITE_SETTINGS`].
pub fn rusqlite(path: &Path) -> Baseline<rusqlite::Connection> {
    let b = rusqlite_join(path, 0);
    for m in Dialect::Sqlite.migrations() {
        b.sql.execute_batch(m.up).unwrap();
    }
    b
}

/// Another connection to the file of [`rusqlite`], waiting up to 30 s for
/// the others' write transactions. The ids it makes come from a counter
/// that starts at `first` (each connection of a file needs a range of its
/// own: `connection << 44` leaves 2^40 puts to each).
pub fn rusqlite_join(path: &Path, first: i64) -> Baseline<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .unwrap();
    conn.execute_batch(SQLITE_SETTINGS).unwrap();
    Baseline {
        sql: conn,
        now: first,
    }
}

// ---- turso_core, directly ---------------------------------------------------

/// turso_core used as the store uses it (WAL, the engine's default
/// synchronous mode, foreign keys on, statements prepared once, reads on a
/// connection of their own: in turso 0.8.3 a connection that has run write
/// transactions re-prepares every later autocommit statement), without the
/// store.
pub struct Turso {
    io: Arc<dyn IO>,
    _db: Arc<Database>,
    writer: Conn,
    reader: Conn,
}

/// A connection and its prepared statements.
struct Conn {
    conn: Arc<turso_core::Connection>,
    stmts: HashMap<&'static str, turso_core::Statement>,
}

impl Conn {
    fn new(db: &Arc<Database>) -> Conn {
        let conn = db.connect().unwrap();
        conn.set_foreign_keys_enabled(true);
        Conn {
            conn,
            stmts: HashMap::new(),
        }
    }

    fn run(
        &mut self,
        io: &Arc<dyn IO>,
        sql: &'static str,
        params: &[P<'_>],
        row: &mut dyn FnMut(&dyn Cols),
    ) {
        let conn = &self.conn;
        let stmt = self
            .stmts
            .entry(sql)
            .or_insert_with(|| conn.prepare(sql).unwrap());
        stmt.reset().unwrap();
        for (i, p) in params.iter().enumerate() {
            let value = match *p {
                P::Text(s) | P::OptText(Some(s)) => Value::from_text(s.to_owned()),
                P::OptText(None) => Value::Null,
                P::Int(i) => Value::from_i64(i),
            };
            stmt.bind_at(NonZero::new(i + 1).unwrap(), value).unwrap();
        }
        loop {
            match stmt.step().unwrap() {
                StepResult::Row => row(stmt.row().unwrap()),
                StepResult::Done => break,
                StepResult::IO | StepResult::Yield => io.step().unwrap(),
                other => panic!("turso_core step: {other:?}"),
            }
        }
        stmt.reset().unwrap();
    }
}

impl std::fmt::Debug for Turso {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Turso")
    }
}

impl Cols for turso_core::Row {
    fn text(&self, i: usize) -> String {
        self.opt_text(i).expect("text")
    }
    fn opt_text(&self, i: usize) -> Option<String> {
        match self.get_value(i) {
            Value::Null => None,
            Value::Text(t) => Some(t.as_str().to_owned()),
            other => panic!("column {i}: expected text, found {other:?}"),
        }
    }
    fn int(&self, i: usize) -> i64 {
        match self.get_value(i) {
            Value::Numeric(Numeric::Integer(v)) => *v,
            other => panic!("column {i}: expected an integer, found {other:?}"),
        }
    }
}

impl Sql for Turso {
    fn run(&mut self, sql: &'static str, params: &[P<'_>], row: &mut dyn FnMut(&dyn Cols)) {
        self.writer.run(&self.io, sql, params, row);
    }

    fn read(&mut self, sql: &'static str, params: &[P<'_>], row: &mut dyn FnMut(&dyn Cols)) {
        self.reader.run(&self.io, sql, params, row);
    }
}

/// turso_core on a new file with the store's schema, as the store opens it.
pub fn turso(path: &Path) -> Baseline<Turso> {
    let io: Arc<dyn IO> = Arc::new(turso_core::PlatformIO::new().unwrap());
    let db =
        Database::open_file(io.clone(), path.to_str().unwrap(), Arc::new(SqliteDialect)).unwrap();
    let writer = Conn::new(&db);
    for m in Dialect::Sqlite.migrations() {
        writer.conn.execute(m.up).unwrap();
    }
    // After the schema: a connection made before would not see it.
    let reader = Conn::new(&db);
    Baseline {
        sql: Turso {
            io,
            _db: db,
            writer,
            reader,
        },
        now: 0,
    }
}
