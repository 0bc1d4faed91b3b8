//! A real PostgreSQL for tests.
//!
//! With `NEXUS_TEST_DATABASE_URL` set (a superuser URL), tests use that
//! server. Otherwise the first test to ask starts a throwaway cluster with the
//! installed PostgreSQL (`initdb` + `pg_ctl`) in a temporary folder, on a free
//! loopback port with trust authentication; a watchdog stops it and deletes
//! the folder when the test process exits. Every test gets its own database,
//! dropped when the test ends. Nothing is skipped: without PostgreSQL the
//! tests fail and say what to install.
//!
//! [`standby`] adds a real streaming standby of the throwaway cluster
//! (`pg_basebackup -R`), started once per test process, for the read-replica
//! tests. It is the one thing an external server cannot give: with
//! `NEXUS_TEST_DATABASE_URL` set those tests say so and are skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// A database of its own for one test; dropped (with `FORCE`) on drop.
#[derive(Debug)]
pub struct TestDb {
    /// Its URL (superuser).
    pub url: String,
    name: String,
}

impl TestDb {
    /// Its name (the same on a standby: see [`standby`]).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = server_url("postgres");
        let name = self.name.clone();
        // A thread with its own runtime: drop may run inside another runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&admin, tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await;
                }
            })
        })
        .join();
    }
}

/// A plain connection (no TLS) whose driver runs on the current runtime.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL: {e}"));
    tokio::spawn(conn);
    client
}

