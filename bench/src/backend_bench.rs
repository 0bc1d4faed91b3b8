//! The same workload through the embedded store, the PostgreSQL store
//! (`nexus-pg`) and plain single statements on one PostgreSQL table of the
//! same shape (the limit a store can approach), with 1, 2, 8 and 32 concurrent
//! clients, so that users can see when to move. Reports ops/s; asserts
//! nothing about speed.
//!
//! `cargo run --release -p nexus-bench --bin nexus-backend-bench -- [--ops N] [--rounds R] [--json]`
//!
//! PostgreSQL: a throwaway cluster started durable (fsync, synchronous commit
//! and full page writes on, like a real server), or the server of
//! `NEXUS_TEST_DATABASE_URL` as it is.
//!
//! Backends:
//! - `embedded`: `nexus_core::Store` on a file.
//! - `postgres`: `nexus_pg::PgStore`, a pool of at least as many connections
//!   as clients.
//! - `postgres-plain`: one tokio-postgres connection per client, prepared
//!   statements on `plain_files` (the columns of the store's file row, primary
//!   key `(tenant_id, path)`): put is one `INSERT ... ON CONFLICT DO UPDATE`
//!   in autocommit, get a primary-key select, list a range select of 100.
//! - `rusqlite`: C SQLite on a file with the store's schema, one connection
//!   per client (`nexus_bench::baseline`: WAL, `synchronous=FULL`, the
//!   engine's page cache, a 30 s busy timeout): put is the store's put done
//!   by hand in one `BEGIN IMMEDIATE` transaction (take the next change
//!   sequence number, look the path up, insert the file row and its version
//!   row), as `nexus-bench` does it; get and list the store's selects.
//!   Concurrent writers take turns on SQLite's file lock.
//!
//! Every configuration (backend × clients) does `--ops` puts on paths of its
//! own (so every put creates a row), then `--ops` × 10 gets of them, then about
//! `--ops / 10` lists of the first 100 paths of the configuration's folder (a
//! prefix list in the store, a range select in the plain table). Each client
//! is a thread calling through `pollster::block_on`; the PostgreSQL
//! connections run on a 2-worker tokio runtime (the store's own, or one for
//! the plain connections). All of that `--rounds` times (default 3, each
//! round on paths of its own); every figure is the median of the rounds. `--json` prints `{"rows": [{"backend", "clients",
//! "op", "ops_per_s"}, ...]}` on stdout; progress goes to stderr.

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use nexus_core::{DynStore, ListOptions, NewFile, Store};
use tokio_postgres::{Client, NoTls, Row, Statement};

use nexus_bench::arg;
use nexus_bench::baseline::{self, Baseline};

const CLIENTS: [usize; 4] = [1, 2, 8, 32];
/// Each client gets every path it wrote this many times: a get is so much
/// cheaper than a put that `--ops` of them would take a few milliseconds.
const GET_REPEAT: usize = 10;
const BACKENDS: [&str; 4] = ["embedded", "postgres", "postgres-plain", "rusqlite"];
const LIST_LIMIT: usize = 100;
const TENANT: &str = nexus_core::DEFAULT_TENANT;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Put,
    Get,
    List,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::List => "list",
        }
    }
}

/// The folder of one measured configuration (a round and a client count):
/// each writes its own paths, so that every put creates a row.
fn folder(config: usize) -> String {
    format!("/bench/k{config}/")
}

/// The path of file `i` of client `c` in configuration `config`.
fn path(config: usize, c: usize, i: usize) -> String {
    format!("{}c{c:02}/f{i:06}", folder(config))
}

/// One client's handle on a backend.
enum Conn {
    Store(DynStore),
    Plain(Box<Plain>),
    Rusqlite(Mutex<Baseline<rusqlite::Connection>>),
}

/// A plain connection with its prepared statements.
struct Plain {
    client: Client,
    put: Statement,
    get: Statement,
    list: Statement,
}

const PLAIN_COLS: &str =
    "tenant_id, path, backend_id, physical_path, size_bytes, content_hash, updated_at";

