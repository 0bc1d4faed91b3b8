//! Runs the same workload through the Nexus store and through plain rusqlite
//! (bundled C SQLite) with the same schema, in one process, and prints the
//! ratios. Both use a file in WAL mode with `synchronous=FULL`, and both do
//! the same logical work per put: look up the live row, insert or update it,
//! append a version row, stamp the change sequence.
//!
//! `cargo run --release -p nexus-bench -- [--files N] [--singles N] [--list N] [--rounds R] [--json]`
//!
//! Each round starts from two empty files; the figures are the medians of
//! the rounds (a single round on a shared VM varies by up to 1.5x). Rounds
//! alternate which side runs each workload first. Every measured workload
//! runs on a thread of its own, named for the side and the workload
//! (`nexus-get`, `sqlite-get`, ...: at most 15 bytes, the kernel's limit), so that `bench/profile.sh` can split
//! one `perf record` of the whole run into a profile per workload and side.

use std::time::{Duration, Instant};

use nexus_core::{NewFile, Store};
use nexus_migrations::Dialect;
use rusqlite::{OptionalExtension, params};

struct Config {
    files: usize,
    batch: usize,
    singles: usize,
    list: usize,
    list_repeats: usize,
    rounds: usize,
    json: bool,
}

fn parse_args() -> Config {
    let mut c = Config {
        files: 100_000,
        batch: 1_000,
        singles: 10_000,
        list: 10_000,
        list_repeats: 10,
        rounds: 3,
        json: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match a.as_str() {
            "--files" => c.files = num("--files"),
            "--batch" => c.batch = num("--batch"),
            "--singles" => c.singles = num("--singles"),
            "--list" => c.list = num("--list"),
            "--list-repeats" => c.list_repeats = num("--list-repeats"),
            "--rounds" => c.rounds = num("--rounds").max(1),
            "--json" => c.json = true,
            "--bench" => {} // passed by `cargo bench`
            other => panic!("unknown argument {other}; see the crate docs"),
        }
    }
    assert!(c.list <= c.files, "--list must not exceed --files");
    c
}

/// The i-th file of the workload; the first `list` of them live under `/list/`.
fn file(i: usize, list: usize) -> NewFile {
    let path = if i < list {
        format!("/list/f{i:07}")
    } else {
        format!("/data/d{:03}/f{i:07}", i % 997)
    };
    NewFile::new(
        path,
        "local",
        format!("/srv/blobs/{i:07}"),
        (i as u64) * 7 + 1,
    )
    .etag(format!("{i:064x}"))
    .mime_type("application/octet-stream")
}

#[derive(Clone, Copy)]
struct Row {
    name: &'static str,
    ours: Duration,
    theirs: Duration,
    ops: usize,
    goal: Option<f64>,
}

// ---- rusqlite baseline: the same schema, the same work -------------------

struct Baseline {
    conn: rusqlite::Connection,
    now: i64,
}

