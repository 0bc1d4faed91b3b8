//! The thin layer over `turso_core`: one connection, its cached prepared
//! statements, the step loop, transactions and the migrations driver.
//! Nothing of `turso_core` leaves this module except through [`crate::io`].
//! A store holds several of these (`crate::pool`): one that writes, and
//! readers.

use std::collections::HashMap;
use std::num::NonZero;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use nexus_migrations::{AppliedMigration, Driver};
use turso_core::{
    Connection, Database, IO, LimboError, Numeric, Row, SqliteDialect, Statement, StepResult, Value,
};

use crate::error::{Error, Result};
use crate::model::Timestamp;

/// A change sequence number: every write transaction takes the next one.
pub(crate) type Seq = i64;

/// One connection of the store's database and its prepared statements.
///
/// A store has one that writes (write transactions, migrations) and a few
/// that only read: in turso 0.8.3 a connection that has run write
/// transactions re-prepares each later autocommit statement (10x slower
/// point reads); a connection that only reads does not, and several of them
/// read at once under WAL.
pub(crate) struct Engine {
    db: Arc<Database>,
    conn: Arc<Connection>,
    io: Arc<dyn IO>,
    /// Prepared statements by the address and length of their `'static` SQL
    /// text.
    stmts: HashMap<(usize, usize), Statement>,
    /// Shared by every connection of the store.
    clock: Arc<Clock>,
    pub(crate) location: String,
    busy_timeout: Duration,
}

/// The store's clock: strictly increasing microseconds, shared by all of a
/// store's connections so that every time handed out is after every earlier
/// one, whichever connection asks.
#[derive(Debug)]
pub(crate) struct Clock {
    last: AtomicI64,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Clock {
            last: AtomicI64::new(i64::MIN),
        }
    }

    /// The current time, strictly after every time this clock handed out before.
    pub(crate) fn now(&self) -> Timestamp {
        let wall = Timestamp::now().as_micros();
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let t = wall.max(last.saturating_add(1));
            match self
                .last
                .compare_exchange_weak(last, t, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Timestamp::from_micros(t),
                Err(seen) => last = seen,
            }
        }
    }
}

/// How a write transaction starts. `BEGIN IMMEDIATE` takes the write lock at
/// once. In a browser it is a plain `BEGIN`: in turso 0.8.3 `BEGIN IMMEDIATE`
/// also opens the connection's temp database on an I/O whose clock is
/// `std::time`, which panics on wasm32-unknown-unknown. There the database is
/// exclusive to one Worker and the first statement of every write transaction
/// is a write (the change-sequence bump), so the lock is taken at once anyway.
#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
pub(crate) const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
pub(crate) const BEGIN_WRITE: &str = "BEGIN";

/// Parameters are built with these; the engine's `Value` stays in this module.
pub(crate) fn text(s: &str) -> Value {
    Value::from_text(s.to_owned())
}
pub(crate) fn opt_text(s: Option<&str>) -> Value {
    s.map_or(Value::Null, text)
}
pub(crate) fn int(i: i64) -> Value {
    Value::from_i64(i)
}
pub(crate) fn opt_int(i: Option<i64>) -> Value {
    i.map_or(Value::Null, Value::from_i64)
}
pub(crate) type Param = Value;

/// A cell of a table row as a parameter.
pub(crate) fn cell(c: crate::tables::Cell<'_>) -> Value {
    match c {
        crate::tables::Cell::Null => Value::Null,
        crate::tables::Cell::Int(i) => int(i),
        crate::tables::Cell::Text(t) => text(t),
    }
}

/// A row read cell after cell (for [`crate::tables::TableRow::read`]).
pub(crate) struct RowCells<'a> {
    row: RowRef<'a>,
    next: usize,
}

impl<'a> RowCells<'a> {
    pub(crate) fn new(row: RowRef<'a>) -> Self {
        RowCells { row, next: 0 }
    }

    fn at(&mut self) -> usize {
        self.next += 1;
        self.next - 1
    }
}

impl crate::tables::Cells for RowCells<'_> {
    fn text(&mut self) -> Result<String> {
        let i = self.at();
        self.row.text(i)
    }
    fn opt_text(&mut self) -> Result<Option<String>> {
        let i = self.at();
        self.row.opt_text(i)
    }
    fn int(&mut self) -> Result<i64> {
        let i = self.at();
        self.row.int(i)
    }
    fn opt_int(&mut self) -> Result<Option<i64>> {
        let i = self.at();
        self.row.opt_int(i)
    }
    fn json(&mut self) -> Result<String> {
        self.text()
    }
}

