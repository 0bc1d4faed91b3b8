//! Faults on PostgreSQL (issue 10, part 2): backends terminated with
//! `pg_terminate_backend` between and during the calls of a `PgStore`.
//!
//! The store's promise: every call either succeeds or fails with
//! `ErrorKind::Unavailable` (whose SQLSTATE, when the server sent one, is a
//! retryable one), it retries on its own what is safe to retry (reads; writes
//! that cannot have committed), and a write it acknowledged is never lost. A
//! write that failed with `outcome_unknown == false` applied nothing; one
//! that failed with `outcome_unknown == true` may or may not have applied,
//! and the checks below accept both.
//!
//! The store's connections are found in `pg_stat_activity` by a distinctive
//! `application_name`; the tests' own admin connections have none, so they
//! are never terminated.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nexus_core::{Error, ErrorKind, FileRecord, MetadataStore, NewFile};
use nexus_pg::{PgOptions, PgStore};
use serde_json::json;

/// How long the clients of the concurrent test work while backends die.
const RUN: Duration = Duration::from_secs(3);
/// Client threads of the concurrent test.
const CLIENTS: usize = 6;
/// Connections of its pool.
const POOL: usize = 8;
/// A call slower than this counts as a hang (the pool's wait timeout is 5 s,
/// the statement timeout 10 s).
const HANG: Duration = Duration::from_secs(15);

/// An `application_name` no other connection has.
fn app_name(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        % 1_000_000_000;
    format!("nexus-faults-{test}-{}-{nanos}", std::process::id())
}

fn options(app: &str, pool_size: usize) -> PgOptions {
    PgOptions {
        pool_size,
        application_name: app.to_string(),
        wait_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(10),
        ..PgOptions::default()
    }
}