const PLAIN_TABLE: &str = "CREATE TABLE plain_files (
    tenant_id     text COLLATE \"C\" NOT NULL,
    path          text COLLATE \"C\" NOT NULL,
    backend_id    text NOT NULL,
    physical_path text NOT NULL,
    size_bytes    bigint NOT NULL,
    content_hash  text,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, path)
)";

impl Plain {
    async fn connect(url: &str, runtime: &tokio::runtime::Handle) -> Plain {
        let (client, conn) = tokio_postgres::connect(url, NoTls)
            .await
            .unwrap_or_else(|e| panic!("connecting the plain client: {e}"));
        runtime.spawn(conn);
        let put = client
            .prepare(&format!(
                "INSERT INTO plain_files ({PLAIN_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (tenant_id, path) DO UPDATE SET backend_id = EXCLUDED.backend_id, \
                 physical_path = EXCLUDED.physical_path, size_bytes = EXCLUDED.size_bytes, \
                 content_hash = EXCLUDED.content_hash, updated_at = EXCLUDED.updated_at"
            ))
            .await
            .unwrap();
        let get = client
            .prepare(&format!(
                "SELECT {PLAIN_COLS} FROM plain_files WHERE tenant_id = $1 AND path = $2"
            ))
            .await
            .unwrap();
        let list = client
            .prepare(&format!(
                "SELECT {PLAIN_COLS} FROM plain_files WHERE tenant_id = $1 AND path >= $2 \
                 AND path < $3 ORDER BY path LIMIT {LIST_LIMIT}"
            ))
            .await
            .unwrap();
        Plain {
            client,
            put,
            get,
            list,
        }
    }
}

/// Decodes a plain row as the store decodes its own (all columns).
fn decode(
    row: &Row,
) -> (
    String,
    String,
    String,
    String,
    i64,
    Option<String>,
    SystemTime,
) {
    (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
        row.get(6),
    )
}

/// Operation `op` on file `i` of client `c` in configuration `clients`.
fn op(conn: &Conn, op: Op, clients: usize, c: usize, i: usize) {
    match (conn, op) {
        (Conn::Store(s), Op::Put) => {
            pollster::block_on(s.put(
                NewFile::new(path(clients, c, i), "s3", "bucket/x", i as u64).etag(format!("{i}")),
            ))
            .unwrap();
        }
        (Conn::Store(s), Op::Get) => {
            pollster::block_on(s.get(&path(clients, c, i)))
                .unwrap()
                .expect("the path was put");
        }
        (Conn::Store(s), Op::List) => {
            let page = pollster::block_on(
                s.list_page(&ListOptions::prefix(folder(clients)).limit(LIST_LIMIT)),
            )
            .unwrap();
            assert_eq!(page.items.len(), LIST_LIMIT);
        }
        (Conn::Plain(p), Op::Put) => {
            let n = pollster::block_on(p.client.execute(
                &p.put,
                &[
                    &TENANT,
                    &path(clients, c, i),
                    &"s3",
                    &"bucket/x",
                    &(i as i64),
                    &format!("{i}"),
                    &SystemTime::now(),
                ],
            ))
            .unwrap();
            assert_eq!(n, 1);
        }
        (Conn::Plain(p), Op::Get) => {
            let row =
                pollster::block_on(p.client.query_opt(&p.get, &[&TENANT, &path(clients, c, i)]))
                    .unwrap()
                    .expect("the path was put");
            std::hint::black_box(decode(&row));
        }
        (Conn::Rusqlite(b), Op::Put) => {
            let file =
                NewFile::new(path(clients, c, i), "s3", "bucket/x", i as u64).etag(format!("{i}"));
            b.lock().unwrap().write(|b, seq| b.put_in_txn(seq, &file));
        }
        (Conn::Rusqlite(b), Op::Get) => {
            let row = b.lock().unwrap().get(&path(clients, c, i));
            std::hint::black_box(row.expect("the path was put"));
        }
        (Conn::Rusqlite(b), Op::List) => {
            let start = folder(clients);
            let end = format!("{}0", &start[..start.len() - 1]);
            let rows = b.lock().unwrap().list_page(&start, &end, LIST_LIMIT);
            assert_eq!(rows.len(), LIST_LIMIT);
        }
        (Conn::Plain(p), Op::List) => {
            let start = folder(clients);
            // The prefix ends in '/'; '0' is the next byte.
            let end = format!("{}0", &start[..start.len() - 1]);
            let rows =
                pollster::block_on(p.client.query(&p.list, &[&TENANT, &start, &end])).unwrap();
            assert_eq!(rows.len(), LIST_LIMIT);
            rows.iter().for_each(|r| {
                std::hint::black_box(decode(r));
            });
        }
    }
}

