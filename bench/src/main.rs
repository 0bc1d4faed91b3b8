//! Runs the same workload through the Nexus store, through the same
//! statements on turso_core directly (the store's engine, without the
//! store), and through plain rusqlite (bundled C SQLite), with the same
//! schema, in one process, and prints the ratios. All three use a file in
//! WAL mode with `synchronous=FULL` and a 2,000-page cache, and do the same
//! logical work per put: look up the live row, insert or update it, append a
//! version row, stamp the change sequence (see `baseline.rs`).
//!
//! `cargo run --release -p nexus-bench -- [--files N] [--singles N] [--list N] [--rounds R] [--json]`
//!
//! Each round starts from empty files; the figures are the medians of the
//! rounds (a single round on a shared VM varies by up to 1.5x). Rounds
//! rotate which side runs each workload first. Every measured workload runs
//! on a thread of its own, named for the side and the workload (`nexus-get`,
//! `turso-get`, `sqlite-get`, ...: at most 15 bytes, the kernel's limit), so
//! that `bench/profile.sh` can split one `perf record` of the whole run into
//! a profile per workload and side.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use nexus_core::{NewFile, Store};

use nexus_bench::baseline::{self, Baseline, Sql};

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
    /// The same statements on turso_core directly.
    turso: Duration,
    theirs: Duration,
    ops: usize,
    goal: Option<f64>,
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

/// The three sides of one workload, each a name for its thread and the
/// work; runs them one after the other, starting with side `first`, and
/// returns each one's time and result in the order given.
type Side<'a, T> = (&'static str, Box<dyn FnOnce() -> T + Send + 'a>);