/// Typed access to a result row.
pub(crate) struct RowRef<'a>(&'a Row);

impl RowRef<'_> {
    pub(crate) fn text(&self, i: usize) -> Result<String> {
        self.opt_text(i)?
            .ok_or_else(|| corrupt(i, "NULL where text is required"))
    }
    pub(crate) fn opt_text(&self, i: usize) -> Result<Option<String>> {
        match self.0.get_value(i) {
            Value::Null => Ok(None),
            Value::Text(t) => Ok(Some(t.as_str().to_owned())),
            other => Err(corrupt(i, &format!("expected text, found {other:?}"))),
        }
    }
    pub(crate) fn int(&self, i: usize) -> Result<i64> {
        self.opt_int(i)?
            .ok_or_else(|| corrupt(i, "NULL where an integer is required"))
    }
    pub(crate) fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        match self.0.get_value(i) {
            Value::Null => Ok(None),
            Value::Numeric(Numeric::Integer(v)) => Ok(Some(*v)),
            other => Err(corrupt(i, &format!("expected an integer, found {other:?}"))),
        }
    }
}

fn corrupt(column: usize, detail: &str) -> Error {
    Error::Corrupt {
        table: "query result",
        detail: format!("column {column}: {detail}"),
    }
}

fn engine_err(context: &'static str, e: LimboError) -> Error {
    Error::engine(context, e)
}

fn is_lock_error(e: &LimboError) -> bool {
    matches!(
        e,
        LimboError::LockingError(_) | LimboError::Busy | LimboError::BusySnapshot
    ) || e.to_string().contains("locked by another process")
}

/// Refuses a write while a first pull is unfinished (`unfinished`: its
/// database, [`Engine::unfinished_pull`]): the store holds only part of a
/// database then, without its secondary indexes, and only that pull may
/// write.
fn refuse_while_pulling(unfinished: Option<String>) -> Result<()> {
    match unfinished {
        Some(hub_id) => Err(Error::PullUnfinished { hub_id }),
        None => Ok(()),
    }
}

impl Engine {
    /// Opens (or joins, within this process) the database at `path` on `io`,
    /// waiting up to `busy_timeout` while another process holds it.
    pub(crate) fn open_database(
        io: &Arc<dyn IO>,
        path: &str,
        busy_timeout: Duration,
    ) -> Result<Arc<Database>> {
        let started = web_time::Instant::now();
        let mut delay = Duration::from_millis(2);
        loop {
            match Database::open_file(io.clone(), path, Arc::new(SqliteDialect)) {
                Ok(db) => return Ok(db),
                Err(e) if is_lock_error(&e) => {
                    let waited = started.elapsed();
                    if waited >= busy_timeout || cfg!(target_family = "wasm") {
                        return Err(Error::Busy {
                            location: path.to_string(),
                            waited,
                        });
                    }
                    sleep(delay.min(busy_timeout - waited));
                    delay = (delay * 2).min(Duration::from_millis(100));
                }
                Err(LimboError::NotADB) => {
                    return Err(Error::invalid(
                        "database",
                        path,
                        "is not a store: the file is not an SQLite database",
                    ));
                }
                Err(e) => return Err(engine_err("opening the database", e)),
            }
        }
    }

    /// A new connection of `db`.
    pub(crate) fn connect(
        db: &Arc<Database>,
        io: Arc<dyn IO>,
        clock: Arc<Clock>,
        location: String,
        busy_timeout: Duration,
    ) -> Result<Self> {
        let conn = Self::new_connection(db, busy_timeout)?;
        Ok(Engine {
            db: db.clone(),
            conn,
            io,
            stmts: HashMap::new(),
            clock,
            location,
            busy_timeout,
        })
    }

    fn new_connection(db: &Arc<Database>, busy_timeout: Duration) -> Result<Arc<Connection>> {
        let conn = db.connect().map_err(|e| engine_err("connecting", e))?;
        conn.set_foreign_keys_enabled(true);
        conn.set_busy_timeout(busy_timeout);
        // Every commit is synced before it returns (`synchronous=FULL`):
        // the engine's default, set here so that what the store promises
        // (an acknowledged write survives a crash) rests on no default.
        conn.set_sync_mode(turso_core::SyncMode::Full);
        Ok(conn)
    }