/// Runs `count` operations `op` on each of the first `clients` handles, one
/// thread each, all at once; returns ops/s.
fn run(
    conns: &[Conn],
    op_kind: Op,
    clients: usize,
    config: usize,
    per_client: usize,
    count: usize,
) -> f64 {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for (c, conn) in conns.iter().take(clients).enumerate() {
            scope.spawn(move || {
                for i in 0..count {
                    op(conn, op_kind, config, c, i % per_client);
                }
            });
        }
    });
    (clients * count) as f64 / started.elapsed().as_secs_f64()
}

#[derive(Clone, Copy)]
struct Measured {
    backend: &'static str,
    clients: usize,
    op: Op,
    ops_per_s: f64,
}

const USAGE: &str = "nexus-backend-bench [--ops N] [--rounds R] [--backends LIST] [--json]

The same puts, gets and lists through the embedded store, the PostgreSQL
store, plain PostgreSQL statements and plain rusqlite, with 1, 2, 8 and 32
concurrent clients; ops/s, the median of R rounds (default 3) of N puts
(default 2000), 10 N gets and N/10 lists per configuration. --backends picks
some of embedded,postgres,postgres-plain,rusqlite (default all; PostgreSQL
is started only for the two that need it). PostgreSQL: a throwaway
durable cluster, or NEXUS_TEST_DATABASE_URL. --json prints
{\"rows\": [{\"backend\", \"clients\", \"op\", \"ops_per_s\"}, ...]} on stdout.";

/// Starts (or reaches) PostgreSQL for the two PostgreSQL backends, with the
/// plain table; returns the database (dropped with it), its URL and its
/// settings as one line.
fn postgres(
    rt: &tokio::runtime::Runtime,
    max_clients: usize,
) -> (nexus_tests::pg::TestDb, String, String) {
    // Before the first connection: the throwaway cluster commits durably.
    nexus_tests::pg::durable();
    let db = rt.block_on(nexus_tests::pg::database("backend_bench"));
    let url = format!("{}?sslmode=disable", db.url);
    let settings = rt.block_on(async {
        let admin = nexus_tests::pg::connect(&url).await;
        admin.batch_execute(PLAIN_TABLE).await.unwrap();
        let mut settings = Vec::new();
        for name in [
            "server_version",
            "fsync",
            "synchronous_commit",
            "full_page_writes",
            "max_connections",
        ] {
            let row = admin.query_one(&format!("SHOW {name}"), &[]).await.unwrap();
            settings.push((name, row.get::<_, String>(0)));
        }
        settings
    });
    let setting = |name: &str| {
        settings
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .unwrap()
    };
    // The store's pool, the plain connections, this one and a few spare.
    let needed = 2 * max_clients + 5;
    let max_connections: usize = setting("max_connections").parse().unwrap();
    assert!(
        max_connections >= needed,
        "the server allows {max_connections} connections; the benchmark needs {needed}"
    );
    let settings_line = settings
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!("PostgreSQL: {settings_line}");
    if setting("fsync") != "on" || setting("synchronous_commit") == "off" {
        eprintln!("warning: the server does not commit durably; puts are not comparable");
    }
    (db, url, settings_line)
}

fn main() {
    if std::env::args().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return;
    }
    let ops = arg("--ops", 2000);
    let rounds = arg("--rounds", 3).max(1);
    let json = std::env::args().any(|a| a == "--json");
    let max_clients = *CLIENTS.iter().max().unwrap();
    assert!(
        ops >= max_clients.max(LIST_LIMIT),
        "--ops must be at least {}",
        max_clients.max(LIST_LIMIT)
    );

    let selected: Vec<&'static str> = match std::env::args()
        .position(|a| a == "--backends")
        .and_then(|i| std::env::args().nth(i + 1))
    {
        None => BACKENDS.to_vec(),
        Some(list) => list
            .split(',')
            .map(|name| {
                *BACKENDS.iter().find(|b| **b == name).unwrap_or_else(|| {
                    panic!(
                        "--backends: unknown backend {name:?} (known: {})",
                        BACKENDS.join(",")
                    )
                })
            })
            .collect(),
    };
    let wants = |name: &str| selected.contains(&name);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("plain-pg")
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut backends: Vec<(&'static str, Vec<Conn>)> = Vec::new();
    let mut settings_line = None;
    let mut pg_db = None;
    if wants("embedded") {
        let embedded: DynStore =
            Arc::new(pollster::block_on(Store::open(dir.path().join("b.db"))).unwrap());
        backends.push((
            "embedded",
            (0..max_clients)
                .map(|_| Conn::Store(embedded.clone()))
                .collect(),
        ));
    }
    if wants("postgres") || wants("postgres-plain") {
        let (db, url, line) = postgres(&rt, max_clients);
        pg_db = Some(db);
        settings_line = Some(line);
        if wants("postgres") {
            let postgres: DynStore = Arc::new(
                pollster::block_on(nexus_pg::PgStore::connect(
                    &url,
                    nexus_pg::PgOptions {
                        pool_size: max_clients,
                        ..Default::default()
                    },
                ))
                .unwrap(),
            );
            backends.push((
                "postgres",
                (0..max_clients)
                    .map(|_| Conn::Store(postgres.clone()))
                    .collect(),
            ));
        }
        if wants("postgres-plain") {
            let plain: Vec<Conn> = rt.block_on(async {
                let mut conns = Vec::new();
                for _ in 0..max_clients {
                    conns.push(Conn::Plain(Box::new(
                        Plain::connect(&url, rt.handle()).await,
                    )));
                }
                conns
            });
            backends.push(("postgres-plain", plain));
        }
    }
    if wants("rusqlite") {
        // The first connection creates the file with the store's schema.
        let rusqlite_db = dir.path().join("r.db");
        drop(baseline::rusqlite(&rusqlite_db));
        backends.push((
            "rusqlite",
            (0..max_clients)
                .map(|c| {
                    let first = (c as i64 + 1) << 44;
                    Conn::Rusqlite(Mutex::new(baseline::rusqlite_join(&rusqlite_db, first)))
                })
                .collect(),
        ));
    }

    // Warm-up: the store's pool opens its connections (and prepares) before
    // the first measured call; misses only, nothing written.
    for (_, conns) in &backends {
        std::thread::scope(|scope| {
            for conn in conns {
                scope.spawn(move || {
                    for i in 0..20 {
                        let missing = format!("/warm-up/{i}");
                        match conn {
                            Conn::Store(s) => {
                                assert!(pollster::block_on(s.get(&missing)).unwrap().is_none());
                            }
                            Conn::Plain(p) => {
                                let row = pollster::block_on(
                                    p.client.query_opt(&p.get, &[&TENANT, &missing]),
                                )
                                .unwrap();
                                assert!(row.is_none());
                            }
                            Conn::Rusqlite(b) => {
                                assert!(b.lock().unwrap().get(&missing).is_none());
                            }
                        }
                    }
                });
            }
        });
    }

    let started = Instant::now();
    let mut samples: Vec<Measured> = Vec::new();
    // Rounds outermost, then clients: the store and its plain baseline run
    // back to back, and each configuration is measured once per round; the
    // median of the rounds is reported (one slow fsync does not decide).
    for round in 0..rounds {
        for clients in CLIENTS {
            let per_client = ops / clients;
            let config = round * 1000 + clients;
            for (backend, conns) in &backends {
                for (op, count) in [
                    (Op::Put, per_client),
                    (Op::Get, per_client * GET_REPEAT),
                    (Op::List, (per_client / 10).max(1)),
                ] {
                    let ops_per_s = run(conns, op, clients, config, per_client, count);
                    eprintln!(
                        "round {round} {backend:<15} {clients:>2} clients {:<4} {:>10.0} ops/s  ({:.0} s so far)",
                        op.name(),
                        ops_per_s,
                        started.elapsed().as_secs_f64()
                    );
                    samples.push(Measured {
                        backend,
                        clients,
                        op,
                        ops_per_s,
                    });
                }
            }
        }
    }
    let mut rows: Vec<Measured> = Vec::new();
    for m in &samples {
        if rows
            .iter()
            .any(|r| r.backend == m.backend && r.clients == m.clients && r.op == m.op)
        {
            continue;
        }
        let mut all: Vec<f64> = samples
            .iter()
            .filter(|s| s.backend == m.backend && s.clients == m.clients && s.op == m.op)
            .map(|s| s.ops_per_s)
            .collect();
        all.sort_by(f64::total_cmp);
        rows.push(Measured {
            ops_per_s: all[all.len() / 2],
            ..*m
        });
    }

    if json {
        let rows: Vec<_> = rows
            .iter()
            .map(|m| {
                serde_json::json!({
                    "backend": m.backend,
                    "clients": m.clients,
                    "op": m.op.name(),
                    "ops_per_s": (m.ops_per_s * 10.0).round() / 10.0,
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "rows": rows }));
        return;
    }

    let find = |backend: &str, clients: usize, op: Op| {
        rows.iter()
            .find(|m| m.backend == backend && m.clients == clients && m.op == op)
            .map(|m| m.ops_per_s)
    };
    println!(
        "ops/s, median of {rounds} rounds of {ops} puts, {} gets and {} lists of {LIST_LIMIT} \
         per configuration (each put its own transaction)",
        ops * GET_REPEAT,
        ops / 10
    );
    if let Some(line) = &settings_line {
        println!("PostgreSQL: {line}");
    }
    println!(
        "{:<15} {:>8} {:>10} {:>10} {:>10}",
        "backend", "clients", "put", "get", "list 100"
    );
    for (backend, _) in &backends {
        for clients in CLIENTS {
            let cell = |op| find(backend, clients, op).unwrap();
            println!(
                "{backend:<15} {clients:>8} {:>10.0} {:>10.0} {:>10.0}",
                cell(Op::Put),
                cell(Op::Get),
                cell(Op::List),
            );
        }
    }
    // Each goal of the issues, where both of its figures were measured.
    let ratio = |(b1, c1, op1): (&str, usize, Op), (b2, c2, op2): (&str, usize, Op)| {
        Some(find(b1, c1, op1)? / find(b2, c2, op2)?)
    };
    let goals: [(&str, Option<f64>, f64); 5] = [
        (
            "embedded gets, 8 clients / 1 client",
            ratio(("embedded", 8, Op::Get), ("embedded", 1, Op::Get)),
            1.5,
        ),
        (
            "embedded puts, 8 clients / 1 client",
            ratio(("embedded", 8, Op::Put), ("embedded", 1, Op::Put)),
            4.0,
        ),
        (
            "embedded / rusqlite puts, 8 clients",
            ratio(("embedded", 8, Op::Put), ("rusqlite", 8, Op::Put)),
            2.0,
        ),
        (
            "postgres / postgres-plain puts, 8 clients",
            ratio(("postgres", 8, Op::Put), ("postgres-plain", 8, Op::Put)),
            0.5,
        ),
        (
            "postgres / postgres-plain gets, 8 clients",
            ratio(("postgres", 8, Op::Get), ("postgres-plain", 8, Op::Get)),
            0.8,
        ),
    ];
    println!();
    for (name, ratio, goal) in goals {
        if let Some(ratio) = ratio {
            let verdict = if ratio >= goal {
                "goal met"
            } else {
                "below goal"
            };
            println!("{name}: {ratio:.2}x ({verdict}, goal >= {goal}x)");
        }
    }
    println!();
    for (a, b) in [("embedded", "rusqlite"), ("postgres", "postgres-plain")] {
        if find(a, 1, Op::Put).is_none() || find(b, 1, Op::Put).is_none() {
            continue;
        }
        println!("{a} / {b}, every figure:");
        for op in [Op::Put, Op::Get, Op::List] {
            let cells: Vec<String> = CLIENTS
                .iter()
                .map(|&c| format!("{c}: {:.2}x", ratio((a, c, op), (b, c, op)).unwrap()))
                .collect();
            println!("  {:<4} {}", op.name(), cells.join("  "));
        }
    }
    drop(pg_db);
}