/// The backends of the store named `app`.
async fn pids(admin: &tokio_postgres::Client, app: &str) -> BTreeSet<i32> {
    admin
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()",
            &[&app],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Terminates `pid` and waits (up to 5 s) until it has exited (it leaves
/// `pg_stat_activity` on its way out, after sending its `FATAL`). Polled,
/// because `pg_terminate_backend(pid, timeout)` checks only every 100 ms.
async fn terminate_and_wait(admin: &tokio_postgres::Client, pid: i32) {
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let start = Instant::now();
    loop {
        let alive: bool = admin
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)",
                &[&pid],
            )
            .await
            .unwrap()
            .get(0);
        if !alive {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "backend {pid} did not exit within 5 s of being terminated"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// `terminate_and_wait`, then a pause for the store's connection task to
/// read the end of the connection.
async fn terminate_between_calls(admin: &tokio_postgres::Client, pid: i32) {
    terminate_and_wait(admin, pid).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
}

/// The one backend of a store with a pool of one.
async fn only_pid(admin: &tokio_postgres::Client, app: &str) -> i32 {
    let pids = pids(admin, app).await;
    assert_eq!(pids.len(), 1, "one connection expected: {pids:?}");
    *pids.first().unwrap()
}

/// Waits until a backend of `app` other than `not` waits for a lock, and
/// returns it: the store's statement is in progress and blocked.
async fn blocked_backend(admin: &tokio_postgres::Client, app: &str, not: Option<i32>) -> i32 {
    let start = Instant::now();
    loop {
        let row = admin
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND state = 'active' \
                 AND wait_event_type = 'Lock' AND pid <> coalesce($2, 0)",
                &[&app, &not],
            )
            .await
            .unwrap();
        if let Some(row) = row {
            return row.get(0);
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no backend of the store blocked on the row lock within 10 s (not counting {not:?})"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Pool of one connection, terminated while idle between calls: the next
/// read and the next write succeed, each on a new connection, again and
/// again. "Between calls" means the backend has exited (the termination
/// waits for it) and the client has had a moment to read its `FATAL` and
/// the end of the connection, so the pool sees the connection closed when
/// it hands it out; the next test covers a termination racing the call.
#[test]
fn a_connection_terminated_between_calls_is_replaced_for_reads_and_writes() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = nexus_tests::pg::database("pg_faults_idle").await;
        let admin = nexus_tests::pg::connect(&db.url).await;
        let app = app_name("idle");
        let store = PgStore::connect(&db.url, options(&app, 1)).await.unwrap();
        store
            .put(NewFile::new("/idle", "l", "p", 0).etag("e0"))
            .await
            .unwrap();
        let mut seen = BTreeSet::new();
        let mut pid = only_pid(&admin, &app).await;
        seen.insert(pid);
        for round in 1..=10u64 {
            // A read right after its connection was terminated.
            terminate_between_calls(&admin, pid).await;
            let got = store
                .get("/idle")
                .await
                .unwrap_or_else(|e| panic!("round {round}: read after a termination: {e:?}"));
            assert_eq!(
                got.map(|f| f.etag),
                Some(Some(format!("e{}", round - 1))),
                "round {round}"
            );
            pid = only_pid(&admin, &app).await;
            assert!(seen.insert(pid), "round {round}: read on a new connection");
            // A write right after its connection was terminated.
            terminate_between_calls(&admin, pid).await;
            let put = store
                .put(NewFile::new("/idle", "l", "p", round).etag(format!("e{round}")))
                .await
                .unwrap_or_else(|e| panic!("round {round}: write after a termination: {e:?}"));
            assert_eq!(put.version as u64, round + 1, "round {round}");
            pid = only_pid(&admin, &app).await;
            assert!(seen.insert(pid), "round {round}: write on a new connection");
        }
        let mut versions = store.list_versions("/idle").await.unwrap();
        versions.sort_by_key(|v| v.version);
        let etags: Vec<_> = versions.iter().map(|v| v.etag.clone().unwrap()).collect();
        let expected: Vec<_> = (0..=10).map(|i| format!("e{i}")).collect();
        assert_eq!(etags, expected, "every write applied exactly once");
        drop(store);
        drop(db);
    });
}

/// Pool of one connection, terminated just before a call, without waiting
/// for the backend to exit: its `FATAL 57P01` and the end of the
/// connection may reach the client's connection task after the pool handed
/// the connection out. Reads are retried and succeed. Writes succeed or fail
/// with `Unavailable { outcome_unknown: true }` ("connection closed", no
/// SQLSTATE): the driver reads the unsolicited FATAL before sending the
/// write, closes, and the write's request fails as `closed`, which cannot be
/// told apart from a write that was sent and got no answer. The store does
/// not retry those (it cannot know nothing was sent), so this is where a
/// termination is not transparent; nothing acknowledged is lost.
#[test]
fn a_connection_terminated_just_before_a_call_fails_writes_only_as_unavailable() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = nexus_tests::pg::database("pg_faults_race").await;
        let admin = nexus_tests::pg::connect(&db.url).await;
        let app = app_name("race");
        let store = PgStore::connect(&db.url, options(&app, 1)).await.unwrap();
        store
            .put(NewFile::new("/race", "l", "p", 0).etag("e0"))
            .await
            .unwrap();
        let terminate = |pid: i32| {
            let admin = &admin;
            async move {
                let _: bool = admin
                    .query_one("SELECT pg_terminate_backend($1)", &[&pid])
                    .await
                    .unwrap()
                    .get(0);
            }
        };
        const ROUNDS: u64 = 20;
        let (mut acked, mut unknown) = (vec!["e0".to_string()], BTreeSet::new());
        for round in 1..=ROUNDS {
            terminate(only_pid(&admin, &app).await).await;
            let read = store.get("/race").await;
            assert!(
                matches!(read, Ok(Some(_))),
                "round {round}: a read is retried: {read:?}"
            );
            terminate(only_pid(&admin, &app).await).await;
            let etag = format!("e{round}");
            match store
                .put(NewFile::new("/race", "l", "p", round).etag(&etag))
                .await
            {
                Ok(_) => acked.push(etag),
                Err(e @ Error::Unavailable { .. }) => {
                    if let Some(code) = nexus_postgres::sqlstate_of(&e) {
                        assert!(nexus_postgres::is_retryable_sqlstate(&code), "{e}");
                    }
                    if matches!(
                        e,
                        Error::Unavailable {
                            outcome_unknown: true,
                            ..
                        }
                    ) {
                        unknown.insert(etag);
                    }
                }
                Err(e) => panic!("round {round}: a write failed with {:?}: {e:?}", e.kind()),
            }
            // A connection for the next round's termination.
            store.get("/race").await.unwrap();
        }
        let versions = store.list_versions("/race").await.unwrap();
        let made: BTreeSet<String> = versions.iter().filter_map(|v| v.etag.clone()).collect();
        assert_eq!(made.len(), versions.len(), "no etag applied twice");
        for etag in &acked {
            assert!(made.contains(etag), "acknowledged write {etag} is lost");
        }
        for etag in &made {
            assert!(
                acked.contains(etag) || unknown.contains(etag),
                "{etag} applied although its write failed having applied nothing"
            );
        }
        eprintln!(
            "terminated just before the call: {ROUNDS} reads succeeded; writes: {} succeeded, {} \
             failed with outcome unknown ({} of them applied), {} failed having applied nothing",
            acked.len() - 1,
            unknown.len(),
            unknown.iter().filter(|e| made.contains(*e)).count(),
            ROUNDS as usize - (acked.len() - 1) - unknown.len()
        );
        drop(store);
        drop(db);
    });
}