fn sides<T: Send>(first: usize, sides: [Side<'_, T>; 3]) -> [(Duration, T); 3] {
    let mut out: [Option<(Duration, T)>; 3] = [None, None, None];
    let mut sides = sides.map(Some);
    for k in 0..3 {
        let i = (first + k) % 3;
        let (name, f) = sides[i].take().unwrap();
        out[i] = Some(time(name, f));
    }
    out.map(Option::unwrap)
}

/// A baseline's side of each workload (the same on either engine).
fn put_batches<S: Sql>(b: &Mutex<Baseline<S>>, files: &[NewFile], batch: usize) -> usize {
    let mut b = b.lock().unwrap();
    for chunk in files.chunks(batch) {
        b.write(|b, seq| chunk.iter().for_each(|f| b.put_in_txn(seq, f)));
    }
    0
}

fn gets<S: Sql>(b: &Mutex<Baseline<S>>, files: &[NewFile], order: &[usize]) -> usize {
    let mut b = b.lock().unwrap();
    order
        .iter()
        .filter(|&&i| b.get(&files[i].path).is_some())
        .count()
}

fn lists<S: Sql>(b: &Mutex<Baseline<S>>, repeats: usize) -> usize {
    let mut b = b.lock().unwrap();
    (0..repeats).map(|_| b.list("/list/", "/list0").len()).sum()
}

fn put_singles<S: Sql>(b: &Mutex<Baseline<S>>, singles: &[NewFile]) -> usize {
    let mut b = b.lock().unwrap();
    for f in singles {
        b.write(|b, seq| b.put_in_txn(seq, f));
    }
    0
}

/// One round: the three sides from empty files, every workload; `first`
/// says which side runs each workload first.
fn round(c: &Config, files: &[NewFile], singles: &[NewFile], first: usize) -> Vec<Row> {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    let store = pollster::block_on(Store::open(dir.path().join("ours.db"))).unwrap();
    let sqlite = Mutex::new(baseline::rusqlite(&dir.path().join("rusqlite.db")));
    let turso = Mutex::new(baseline::turso(&dir.path().join("turso.db")));
    let (store, sqlite, turso) = (&store, &sqlite, &turso);
    let row = |name, goal, ops, [ours, turso, theirs]: [(Duration, usize); 3]| {
        assert_eq!(
            (ours.1, turso.1),
            (theirs.1, theirs.1),
            "{name}: the sides disagree"
        );
        Row {
            name,
            ours: ours.0,
            turso: turso.0,
            theirs: theirs.0,
            ops,
            goal,
        }
    };

    // 1. Puts in batches of `batch`, one transaction each.
    rows.push(row(
        "put, batched",
        Some(1.5),
        c.files,
        sides(
            first,
            [
                (
                    "nexus-putbatch",
                    Box::new(|| {
                        pollster::block_on(async {
                            for chunk in files.chunks(c.batch) {
                                store.put_batch(chunk).await.unwrap();
                            }
                        });
                        0
                    }),
                ),
                (
                    "turso-putbatch",
                    Box::new(|| put_batches(turso, files, c.batch)),
                ),
                (
                    "sqlite-putbatch",
                    Box::new(|| put_batches(sqlite, files, c.batch)),
                ),
            ],
        ),
    ));

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
    rows.push(row(
        "get by path",
        Some(1.0),
        c.files,
        sides(
            first,
            [
                (
                    "nexus-get",
                    Box::new(|| {
                        pollster::block_on(async {
                            let mut n = 0;
                            for &i in order {
                                n +=
                                    usize::from(store.get(&files[i].path).await.unwrap().is_some());
                            }
                            n
                        })
                    }),
                ),
                ("turso-get", Box::new(|| gets(turso, files, order))),
                ("sqlite-get", Box::new(|| gets(sqlite, files, order))),
            ],
        ),
    ));

    // 3. List every file under a prefix (among all the others), repeated.
    rows.push(row(
        "list under a prefix",
        Some(1.1),
        c.list * c.list_repeats,
        sides(
            first,
            [
                (
                    "nexus-list",
                    Box::new(|| {
                        pollster::block_on(async {
                            let mut n = 0;
                            for _ in 0..c.list_repeats {
                                n += store.list("/list/").await.unwrap().len();
                            }
                            n
                        })
                    }),
                ),
                ("turso-list", Box::new(|| lists(turso, c.list_repeats))),
                ("sqlite-list", Box::new(|| lists(sqlite, c.list_repeats))),
            ],
        ),
    ));

    // 4. Single-put transactions (each commit is durable).
    rows.push(row(
        "put, one per transaction",
        None,
        c.singles,
        sides(
            first,
            [
                (
                    "nexus-putone",
                    Box::new(|| {
                        pollster::block_on(async {
                            for f in singles {
                                store.put(f.clone()).await.unwrap();
                            }
                        });
                        0
                    }),
                ),
                ("turso-putone", Box::new(|| put_singles(turso, singles))),
                ("sqlite-putone", Box::new(|| put_singles(sqlite, singles))),
            ],
        ),
    ));
    assert_eq!(rows[1].ops, c.files);
    rows
}

fn main() {
    let c = parse_args();
    let files: Vec<NewFile> = (0..c.files).map(|i| file(i, c.list)).collect();
    let singles: Vec<NewFile> = (0..c.singles).map(|i| file(c.files + i, 0)).collect();
    let rounds: Vec<Vec<Row>> = (0..c.rounds)
        .map(|r| {
            let rows = round(&c, &files, &singles, r % 3);
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
            turso: median(rounds.iter().map(|r| r[w].turso).collect()),
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
                    "ours_s": r.ours.as_secs_f64(), "turso_s": r.turso.as_secs_f64(),
                    "rusqlite_s": r.theirs.as_secs_f64(),
                    "ratio": r.ours.as_secs_f64() / r.theirs.as_secs_f64(),
                    "ours_vs_turso": r.ours.as_secs_f64() / r.turso.as_secs_f64(),
                    "turso_vs_rusqlite": r.turso.as_secs_f64() / r.theirs.as_secs_f64(),
                    "goal": r.goal,
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
        "{:<26} {:>7} {:>9} {:>10} {:>9} {:>10} {:>8} {:>6} {:>8} {:>8}",
        "workload",
        "ops",
        "nexus s",
        "nexus op/s",
        "turso s",
        "rusqlite s",
        "ratio",
        "goal",
        "n/turso",
        "turso/r"
    );
    for r in &rows {
        let (ours, turso, theirs) = (
            r.ours.as_secs_f64(),
            r.turso.as_secs_f64(),
            r.theirs.as_secs_f64(),
        );
        println!(
            "{:<26} {:>7} {:>9.3} {:>10.0} {:>9.3} {:>10.3} {:>7.2}x {:>6} {:>7.2}x {:>7.2}x",
            r.name,
            r.ops,
            ours,
            r.ops as f64 / ours,
            turso,
            theirs,
            ours / theirs,
            r.goal.map_or("-".to_string(), |g| format!("<={g}x")),
            ours / turso,
            turso / theirs,
        );
    }
    println!(
        "ratio = nexus time / rusqlite time (lower is better; 1.00x is parity); \
         n/turso = nexus / the same statements on turso_core directly (the store's own cost); \
         turso/r = turso_core directly / rusqlite (the engine's gap)"
    );
}