/// The id of the database at `url` (its `nexus_state.store_id`): the hub
/// its feed and its sync server name.
pub async fn store_id(url: &str) -> String {
    connect(url)
        .await
        .query_one("SELECT store_id FROM nexus_state WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0)
}

/// Asserts that no write was lost: every etag in `written` is a version
/// in the database at `url` (current at its path, in a conflict copy, or
/// in a file's history).
pub async fn assert_no_write_lost(url: &str, written: &[String]) {
    let versions: std::collections::HashSet<String> = connect(url)
        .await
        .query(
            "SELECT content_hash FROM version_history WHERE content_hash IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for e in written {
        assert!(versions.contains(e), "{e} was lost");
    }
}

/// The one number a query such as `SELECT count(*) FROM t` gives, on a
/// connection of its own.
pub async fn count(url: &str, query: &str) -> i64 {
    connect(url)
        .await
        .query_one(query, &[])
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .get(0)
}

/// Creates a fresh database named after `test`.
pub async fn database(test: &str) -> TestDb {
    let suffix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        % 1_000_000_000_000;
    let clean: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(30)
        .collect();
    let name = format!("nexus_{clean}_{suffix}");
    let (client, conn) = tokio_postgres::connect(&server_url("postgres"), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL: {e}"));
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
    TestDb {
        url: server_url(&name),
        name,
    }
}

/// The URL of database `db` on the test server.
pub fn server_url(db: &str) -> String {
    let base = SERVER.get_or_init(start_or_use_env);
    match base {
        Server::External(url) => replace_db(url, db),
        Server::Local { port, .. } => format!("postgresql://postgres@127.0.0.1:{port}/{db}"),
    }
}

enum Server {
    External(String),
    Local {
        port: u16,
        #[allow(dead_code)]
        dir: PathBuf,
    },
}

static SERVER: OnceLock<Server> = OnceLock::new();

fn replace_db(url: &str, db: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let scheme_end = head.find("://").map_or(0, |i| i + 3);
    let base = match head[scheme_end..].find('/') {
        Some(i) => &head[..scheme_end + i],
        None => head,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

static DURABLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Starts the throwaway cluster durable, like a real server (`fsync`,
/// `synchronous_commit` and `full_page_writes` left on), for benchmarks; the
/// default is off, for speed. `NEXUS_TEST_PG_DURABLE=1` does the same. Call it
/// before the first connection. A server from `NEXUS_TEST_DATABASE_URL` is
/// used as it is.
pub fn durable() {
    DURABLE.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(
        !matches!(SERVER.get(), Some(Server::Local { .. })),
        "pg::durable() called after the throwaway cluster started"
    );
}

fn start_or_use_env() -> Server {
    if let Ok(url) = std::env::var("NEXUS_TEST_DATABASE_URL")
        && !url.is_empty()
    {
        return Server::External(url);
    }
    let bin = find_bin_dir().unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: install them \
             (Debian: apt-get install -y postgresql-15), set NEXUS_PG_BIN to their folder, \
             or set NEXUS_TEST_DATABASE_URL to a superuser URL of a running server"
        )
    });
    let dir = std::env::temp_dir().join(format!("nexus-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let run_as = if is_root() {
        Some(service_user())
    } else {
        None
    };
    if let Some(user) = &run_as {
        chown(&dir, user);
    }
    let data = dir.join("data");
    run(
        &bin.join("initdb"),
        &[
            "-D",
            data.to_str().unwrap(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ],
        run_as.as_deref(),
    );
    let ssl = make_certificate(&dir, run_as.as_deref());
    for attempt in 0..5 {
        let port = free_port();
        let mut opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 -c shared_buffers=128MB",
            dir.display()
        );
        if !DURABLE.load(std::sync::atomic::Ordering::SeqCst)
            && std::env::var("NEXUS_TEST_PG_DURABLE").as_deref() != Ok("1")
        {
            opts.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        if let Some((cert, key)) = &ssl {
            opts.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cert.display(),
                key.display()
            ));
        }
        let log = dir.join("server.log");
        let ok = pg_ctl_start(&bin, &data, &log, &opts, run_as.as_deref());
        if ok {
            spawn_watchdog(&bin, &data, &dir, run_as.as_deref());
            return Server::Local { port, dir };
        }
        eprintln!(
            "PostgreSQL did not start on port {port} (attempt {attempt}); log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    panic!(
        "could not start a throwaway PostgreSQL in {}",
        dir.display()
    );
}

/// A self-signed certificate for the server, so that TLS is exercised
/// (`None` when `openssl` is not installed: the server then runs without TLS).
fn make_certificate(dir: &Path, run_as: Option<&str>) -> Option<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        return None;
    }
    let _ = Command::new("chmod").arg("600").arg(&key).status();
    if let Some(user) = run_as {
        chown(dir, user);
    }
    Some((cert, key))
}

/// Whether the test server accepts TLS.
pub async fn server_has_tls() -> bool {
    let (client, conn) = tokio_postgres::connect(&server_url("postgres"), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let on: String = client.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    on == "on"
}

fn find_bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("NEXUS_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Some(dir);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    if let Some(last) = versions.pop() {
        return Some(last);
    }
    ["/usr/local/bin", "/usr/bin"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// PostgreSQL refuses to run as root: use `postgres` if it exists, else `nobody`.
fn service_user() -> String {
    let exists = |u: &str| {
        Command::new("id")
            .arg(u)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if exists("postgres") {
        "postgres".into()
    } else {
        "nobody".into()
    }
}

fn chown(dir: &Path, user: &str) {
    let ok = Command::new("chown")
        .arg("-R")
        .arg(user)
        .arg(dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "chown {user} {}", dir.display());
}

fn command(program: &Path, args: &[&str], run_as: Option<&str>) -> Command {
    match run_as {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(program).args(args);
            c
        }
        None => {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
    }
}

fn run(program: &Path, args: &[&str], run_as: Option<&str>) {
    let out = command(program, args, run_as)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} failed: {}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `pg_ctl start` of the cluster in `data` with server options `opts`,
/// logging to `log`; whether it started (within 60 s).
fn pg_ctl_start(bin: &Path, data: &Path, log: &Path, opts: &str, run_as: Option<&str>) -> bool {
    run_status(
        &bin.join("pg_ctl"),
        &[
            "-D",
            data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-o",
            opts,
            "-w",
            "-t",
            "60",
            "start",
        ],
        run_as,
    )
}

fn run_status(program: &Path, args: &[&str], run_as: Option<&str>) -> bool {
    command(program, args, run_as)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Stops the cluster and deletes its folder once this process is gone.
fn spawn_watchdog(bin: &Path, data: &Path, dir: &Path, run_as: Option<&str>) {
    let stop = match run_as {
        Some(u) => format!(
            "runuser -u {u} -- {} -D {} -m immediate stop",
            bin.join("pg_ctl").display(),
            data.display()
        ),
        None => format!(
            "{} -D {} -m immediate stop",
            bin.join("pg_ctl").display(),
            data.display()
        ),
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf '{dir}'",
        pid = std::process::id(),
        dir = dir.display()
    );
    // Deliberately never waited for: it outlives this process.
    #[allow(clippy::zombie_processes)]
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning the PostgreSQL watchdog");
}

// --- A streaming standby of the throwaway cluster (read-replica tests) ---

/// The standby's port; `None` when the tests use an external server.
static STANDBY: OnceLock<Option<u16>> = OnceLock::new();

/// One test at a time controls the standby (pausing replay is cluster-wide).
static STANDBY_TURN: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// How long [`Standby::wait_for`] and [`Standby::catch_up`] wait.
const STANDBY_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The shared streaming standby, for one test at a time: made on first use
/// with `pg_basebackup -R -X stream` from the throwaway primary and started
/// as a hot standby on a free loopback port (a watchdog stops it and deletes
/// its folder when the test process exits). Databases created on the
/// primary appear on it once replayed ([`Standby::catch_up`]).
///
/// `Err(why)` only when the tests use an external server
/// (`NEXUS_TEST_DATABASE_URL`): this harness makes a standby only of the
/// cluster it started. Anything else that goes wrong panics.
pub async fn standby() -> Result<Standby, &'static str> {
    if let Server::External(_) = SERVER.get_or_init(start_or_use_env) {
        return Err(
            "NEXUS_TEST_DATABASE_URL names an external server, and a streaming standby is made \
             only of the throwaway cluster this harness starts: unset it to run this test",
        );
    }
    let turn = STANDBY_TURN.acquire().await.expect("never closed");
    let port = STANDBY
        .get_or_init(start_standby)
        .expect("the throwaway cluster has a standby");
    Ok(Standby {
        port,
        paused: false,
        _turn: turn,
    })
}

/// A test's turn on the standby; see [`standby`]. Dropping it resumes replay
/// if the test paused it (also when the test fails).
#[derive(Debug)]
pub struct Standby {
    port: u16,
    paused: bool,
    _turn: tokio::sync::SemaphorePermit<'static>,
}

impl Standby {
    /// The URL of database `db` on the standby (superuser; read-only).
    pub fn url(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Commits a row on the primary (with synchronous commit, so its WAL is
    /// sent at once) and waits until the standby has replayed it. Afterwards
    /// the standby shows everything committed on the primary before the call
    /// (databases included), and its `pg_last_xact_replay_timestamp()` is
    /// the time of that commit.
    pub async fn catch_up(&self) {
        assert!(
            !self.paused,
            "catch_up: replay on the standby is paused; resume it first"
        );
        let primary = connect(&server_url("postgres")).await;
        primary
            .batch_execute("SET synchronous_commit = on")
            .await
            .unwrap();
        let n: i64 = primary
            .query_one(
                "INSERT INTO nexus_test_heartbeat DEFAULT VALUES RETURNING n",
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("writing the heartbeat on the primary: {e}"))
            .get(0);
        self.wait_for(
            "postgres",
            &format!("SELECT EXISTS (SELECT 1 FROM nexus_test_heartbeat WHERE n = {n})"),
        )
        .await;
    }

    /// Waits until `query` (one row, one boolean) is true in database `db`
    /// on the standby; a database not there yet counts as false. Panics
    /// after 30 s, saying what the standby last answered and how far its
    /// replay is.
    pub async fn wait_for(&self, db: &str, query: &str) {
        let deadline = std::time::Instant::now() + STANDBY_WAIT;
        let mut last = String::from("nothing yet");
        let mut client: Option<tokio_postgres::Client> = None;
        loop {
            if client.is_none() {
                match tokio_postgres::connect(&self.url(db), tokio_postgres::NoTls).await {
                    Ok((c, conn)) => {
                        tokio::spawn(conn);
                        client = Some(c);
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            if let Some(c) = &client {
                match c.query_one(query, &[]).await {
                    Ok(row) if row.get::<_, bool>(0) => return,
                    Ok(_) => last = "false".into(),
                    Err(e) => {
                        last = e.to_string();
                        client = None;
                    }
                }
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "the standby did not show `{query}` in database {db} within {STANDBY_WAIT:?} \
                     (last answer: {last}; {})",
                    self.replay_state().await
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Pauses WAL replay on the standby (`pg_wal_replay_pause()`): it keeps
    /// receiving WAL but shows nothing new until [`Standby::resume_replay`]
    /// or the drop of `self`.
    pub async fn pause_replay(&mut self) {
        let c = connect(&self.url("postgres")).await;
        c.batch_execute("SELECT pg_wal_replay_pause()")
            .await
            .unwrap_or_else(|e| panic!("pausing replay on the standby: {e}"));
        self.paused = true;
    }

    /// Resumes WAL replay on the standby (`pg_wal_replay_resume()`).
    pub async fn resume_replay(&mut self) {
        let c = connect(&self.url("postgres")).await;
        c.batch_execute("SELECT pg_wal_replay_resume()")
            .await
            .unwrap_or_else(|e| panic!("resuming replay on the standby: {e}"));
        self.paused = false;
    }

    /// For messages: the standby's replay pause state and position, and the
    /// primary's position.
    async fn replay_state(&self) -> String {
        let ask = |url: String, sql: &'static str| async move {
            match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                Ok((client, conn)) => {
                    tokio::spawn(conn);
                    match client.query_one(sql, &[]).await {
                        Ok(row) => row.get::<_, Option<String>>(0).unwrap_or_default(),
                        Err(e) => e.to_string(),
                    }
                }
                Err(e) => e.to_string(),
            }
        };
        let standby = ask(
            self.url("postgres"),
            "SELECT format('replay %s, replayed up to %s, last replayed commit at %s', \
             pg_get_wal_replay_pause_state(), pg_last_wal_replay_lsn(), \
             pg_last_xact_replay_timestamp())",
        )
        .await;
        let primary = ask(
            server_url("postgres"),
            "SELECT pg_current_wal_insert_lsn()::text",
        )
        .await;
        format!("standby: {standby}; primary at {primary}")
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        if !self.paused {
            return;
        }
        let url = self.url("postgres");
        // A thread with its own runtime: drop may run inside another runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client.batch_execute("SELECT pg_wal_replay_resume()").await;
                }
            })
        })
        .join();
    }
}

/// Makes and starts the standby of the throwaway primary; its port.
fn start_standby() -> Option<u16> {
    let Server::Local { port: primary, .. } = SERVER.get_or_init(start_or_use_env) else {
        return None;
    };
    let primary = *primary;
    let bin = find_bin_dir().expect("the primary was started with these binaries");
    let run_as = if is_root() {
        Some(service_user())
    } else {
        None
    };
    let settings = primary_settings();
    let dir = std::env::temp_dir().join(format!("nexus-pg-standby-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    if let Some(user) = &run_as {
        chown(&dir, user);
    }
    let data = dir.join("data");
    spawn_watchdog(&bin, &data, &dir, run_as.as_deref());
    run(
        &bin.join("pg_basebackup"),
        &[
            "-R",
            "-D",
            data.to_str().unwrap(),
            "-h",
            "127.0.0.1",
            "-p",
            &primary.to_string(),
            "-U",
            "postgres",
            "-X",
            "stream",
            "--checkpoint=fast",
            "--no-sync",
        ],
        run_as.as_deref(),
    );
    // A hot standby needs at least the primary's values of these; TLS as on
    // the primary.
    let mut matching = String::new();
    for name in [
        "max_connections",
        "max_prepared_transactions",
        "max_locks_per_transaction",
        "max_wal_senders",
        "max_worker_processes",
    ] {
        matching.push_str(&format!(" -c {name}={}", settings[name]));
    }
    if settings["ssl"] == "on" {
        matching.push_str(&format!(
            " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            settings["ssl_cert_file"], settings["ssl_key_file"]
        ));
    }
    let log = dir.join("server.log");
    for attempt in 0..5 {
        let port = free_port();
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c hot_standby=on -c fsync=off{matching}",
            dir.display()
        );
        let ok = pg_ctl_start(&bin, &data, &log, &opts, run_as.as_deref());
        if ok {
            return Some(port);
        }
        eprintln!(
            "the standby did not start on port {port} (attempt {attempt}); log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    panic!("could not start the standby in {}", dir.display());
}

/// The primary's settings that the standby copies; also creates the
/// heartbeat table of [`Standby::catch_up`] (before the base backup, so
/// that the standby has it too).
fn primary_settings() -> std::collections::HashMap<String, String> {
    let url = server_url("postgres");
    // A thread with its own runtime: this may run inside another runtime.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let client = connect(&url).await;
            client
                .batch_execute(
                    "CREATE TABLE IF NOT EXISTS nexus_test_heartbeat (n bigserial PRIMARY KEY)",
                )
                .await
                .unwrap_or_else(|e| panic!("creating the heartbeat table: {e}"));
            client
                .query(
                    "SELECT name, setting FROM pg_settings WHERE name IN ('max_connections', \
                     'max_prepared_transactions', 'max_locks_per_transaction', \
                     'max_wal_senders', 'max_worker_processes', 'ssl', 'ssl_cert_file', \
                     'ssl_key_file')",
                    &[],
                )
                .await
                .unwrap_or_else(|e| panic!("reading the primary's settings: {e}"))
                .iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect()
        })
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

#[cfg(test)]
mod tests {
    use super::replace_db;

    #[test]
    fn database_is_replaced_in_urls() {
        assert_eq!(
            replace_db("postgresql://u:p@h:5/db", "x"),
            "postgresql://u:p@h:5/x"
        );
        assert_eq!(
            replace_db("postgresql://u@h/db?sslmode=disable", "x"),
            "postgresql://u@h/x?sslmode=disable"
        );
        assert_eq!(replace_db("postgresql://h", "x"), "postgresql://h/x");
    }
}