/// Pool of one connection, terminated while a write is in progress (blocked
/// on a row lock the test holds): PostgreSQL answers 57P01, nothing was
/// committed, and the store tries again on a new connection; each write is
/// applied exactly once.
#[test]
fn a_write_terminated_in_flight_is_retried_and_applied_once() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = nexus_tests::pg::database("pg_faults_inflight").await;
        let admin = nexus_tests::pg::connect(&db.url).await;
        let mut locker = nexus_tests::pg::connect(&db.url).await;
        let app = app_name("inflight");
        let store = PgStore::connect(&db.url, options(&app, 1)).await.unwrap();
        store
            .put(NewFile::new("/w", "l", "p", 0).etag("e0"))
            .await
            .unwrap();
        store
            .put(NewFile::new("/gone", "l", "p", 0).etag("g0"))
            .await
            .unwrap();

        // Runs `write` while the test holds the lock of the live row at
        // `path`; terminates the blocked backend once, waits for the store
        // to try again (blocked again, on a new backend), then lets it
        // through.
        async fn through_a_termination<T: Send + 'static>(
            admin: &tokio_postgres::Client,
            locker: &mut tokio_postgres::Client,
            app: &str,
            path: &str,
            write: impl std::future::Future<Output = nexus_core::Result<T>> + Send + 'static,
        ) -> nexus_core::Result<T> {
            let tx = locker.transaction().await.unwrap();
            tx.execute(
                "SELECT 1 FROM file_paths WHERE virtual_path = $1 AND deleted_at IS NULL FOR UPDATE",
                &[&path],
            )
            .await
            .unwrap();
            let write = tokio::spawn(write);
            let first = blocked_backend(admin, app, None).await;
            terminate_and_wait(admin, first).await;
            let second = blocked_backend(admin, app, Some(first)).await;
            assert_ne!(first, second);
            tx.rollback().await.unwrap();
            write.await.unwrap()
        }

        let s = store.clone();
        let put = through_a_termination(&admin, &mut locker, &app, "/w", async move {
            s.put(NewFile::new("/w", "l", "p", 1).etag("e1")).await
        })
        .await
        .unwrap_or_else(|e| panic!("put terminated in flight: {e:?}"));
        assert_eq!((put.version, put.etag.as_deref()), (2, Some("e1")));

        let s = store.clone();
        through_a_termination(&admin, &mut locker, &app, "/w", async move {
            s.set_metadata("/w", "k", &json!("v")).await
        })
        .await
        .unwrap_or_else(|e| panic!("set_metadata terminated in flight: {e:?}"));

        let s = store.clone();
        let moved = through_a_termination(&admin, &mut locker, &app, "/w", async move {
            s.rename("/w", "/w2").await
        })
        .await
        .unwrap_or_else(|e| panic!("rename terminated in flight: {e:?}"));
        assert_eq!(moved, 1, "the first attempt moved nothing");

        let s = store.clone();
        let deleted = through_a_termination(&admin, &mut locker, &app, "/gone", async move {
            s.delete("/gone").await
        })
        .await
        .unwrap_or_else(|e| panic!("delete terminated in flight: {e:?}"));
        assert_eq!(
            deleted.map(|f| f.etag),
            Some(Some("g0".to_string())),
            "the retried delete found the file: the first attempt applied nothing"
        );

        let mut versions = store.list_versions("/w2").await.unwrap();
        versions.sort_by_key(|v| v.version);
        let etags: Vec<_> = versions.iter().map(|v| v.etag.clone().unwrap()).collect();
        assert_eq!(etags, ["e0", "e1"], "the put applied exactly once");
        assert_eq!(
            store.get_metadata("/w2", "k").await.unwrap(),
            Some(json!("v"))
        );
        assert!(store.get("/w").await.unwrap().is_none());
        assert!(store.get("/gone").await.unwrap().is_none());
        drop(store);
        drop(db);
    });
}