    /// Stops checking foreign keys on this connection until
    /// [`Engine::reconnect`] (whose fresh connection checks them again): a
    /// bulk load of a snapshot that is whole only at its end, whose rows
    /// come in key order, not parents first.
    pub(crate) fn skip_foreign_keys(&mut self) {
        self.clear_statements();
        self.conn.set_foreign_keys_enabled(false);
    }

    /// Replaces the connection with a fresh one (after migrations, so that
    /// no statement or schema snapshot from before survives).
    pub(crate) fn reconnect(&mut self) -> Result<()> {
        self.clear_statements();
        self.conn = Self::new_connection(&self.db, self.busy_timeout)?;
        Ok(())
    }

    /// The current time, strictly after every time the store handed out
    /// before, so that every write changes `modified_at`.
    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// A new identity: a UUID v7 (time-ordered, so that new rows land next to
    /// each other in the primary-key B-trees), from the engine's clock, with
    /// 74 random bits.
    pub(crate) fn new_id(&self) -> String {
        let micros = self.now().as_micros().max(0) as u64;
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            micros / 1_000_000,
            (micros % 1_000_000) as u32 * 1000,
        );
        uuid::Uuid::new_v7(ts).to_string()
    }

    /// Runs a script of statements without parameters (pragmas, migrations).
    pub(crate) fn execute_script(&mut self, sql: &str) -> Result<()> {
        self.conn
            .execute(sql)
            .map_err(|e| self.map_err("running a script", e))
    }

    fn map_err(&self, context: &'static str, e: LimboError) -> Error {
        if matches!(e, LimboError::Busy | LimboError::BusySnapshot) {
            Error::Busy {
                location: self.location.clone(),
                waited: self.busy_timeout,
            }
        } else {
            engine_err(context, e)
        }
    }

    /// Runs `sql` with `params`, calling `on_row` for each row until it
    /// returns `false`. The statement is prepared once and cached.
    fn run(
        &mut self,
        sql: &'static str,
        params: &[Param],
        mut on_row: impl FnMut(RowRef<'_>) -> Result<bool>,
    ) -> Result<u64> {
        // Address and length: the compiler may place one literal inside
        // another ("BEGIN" at the start of "BEGIN IMMEDIATE"), so the
        // address alone does not identify a text.
        let key = (sql.as_ptr() as usize, sql.len());
        let stmt = match self.stmts.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(
                self.conn
                    .prepare(sql)
                    .map_err(|e| engine_err("preparing a statement", e))?,
            ),
        };
        let io = &self.io;
        let result = (|| {
            stmt.reset()?;
            for (i, p) in params.iter().enumerate() {
                stmt.bind_at(NonZero::new(i + 1).expect("i + 1 > 0"), p.clone())?;
            }
            loop {
                match stmt.step()? {
                    StepResult::Row => {
                        let row = stmt.row().expect("a row after StepResult::Row");
                        match on_row(RowRef(row)) {
                            Ok(true) => {}
                            Ok(false) => return Ok(Ok(stmt.n_change())),
                            Err(e) => return Ok(Err(e)),
                        }
                    }
                    StepResult::Done => return Ok(Ok(stmt.n_change())),
                    StepResult::IO | StepResult::Yield => io.step()?,
                    StepResult::Sleep { duration } => {
                        sleep(duration);
                        io.step()?;
                    }
                    StepResult::Busy => return Err(LimboError::Busy),
                    StepResult::Interrupt => return Err(LimboError::Interrupt),
                }
            }
        })();
        // Release whatever the statement holds (read snapshot, bindings).
        let _ = stmt.reset();
        match result {
            Ok(inner) => Ok(u64::try_from(inner?).unwrap_or(0)),
            Err(e) => Err(self.map_err("running a statement", e)),
        }
    }

    /// Executes a statement; returns the number of rows changed.
    pub(crate) fn execute(&mut self, sql: &'static str, params: &[Param]) -> Result<u64> {
        self.run(sql, params, |_| Ok(true))
    }

    /// All rows, mapped.
    pub(crate) fn query<T>(
        &mut self,
        sql: &'static str,
        params: &[Param],
        mut map: impl FnMut(RowRef<'_>) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        self.run(sql, params, |row| {
            out.push(map(row)?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// Calls `each` on every row, as the engine reads it, until it returns
    /// `false`.
    pub(crate) fn query_each(
        &mut self,
        sql: &'static str,
        params: &[Param],
        each: impl FnMut(RowRef<'_>) -> Result<bool>,
    ) -> Result<()> {
        self.run(sql, params, each).map(drop)
    }

    /// The first row, mapped.
    pub(crate) fn query_one<T>(
        &mut self,
        sql: &'static str,
        params: &[Param],
        map: impl FnOnce(RowRef<'_>) -> Result<T>,
    ) -> Result<Option<T>> {
        let mut map = Some(map);
        let mut out = None;
        self.run(sql, params, |row| {
            out = Some((map.take().expect("called once"))(row)?);
            Ok(false)
        })?;
        Ok(out)
    }

    /// Runs `f` in a write transaction stamped with the next change sequence
    /// number; commits if it returns `Ok`, rolls back otherwise. Only on the
    /// store's writing connection, held exclusively (change-file imports);
    /// the store's other writes go through the group commit
    /// (`crate::group_commit`).
    pub(crate) fn write<T>(&mut self, f: impl FnOnce(&mut Self, Seq) -> Result<T>) -> Result<T> {
        self.write_transaction(|e| {
            let seq = e.next_seq()?;
            f(e, seq)
        })
    }

    /// [`Engine::write`] for a write of the store's own bookkeeping that
    /// changes no row of the change tables (a pull's position moved over
    /// a page with no rows): no change sequence number is taken, so none is
    /// spent on it. Refused, as every write, while a first pull is
    /// unfinished.
    pub(crate) fn write_unstamped<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        self.write_transaction(|e| {
            refuse_while_pulling(e.unfinished_pull()?)?;
            f(e)
        })
    }

    /// The database whose first pull is unfinished (`nexus_bulk_pull`), if
    /// one is.
    pub(crate) fn unfinished_pull(&mut self) -> Result<Option<String>> {
        self.query_one("SELECT hub_id FROM nexus_bulk_pull LIMIT 1", &[], |r| {
            r.text(0)
        })
    }

    /// Runs `f` in a write transaction: commits if it returns `Ok`, rolls
    /// back otherwise.
    fn write_transaction<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.execute(BEGIN_WRITE, &[])?;
        let result = (|| {
            let value = f(self)?;
            self.execute("COMMIT", &[])?;
            Ok(value)
        })();
        if result.is_err() {
            self.rollback_if_open();
        }
        result
    }

    /// Takes the next change sequence number (in a write transaction).
    /// Two statements: in turso 0.8.3 `UPDATE ... RETURNING` on this row
    /// costs about 300 us, twenty times the plain `UPDATE` and `SELECT`.
    /// Refuses while a first pull is unfinished ([`refuse_while_pulling`];
    /// read in the same statement as the number).
    pub(crate) fn next_seq(&mut self) -> Result<Seq> {
        self.execute(
            "UPDATE nexus_state SET change_seq = change_seq + 1 WHERE id = 1",
            &[],
        )?;
        let (seq, unfinished) = self
            .query_one(
                "SELECT change_seq, (SELECT hub_id FROM nexus_bulk_pull LIMIT 1) FROM nexus_state WHERE id = 1",
                &[],
                |r| Ok((r.int(0)?, r.opt_text(1)?)),
            )?
            .ok_or(Error::Corrupt {
                table: "nexus_state",
                detail: "the state row is missing".into(),
            })?;
        refuse_while_pulling(unfinished)?;
        Ok(seq)
    }

    /// Whether a transaction is open on this connection.
    pub(crate) fn in_transaction(&self) -> bool {
        !self.conn.get_auto_commit()
    }

    /// Rolls back the open transaction, if any; a failure to do so leaves
    /// nothing more to undo.
    pub(crate) fn rollback_if_open(&mut self) {
        if self.in_transaction() {
            let _ = self.execute("ROLLBACK", &[]);
        }
    }

    /// Runs `f` in a read transaction, so that its queries see one snapshot
    /// (of committed transactions only).
    pub(crate) fn read<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.execute("BEGIN", &[])?;
        let result = f(self);
        let end = self.execute("COMMIT", &[]);
        if end.is_err() && !self.conn.get_auto_commit() {
            let _ = self.execute("ROLLBACK", &[]);
        }
        let value = result?;
        end?;
        Ok(value)
    }

    /// Starts a read transaction that later calls see as one snapshot, until [`Engine::end_read`].
    pub(crate) fn begin_read(&mut self) -> Result<()> {
        self.execute("BEGIN", &[]).map(drop)
    }

    /// Ends [`Engine::begin_read`]; infallible for callers (a failed commit rolls back).
    pub(crate) fn end_read(&mut self) {
        if self.execute("COMMIT", &[]).is_err() && !self.conn.get_auto_commit() {
            let _ = self.execute("ROLLBACK", &[]);
        }
    }

    /// Forgets prepared statements (after the schema changed under them).
    pub(crate) fn clear_statements(&mut self) {
        self.stmts.clear();
    }

    /// Opens a write transaction that outlives one call (a bulk load fed
    /// in chunks); end it with [`Engine::end_long_write`].
    pub(crate) fn begin_long_write(&mut self) -> Result<()> {
        self.execute(BEGIN_WRITE, &[]).map(drop)
    }

    /// Commits (`commit`) or rolls back the transaction of
    /// [`Engine::begin_long_write`].
    pub(crate) fn end_long_write(&mut self, commit: bool) -> Result<()> {
        if commit {
            let done = self.execute("COMMIT", &[]);
            if done.is_err() && !self.conn.get_auto_commit() {
                let _ = self.execute("ROLLBACK", &[]);
            }
            done.map(|_| ())
        } else {
            if !self.conn.get_auto_commit() {
                let _ = self.execute("ROLLBACK", &[]);
            }
            Ok(())
        }
    }
}

#[cfg(not(target_family = "wasm"))]
fn sleep(d: Duration) {
    std::thread::sleep(d);
}

#[cfg(target_family = "wasm")]
fn sleep(_: Duration) {
    // No blocking sleep in a browser: the caller's loop steps the IO instead.
}

/// The migrations crate drives the schema through these primitives.
impl Driver for Engine {
    type Error = Error;

    async fn execute_batch(&mut self, sql: &str) -> Result<()> {
        self.execute_script(sql)
    }

    async fn applied(&mut self) -> Result<Vec<AppliedMigration>> {
        self.query(
            "SELECT version, name, checksum, applied_at FROM _nexus_migrations ORDER BY version",
            &[],
            |r| {
                Ok(AppliedMigration {
                    version: u32::try_from(r.int(0)?).map_err(|_| Error::Corrupt {
                        table: "_nexus_migrations",
                        detail: "version out of range".into(),
                    })?,
                    name: r.text(1)?,
                    checksum: r.text(2)?,
                    applied_at: r.int(3)?,
                })
            },
        )
    }

    async fn record(&mut self, m: &AppliedMigration) -> Result<()> {
        self.execute(
            "INSERT INTO _nexus_migrations (version, name, checksum, applied_at) VALUES (?1, ?2, ?3, ?4)",
            &[int(i64::from(m.version)), text(&m.name), text(&m.checksum), int(m.applied_at)],
        )
        .map(drop)
    }

    async fn unrecord(&mut self, version: u32) -> Result<()> {
        self.execute(
            "DELETE FROM _nexus_migrations WHERE version = ?1",
            &[int(i64::from(version))],
        )
        .map(drop)
    }

    async fn begin(&mut self) -> Result<()> {
        self.clear_statements();
        self.execute_script(BEGIN_WRITE)?;
        Ok(())
    }

    async fn commit(&mut self) -> Result<()> {
        self.execute_script("COMMIT")?;
        self.clear_statements();
        Ok(())
    }

    async fn rollback(&mut self) -> Result<()> {
        self.clear_statements();
        self.execute_script("ROLLBACK")
    }

    fn now_micros(&self) -> i64 {
        Timestamp::now().as_micros()
    }
}

impl Engine {
    /// Runs one raw statement and renders every value as text.
    pub(crate) fn debug_query(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let mut stmt = match self
            .conn
            .query(sql)
            .map_err(|e| engine_err("preparing a query", e))?
        {
            Some(stmt) => stmt,
            None => return Ok(Vec::new()),
        };
        let mut rows = Vec::new();
        stmt.run_with_row_callback(|row| {
            rows.push(
                row.get_values()
                    .map(|v| match v {
                        Value::Null => None,
                        other => Some(other.to_string()),
                    })
                    .collect(),
            );
            Ok(())
        })
        .map_err(|e| engine_err("running a query", e))?;
        Ok(rows)
    }
}