impl Baseline {
    fn open(path: &std::path::Path) -> Baseline {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;",
        )
        .unwrap();
        for m in Dialect::Sqlite.migrations() {
            conn.execute_batch(m.up).unwrap();
        }
        Baseline { conn, now: 0 }
    }

    fn tick(&mut self) -> i64 {
        self.now += 1;
        self.now
    }

    fn put_in_txn(&mut self, seq: i64, f: &NewFile) {
        let now = self.tick();
        let existing: Option<(String, Option<String>, i64)> = self
            .conn
            .prepare_cached(
                "SELECT path_id, content_hash, current_version FROM file_paths \
                 WHERE tenant_id = ?1 AND virtual_path = ?2 AND deleted_at IS NULL",
            )
            .unwrap()
            .query_row(params!["default", f.path], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
            .unwrap();
        let (path_id, version) = match existing {
            None => {
                let id = uuid_like(now);
                self.conn
                    .prepare_cached(
                        "INSERT INTO file_paths (path_id, tenant_id, virtual_path, backend_id, physical_path, \
                         size_bytes, content_hash, file_type, created_at, updated_at, deleted_at, current_version, \
                         change_seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, NULL, 1, ?10)",
                    )
                    .unwrap()
                    .execute(params![id, "default", f.path, f.backend, f.physical_path, f.size as i64, f.etag, f.mime_type, now, seq])
                    .unwrap();
                (id, 1)
            }
            Some((id, _, v)) => {
                self.conn
                    .prepare_cached(
                        "UPDATE file_paths SET backend_id = ?1, physical_path = ?2, size_bytes = ?3, content_hash = ?4, \
                         file_type = ?5, updated_at = ?6, current_version = ?7, change_seq = ?8 WHERE path_id = ?9",
                    )
                    .unwrap()
                    .execute(params![f.backend, f.physical_path, f.size as i64, f.etag, f.mime_type, now, v + 1, seq, id])
                    .unwrap();
                (id, v + 1)
            }
        };
        self.conn
            .prepare_cached(
                "INSERT INTO version_history (version_id, path_id, version_number, backend_id, physical_path, \
                 content_hash, size_bytes, mime_type, parent_version_id, source_type, change_reason, created_by, \
                 created_at, change_seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL, 'original', NULL, NULL, ?9, ?10)",
            )
            .unwrap()
            .execute(params![uuid_like(now + (1 << 40)), path_id, version, f.backend, f.physical_path, f.etag, f.size as i64, f.mime_type, now, seq])
            .unwrap();
    }

    fn write<T>(&mut self, f: impl FnOnce(&mut Self, i64) -> T) -> T {
        self.conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        let seq: i64 = self
            .conn
            .prepare_cached("UPDATE nexus_state SET change_seq = change_seq + 1 WHERE id = 1 RETURNING change_seq")
            .unwrap()
            .query_row([], |r| r.get(0))
            .unwrap();
        let out = f(self, seq);
        self.conn.execute_batch("COMMIT").unwrap();
        out
    }

    fn get(&self, path: &str) -> Option<BaselineRecord> {
        self.conn
            .prepare_cached(
                "SELECT path_id, virtual_path, backend_id, physical_path, size_bytes, content_hash, file_type, \
                 created_at, updated_at, current_version FROM file_paths \
                 WHERE tenant_id = ?1 AND virtual_path = ?2 AND deleted_at IS NULL",
            )
            .unwrap()
            .query_row(params!["default", path], BaselineRecord::from_row)
            .optional()
            .unwrap()
    }

    fn list(&self, prefix: &str, upper: &str) -> Vec<BaselineRecord> {
        self.conn
            .prepare_cached(
                "SELECT path_id, virtual_path, backend_id, physical_path, size_bytes, content_hash, file_type, \
                 created_at, updated_at, current_version FROM file_paths \
                 WHERE tenant_id = ?1 AND virtual_path >= ?2 AND virtual_path < ?3 AND deleted_at IS NULL \
                 ORDER BY virtual_path",
            )
            .unwrap()
            .query_map(params!["default", prefix, upper], BaselineRecord::from_row)
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }
}

/// What the baseline materializes per row: the same fields as a `FileRecord`.
#[allow(dead_code)]
struct BaselineRecord {
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

impl BaselineRecord {
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(BaselineRecord {
            path_id: r.get(0)?,
            path: r.get(1)?,
            backend: r.get(2)?,
            physical_path: r.get(3)?,
            size: r.get(4)?,
            etag: r.get(5)?,
            mime: r.get(6)?,
            created: r.get(7)?,
            modified: r.get(8)?,
            version: r.get(9)?,
        })
    }
}

fn uuid_like(n: i64) -> String {
    format!(
        "{:08x}-0000-4000-8000-{:012x}",
        (n >> 32) as u32,
        n & 0xffff_ffff_ffff
    )
}

/// Runs `f` on a thread named `thread` (what `perf report --comm` selects)
/// and times it.
fn time<T: Send>(thread: &str, f: impl FnOnce() -> T + Send) -> (Duration, T) {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name(thread.to_string())
            .spawn_scoped(scope, || {
                let start = Instant::now();
                let out = f();
                (start.elapsed(), out)
            })
            .unwrap()
            .join()
            .unwrap()
    })
}

/// Times our side and the baseline's, in the order `ours_first` says.
fn both<A: Send, B: Send>(
    ours_first: bool,
    ours: (&str, impl FnOnce() -> A + Send),
    theirs: (&str, impl FnOnce() -> B + Send),
) -> ((Duration, A), (Duration, B)) {
    if ours_first {
        let a = time(ours.0, ours.1);
        (a, time(theirs.0, theirs.1))
    } else {
        let b = time(theirs.0, theirs.1);
        (time(ours.0, ours.1), b)
    }
}