/// Outcomes of one kind of call.
#[derive(Debug, Default, Clone, Copy)]
struct Count {
    ok: usize,
    /// Failed with `Unavailable`, nothing applied.
    failed: usize,
    /// Failed with `Unavailable`, `outcome_unknown`.
    unknown: usize,
}

#[derive(Debug, Default)]
struct Tally {
    ops: BTreeMap<&'static str, Count>,
    sqlstates: BTreeMap<String, usize>,
    no_sqlstate: usize,
    /// A few failure messages, one per distinct text shape.
    samples: BTreeMap<String, String>,
    slowest: Duration,
    violations: Vec<String>,
}

/// What one client knows about its own part of the tree (`/f/t<n>/`) and
/// its puts of the shared path.
#[derive(Debug, Default)]
struct Model {
    /// Acknowledged puts (path -> etag), not deleted since.
    live: BTreeMap<String, String>,
    /// Writes of unknown outcome: absent, or present with this etag.
    maybe: BTreeMap<String, String>,
    /// Puts that failed having applied nothing, and acknowledged deletes.
    absent: BTreeSet<String>,
    /// Where the client's renamed file is (None once it lost track).
    renamed: Option<String>,
    /// Renames done.
    renames: u64,
    /// Metadata `n` of the renamed file: the last acknowledged value...
    meta: Option<i64>,
    /// ...or one of these later ones of unknown outcome.
    meta_maybe: BTreeSet<i64>,
    shared_acked: Vec<String>,
    shared_maybe: Vec<String>,
    shared_failed: Vec<String>,
    /// Deletes of unknown outcome (their paths are in `maybe`).
    maybe_deleted: BTreeSet<String>,
    /// Renames of unknown outcome, and how many of them had moved the file.
    rename_unknown: usize,
    rename_unknown_applied: usize,
}

/// Where client `t`'s renamed file is after `n` renames.
fn renamed(t: usize, n: u64) -> String {
    format!("/f/t{t}/r/{n}")
}

struct Client {
    t: usize,
    store: PgStore,
    tally: Arc<Mutex<Tally>>,
    rng: u64,
    model: Model,
}