/// One round: both sides from empty files, every workload.
fn round(c: &Config, files: &[NewFile], singles: &[NewFile], ours_first: bool) -> Vec<Row> {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    let store = pollster::block_on(Store::open(dir.path().join("ours.db"))).unwrap();
    let base = std::sync::Mutex::new(Baseline::open(&dir.path().join("rusqlite.db")));
    let base = &base;
    let store = &store;

    // 1. Puts in batches of `batch`, one transaction each.
    let ((ours, _), (theirs, _)) = both(
        ours_first,
        ("nexus-putbatch", || {
            pollster::block_on(async {
                for chunk in files.chunks(c.batch) {
                    store.put_batch(chunk).await.unwrap();
                }
            })
        }),
        ("sqlite-putbatch", || {
            let mut base = base.lock().unwrap();
            for chunk in files.chunks(c.batch) {
                base.write(|b, seq| chunk.iter().for_each(|f| b.put_in_txn(seq, f)));
            }
        }),
    );
    rows.push(Row {
        name: "put, batched",
        ours,
        theirs,
        ops: c.files,
        goal: Some(1.5),
    });

    // 2. Gets by path, every file once, in a shuffled order.
    let mut order: Vec<usize> = (0..c.files).collect();
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    for i in (1..order.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let order = &order;
    let ((ours, found_ours), (theirs, found_theirs)) = both(
        ours_first,
        ("nexus-get", || {
            pollster::block_on(async {
                let mut n = 0;
                for &i in order {
                    n += usize::from(store.get(&files[i].path).await.unwrap().is_some());
                }
                n
            })
        }),
        ("sqlite-get", || {
            let base = base.lock().unwrap();
            order
                .iter()
                .filter(|&&i| base.get(&files[i].path).is_some())
                .count()
        }),
    );
    assert_eq!((found_ours, found_theirs), (c.files, c.files));
    rows.push(Row {
        name: "get by path",
        ours,
        theirs,
        ops: c.files,
        goal: Some(1.0),
    });

    // 3. List every file under a prefix (among all the others), repeated.
    let ((ours, n_ours), (theirs, n_theirs)) = both(
        ours_first,
        ("nexus-list", || {
            pollster::block_on(async {
                let mut n = 0;
                for _ in 0..c.list_repeats {
                    n += store.list("/list/").await.unwrap().len();
                }
                n
            })
        }),
        ("sqlite-list", || {
            let base = base.lock().unwrap();
            (0..c.list_repeats)
                .map(|_| base.list("/list/", "/list0").len())
                .sum::<usize>()
        }),
    );
    assert_eq!(
        (n_ours, n_theirs),
        (c.list * c.list_repeats, c.list * c.list_repeats)
    );
    rows.push(Row {
        name: "list under a prefix",
        ours,
        theirs,
        ops: c.list * c.list_repeats,
        goal: Some(1.1),
    });

    // 4. Single-put transactions (each commit is durable).
    let ((ours, _), (theirs, _)) = both(
        ours_first,
        ("nexus-putone", || {
            pollster::block_on(async {
                for f in singles {
                    store.put(f.clone()).await.unwrap();
                }
            })
        }),
        ("sqlite-putone", || {
            let mut base = base.lock().unwrap();
            for f in singles {
                base.write(|b, seq| b.put_in_txn(seq, f));
            }
        }),
    );
    rows.push(Row {
        name: "put, one per transaction",
        ours,
        theirs,
        ops: c.singles,
        goal: None,
    });
    rows
}

fn main() {
    let c = parse_args();
    let files: Vec<NewFile> = (0..c.files).map(|i| file(i, c.list)).collect();
    let singles: Vec<NewFile> = (0..c.singles).map(|i| file(c.files + i, 0)).collect();
    let rounds: Vec<Vec<Row>> = (0..c.rounds)
        .map(|r| {
            let rows = round(&c, &files, &singles, r % 2 == 0);
            for row in &rows {
                eprintln!(
                    "round {r} {:<26} {:.2}x",
                    row.name,
                    row.ours.as_secs_f64() / row.theirs.as_secs_f64()
                );
            }
            rows
        })
        .collect();
    // Per workload, the median of each side's times.
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let rows: Vec<Row> = (0..rounds[0].len())
        .map(|w| Row {
            ours: median(rounds.iter().map(|r| r[w].ours).collect()),
            theirs: median(rounds.iter().map(|r| r[w].theirs).collect()),
            ..rounds[0][w]
        })
        .collect();

    if c.json {
        let out: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "workload": r.name, "ops": r.ops,
                    "ours_s": r.ours.as_secs_f64(), "rusqlite_s": r.theirs.as_secs_f64(),
                    "ratio": r.ours.as_secs_f64() / r.theirs.as_secs_f64(), "goal": r.goal,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out).unwrap());
        return;
    }
    println!(
        "files={} batch={} singles={} list={}x{} rounds={} (median times)",
        c.files, c.batch, c.singles, c.list, c.list_repeats, c.rounds
    );
    println!(
        "{:<26} {:>10} {:>12} {:>10} {:>12} {:>8} {:>6}",
        "workload", "ops", "nexus s", "nexus op/s", "rusqlite s", "ratio", "goal"
    );
    for r in &rows {
        let ratio = r.ours.as_secs_f64() / r.theirs.as_secs_f64();
        println!(
            "{:<26} {:>10} {:>12.3} {:>10.0} {:>12.3} {:>7.2}x {:>6}",
            r.name,
            r.ops,
            r.ours.as_secs_f64(),
            r.ops as f64 / r.ours.as_secs_f64(),
            r.theirs.as_secs_f64(),
            ratio,
            r.goal.map_or("-".to_string(), |g| format!("<={g}x"))
        );
    }
    println!("ratio = nexus time / rusqlite time (lower is better; 1.00x is parity)");
}