impl Client {
    fn next(&mut self) -> u64 {
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn violation(&self, what: String) {
        self.tally.lock().unwrap().violations.push(what);
    }

    /// Awaits a call and checks how it failed, if it did: `Err(true)` when
    /// a write may have been applied, `Err(false)` when it was not.
    async fn call<T>(
        &self,
        op: &'static str,
        fut: impl std::future::Future<Output = nexus_core::Result<T>>,
    ) -> Result<T, bool> {
        let start = Instant::now();
        let result = fut.await;
        let took = start.elapsed();
        let mut tally = self.tally.lock().unwrap();
        tally.slowest = tally.slowest.max(took);
        if took > HANG {
            tally
                .violations
                .push(format!("client {}: {op} took {took:?}", self.t));
        }
        match result {
            Ok(v) => {
                tally.ops.entry(op).or_default().ok += 1;
                Ok(v)
            }
            Err(e) => {
                let unknown = match &e {
                    Error::Unavailable {
                        outcome_unknown, ..
                    } => *outcome_unknown,
                    // Not a kind the store may answer with here: recorded
                    // below; the model assumes the worst.
                    _ => true,
                };
                if e.kind() != ErrorKind::Unavailable || !e.is_retryable() {
                    tally.violations.push(format!(
                        "client {}: {op} failed with kind {:?} ({}), not Unavailable: {e} / {e:?}",
                        self.t,
                        e.kind(),
                        e.code()
                    ));
                }
                let code = nexus_postgres::sqlstate_of(&e);
                match &code {
                    Some(c) => {
                        *tally.sqlstates.entry(c.clone()).or_default() += 1;
                        if !nexus_postgres::is_retryable_sqlstate(c) {
                            tally.violations.push(format!(
                                "client {}: {op} failed with SQLSTATE {c}, not a retryable one: {e}",
                                self.t
                            ));
                        }
                    }
                    None => tally.no_sqlstate += 1,
                }
                let shape = format!("{op} {code:?} unknown={unknown}");
                tally.samples.entry(shape).or_insert_with(|| e.to_string());
                let count = tally.ops.entry(op).or_default();
                if unknown {
                    count.unknown += 1;
                } else {
                    count.failed += 1;
                }
                Err(unknown)
            }
        }
    }

    fn pick(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    async fn run(mut self, until: Instant) -> Model {
        let mut n: u64 = 0;
        while Instant::now() < until {
            n += 1;
            match self.next() % 100 {
                0..=29 => self.put_unique(n).await,
                30..=41 => self.put_shared(n).await,
                42..=51 => self.set_meta(n as i64).await,
                52..=59 => self.rename().await,
                60..=69 => self.delete().await,
                70..=89 => self.get().await,
                _ => self.list().await,
            }
        }
        self.model
    }

    async fn put_unique(&mut self, n: u64) {
        let path = format!("/f/t{}/u{n}", self.t);
        let etag = format!("t{}-u{n}", self.t);
        let file = NewFile::new(&path, "l", "p", n).etag(&etag);
        match self.call("put", self.store.put(file)).await {
            Ok(rec) => {
                if rec.etag.as_deref() != Some(&etag) || rec.version != 1 {
                    self.violation(format!("put {path} answered {rec:?}"));
                }
                self.model.live.insert(path, etag);
            }
            Err(true) => {
                self.model.maybe.insert(path, etag);
            }
            Err(false) => {
                self.model.absent.insert(path);
            }
        }
    }

    async fn put_shared(&mut self, n: u64) {
        let etag = format!("t{}-s{n}", self.t);
        let file = NewFile::new("/f/shared", "l", "p", n).etag(&etag);
        match self.call("put shared", self.store.put(file)).await {
            Ok(rec) => {
                if rec.etag.as_deref() != Some(&etag) {
                    self.violation(format!("put /f/shared answered {rec:?}"));
                }
                self.model.shared_acked.push(etag);
            }
            Err(true) => self.model.shared_maybe.push(etag),
            Err(false) => self.model.shared_failed.push(etag),
        }
    }

    async fn set_meta(&mut self, n: i64) {
        let Some(path) = self.model.renamed.clone() else {
            return;
        };
        match self
            .call(
                "set_metadata",
                self.store.set_metadata(&path, "n", &json!(n)),
            )
            .await
        {
            Ok(()) => {
                self.model.meta = Some(n);
                self.model.meta_maybe.clear();
            }
            Err(true) => {
                self.model.meta_maybe.insert(n);
            }
            Err(false) => {}
        }
    }

    async fn rename(&mut self) {
        let Some(old) = self.model.renamed.clone() else {
            return;
        };
        let new = renamed(self.t, self.model.renames + 1);
        match self.call("rename", self.store.rename(&old, &new)).await {
            Ok(moved) => {
                if moved != 1 {
                    self.violation(format!("rename {old} -> {new} moved {moved} files"));
                }
                self.model.renames += 1;
                self.model.renamed = Some(new);
            }
            Err(false) => {}
            Err(true) => {
                // Find out where the file is before going on.
                self.model.renamed = self.locate(&old, &new).await;
                self.model.rename_unknown += 1;
                if self.model.renamed.as_deref() == Some(new.as_str()) {
                    self.model.renames += 1;
                    self.model.rename_unknown_applied += 1;
                }
            }
        }
    }

    /// Where the renamed file is after a rename of unknown outcome.
    async fn locate(&mut self, old: &str, new: &str) -> Option<String> {
        for _ in 0..100 {
            let mut answered = 0;
            for path in [new, old] {
                match self.call("get (locate)", self.store.get(path)).await {
                    Ok(Some(_)) => return Some(path.to_string()),
                    Ok(None) => answered += 1,
                    Err(_) => {}
                }
            }
            if answered == 2 {
                self.violation(format!(
                    "client {}: the renamed file is neither at {old} nor at {new}",
                    self.t
                ));
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.violation(format!(
            "client {}: could not locate the renamed file",
            self.t
        ));
        None
    }

    async fn delete(&mut self) {
        if self.model.live.is_empty() {
            return self.get().await;
        }
        let i = self.pick(self.model.live.len());
        let (path, etag) = self
            .model
            .live
            .iter()
            .nth(i)
            .map(|(p, e)| (p.clone(), e.clone()))
            .unwrap();
        match self.call("delete", self.store.delete(&path)).await {
            Ok(found) => {
                if found.as_ref().and_then(|f| f.etag.as_deref()) != Some(etag.as_str()) {
                    self.violation(format!(
                        "delete of the live file {path} ({etag}) answered {found:?}"
                    ));
                }
                self.model.live.remove(&path);
                self.model.absent.insert(path);
            }
            Err(true) => {
                self.model.live.remove(&path);
                self.model.maybe_deleted.insert(path.clone());
                self.model.maybe.insert(path, etag);
            }
            Err(false) => {}
        }
    }

    async fn get(&mut self) {
        let choice = self.pick(4);
        let (path, expect): (String, Option<Option<String>>) = match choice {
            0 if !self.model.live.is_empty() => {
                let i = self.pick(self.model.live.len());
                let (p, e) = self.model.live.iter().nth(i).unwrap();
                (p.clone(), Some(Some(e.clone())))
            }
            1 if !self.model.absent.is_empty() => {
                let i = self.pick(self.model.absent.len());
                (self.model.absent.iter().nth(i).unwrap().clone(), Some(None))
            }
            2 if self.model.renamed.is_some() => (self.model.renamed.clone().unwrap(), None),
            _ => ("/f/shared".to_string(), None),
        };
        // A failed read was checked by `call`: nothing to compare.
        if let Ok(found) = self.call("get", self.store.get(&path)).await {
            let etag = found.as_ref().map(|f| f.etag.clone().unwrap_or_default());
            match expect {
                Some(expect) if etag != expect => self.violation(format!(
                    "client {}: get {path} answered {etag:?}, expected {expect:?}",
                    self.t
                )),
                None if choice == 2 && found.is_none() => self.violation(format!(
                    "client {}: the renamed file is not at {path}",
                    self.t
                )),
                _ => {}
            }
        }
    }

    async fn list(&mut self) {
        let prefix = format!("/f/t{}/", self.t);
        if let Ok(files) = self.call("list", self.store.list(&prefix)).await {
            check_listing(self.t, &self.model, &files, &self.tally);
        }
    }
}

/// The client's part of the tree as a listing shows it, against its model.
fn check_listing(t: usize, model: &Model, files: &[FileRecord], tally: &Mutex<Tally>) {
    let mut bad = Vec::new();
    let listed: BTreeMap<&str, &str> = files
        .iter()
        .map(|f| (f.path.as_str(), f.etag.as_deref().unwrap_or("")))
        .collect();
    for (path, etag) in &model.live {
        if listed.get(path.as_str()) != Some(&etag.as_str()) {
            bad.push(format!(
                "acknowledged {path} ({etag}) listed as {:?}",
                listed.get(path.as_str())
            ));
        }
    }
    if let Some(r) = &model.renamed
        && !listed.contains_key(r.as_str())
    {
        bad.push(format!("the renamed file is not listed at {r}"));
    }
    for (path, etag) in &listed {
        let known = model.live.contains_key(*path)
            || model.renamed.as_deref() == Some(*path)
            || model.maybe.get(*path).map(String::as_str) == Some(*etag);
        if !known {
            bad.push(format!(
                "{path} ({etag}) is listed but was never acknowledged (absent expected: {})",
                model.absent.contains(*path)
            ));
        }
    }
    if !bad.is_empty() {
        tally
            .lock()
            .unwrap()
            .violations
            .push(format!("client {t}: listing /f/t{t}/: {}", bad.join("; ")));
    }
}

/// What the killer did.
#[derive(Debug, Default)]
struct Kills {
    rounds: usize,
    /// Backends terminated.
    killed: usize,
    /// ...of which were running a statement (`state = 'active'`).
    active: usize,
    pids: BTreeSet<i32>,
}

/// Six clients write and read through one store for a few seconds while
/// every backend of the store is terminated every 50-100 ms.
#[test]
fn terminated_backends_under_load_lose_no_acknowledged_write() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(nexus_tests::pg::database("pg_faults_load"));
    let app = app_name("load");
    let admin = rt.block_on(nexus_tests::pg::connect(&db.url));
    let store = pollster::block_on(PgStore::connect(&db.url, options(&app, POOL))).unwrap();

    // A test that hangs would hold CI forever: give up loudly instead.
    let finished = Arc::new(AtomicBool::new(false));
    {
        let finished = finished.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(120) {
                if finished.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            eprintln!("terminated_backends_under_load: still running after 120 s: a hang");
            std::process::exit(101);
        });
    }

    // Fill the pool, so that the first kills find every connection.
    let warm: Vec<_> = (0..POOL)
        .map(|i| {
            let s = store.clone();
            std::thread::spawn(move || {
                pollster::block_on(s.list_directories(&format!("/warm{i}"))).unwrap()
            })
        })
        .collect();
    for w in warm {
        w.join().unwrap();
    }
    // Before the kills: the file each client renames.
    for t in 0..CLIENTS {
        pollster::block_on(store.put(NewFile::new(renamed(t, 0), "l", "p", 0))).unwrap();
    }
    let before = rt.block_on(pids(&admin, &app));
    assert!(!before.is_empty(), "the store has connections");

    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let until = start + RUN;
    let (models, kills) = std::thread::scope(|scope| {
        let killer = {
            let (stop, app, url) = (stop.clone(), app.clone(), db.url.clone());
            scope.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let admin = nexus_tests::pg::connect(&url).await;
                    let mut kills = Kills::default();
                    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
                    while !stop.load(Ordering::SeqCst) {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        tokio::time::sleep(Duration::from_millis(50 + rng % 51)).await;
                        let rows = admin
                            .query(
                                "SELECT pid, state = 'active', pg_terminate_backend(pid) \
                                 FROM pg_stat_activity \
                                 WHERE application_name = $1 AND pid <> pg_backend_pid()",
                                &[&app],
                            )
                            .await
                            .unwrap();
                        kills.rounds += 1;
                        for r in rows {
                            if r.get::<_, bool>(2) {
                                kills.killed += 1;
                                kills.pids.insert(r.get(0));
                                if r.get::<_, Option<bool>>(1) == Some(true) {
                                    kills.active += 1;
                                }
                            }
                        }
                    }
                    kills
                })
            })
        };
        let clients: Vec<_> = (0..CLIENTS)
            .map(|t| {
                let client = Client {
                    t,
                    store: store.clone(),
                    tally: tally.clone(),
                    rng: 0x2545_f491_4f6c_dd1d ^ ((t as u64 + 1) * 0x1000_0001),
                    model: Model {
                        renamed: Some(renamed(t, 0)),
                        ..Model::default()
                    },
                };
                scope.spawn(move || pollster::block_on(client.run(until)))
            })
            .collect();
        // Stops the killer even if a client panicked (else the scope would
        // wait for it forever).
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let stopping = StopOnDrop(&stop);
        let models: Vec<Model> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        drop(stopping);
        (models, killer.join().unwrap())
    });
    let ran = start.elapsed();

    // The end state, read with no more kills.
    let mut tally = Arc::try_unwrap(tally).unwrap().into_inner().unwrap();
    let shared_acked: Vec<&String> = models.iter().flat_map(|m| &m.shared_acked).collect();
    // Writes of unknown outcome, and how many of them turn out applied.
    let (mut unknown, mut applied) = (0, 0);
    pollster::block_on(async {
        for (t, model) in models.iter().enumerate() {
            let files = store.list(&format!("/f/t{t}/")).await.unwrap();
            let found = Mutex::new(Tally::default());
            check_listing(t, model, &files, &found);
            tally
                .violations
                .extend(found.into_inner().unwrap().violations);
            for path in model.maybe.keys() {
                let present = files.iter().any(|f| &f.path == path);
                unknown += 1;
                if present != model.maybe_deleted.contains(path) {
                    applied += 1;
                }
            }
            unknown += model.rename_unknown + model.meta_maybe.len();
            applied += model.rename_unknown_applied;
            for path in &model.absent {
                if files.iter().any(|f| &f.path == path) {
                    tally
                        .violations
                        .push(format!("client {t}: {path} is present, absent expected"));
                }
            }
            let renamed: Vec<_> = files
                .iter()
                .filter(|f| f.path.starts_with(&format!("/f/t{t}/r/")))
                .map(|f| f.path.clone())
                .collect();
            if let Some(r) = &model.renamed {
                if renamed != [r.clone()] {
                    tally.violations.push(format!(
                        "client {t}: renamed file expected at {r} only, found {renamed:?}"
                    ));
                }
                let n = store.get_metadata(r, "n").await.unwrap();
                let got = n.as_ref().and_then(|v| v.as_i64());
                if got.is_some_and(|g| model.meta_maybe.contains(&g)) {
                    applied += 1;
                }
                let ok = match (got, model.meta) {
                    (got, acked) if got == acked => true,
                    (Some(got), _) => model.meta_maybe.contains(&got),
                    (None, _) => false,
                };
                if !ok {
                    tally.violations.push(format!(
                        "client {t}: metadata n of {r} is {n:?}; acknowledged {:?}, maybe {:?}",
                        model.meta, model.meta_maybe
                    ));
                }
            }
        }
        // Every acknowledged put of the shared path made exactly one
        // version; nothing else did but puts of unknown outcome.
        // Newest first: oldest first here.
        let mut versions = store.list_versions("/f/shared").await.unwrap();
        versions.sort_by_key(|v| v.version);
        let mut made: BTreeMap<&str, usize> = BTreeMap::new();
        for v in &versions {
            *made.entry(v.etag.as_deref().unwrap_or("")).or_default() += 1;
        }
        for etag in &shared_acked {
            if made.get(etag.as_str()) != Some(&1) {
                tally.violations.push(format!(
                    "/f/shared: acknowledged put {etag} made {:?} versions",
                    made.get(etag.as_str())
                ));
            }
        }
        let maybe: BTreeSet<&str> = models
            .iter()
            .flat_map(|m| &m.shared_maybe)
            .map(String::as_str)
            .collect();
        unknown += maybe.len();
        applied += maybe.iter().filter(|m| made.contains_key(*m)).count();
        for (etag, count) in &made {
            let acked = shared_acked.iter().any(|a| a == etag);
            let uncertain_once = maybe.contains(etag) && *count == 1;
            if !acked && !uncertain_once {
                tally.violations.push(format!(
                    "/f/shared: version(s) with etag {etag} ({count}) from no acknowledged or uncertain put"
                ));
            }
        }
        let numbers: Vec<u32> = versions.iter().map(|v| v.version).collect();
        let expected: Vec<u32> = (1..=versions.len() as u32).collect();
        if numbers != expected {
            tally
                .violations
                .push(format!("/f/shared: version numbers {numbers:?}"));
        }
        if let Some(last) = versions.last() {
            let current = store.get("/f/shared").await.unwrap().unwrap();
            if (current.version, &current.etag) != (last.version, &last.etag) {
                tally.violations.push(format!(
                    "/f/shared: current {current:?} is not the last version {last:?}"
                ));
            }
        }
    });
    let after = rt.block_on(pids(&admin, &app));

    let acked: usize = models.iter().map(|m| m.live.len()).sum();
    let renames: u64 = models.iter().map(|m| m.renames).sum();
    let calls: usize = tally
        .ops
        .values()
        .map(|c| c.ok + c.failed + c.unknown)
        .sum();
    let failures: usize = tally.ops.values().map(|c| c.failed + c.unknown).sum();
    let summary = format!(
        "ran {ran:?}: {calls} calls ({failures} failed) by {} clients; kills: {} rounds, {} backends \
         terminated ({} running a statement, {} distinct pids); per call: {:?}; SQLSTATEs: {:?}, \
         without one: {}; slowest call {:?}; {acked} acknowledged files live, {} acknowledged \
         shared puts, {renames} renames; {unknown} writes of unknown outcome, {applied} of them \
         visibly applied; pids before {before:?}, after {after:?}\nsample failures: {:#?}",
        CLIENTS,
        kills.rounds,
        kills.killed,
        kills.active,
        kills.pids.len(),
        tally.ops,
        tally.sqlstates,
        tally.no_sqlstate,
        tally.slowest,
        shared_acked.len(),
        tally.samples,
    );
    eprintln!("{summary}");
    finished.store(true, Ordering::SeqCst);
    assert!(
        tally.violations.is_empty(),
        "{} violations:\n{}\n\n{summary}",
        tally.violations.len(),
        tally.violations.join("\n")
    );
    // The kills really overlapped the calls.
    assert!(kills.killed > 0, "no backend was terminated\n{summary}");
    assert!(
        kills.active > 0,
        "no backend was terminated while running a statement\n{summary}"
    );
    assert!(
        kills.pids.len() > before.len(),
        "connections were replaced and terminated again\n{summary}"
    );
    assert!(
        before.is_disjoint(&after),
        "every connection of the start was replaced\n{summary}"
    );
    assert!(calls > 100 && acked > 0, "the clients did work\n{summary}");
    drop(store);
    drop(db);
}
