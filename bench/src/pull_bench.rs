//! Side-by-side benchmark of the first pull from PostgreSQL into an empty
//! embedded store, on the same data in one run, against the two halves of
//! the limit on this machine: a plain binary `COPY ... TO STDOUT` of the
//! same tables (reading them out of PostgreSQL), and the same rows inserted
//! into an empty store from memory by the store's bulk path (writing them,
//! no network). Then an incremental pull after 1% of the files changed.
//! Our pull runs in a child process so that its peak memory is its own.
//!
//! `cargo run --release -p nexus-bench --bin nexus-pull-bench -- [--files N] [--window N]`
//! `... -- --sources 10 [--files N]`: N stores push at once (default 100,000
//! files in all, a tenth of each store's paths shared by all).
//! (default 1,000,000 files, each with one version and one metadata entry:
//! 3 rows per file). PostgreSQL: a throwaway cluster, or
//! `NEXUS_TEST_DATABASE_URL`.

use std::path::Path;
use std::time::Instant;

use futures_util::StreamExt;
use nexus_core::{NewFile, Store};
use nexus_sync::{PgUrl, Replicator, SyncOptions};
use nexus_tests::pg::connect;
use serde_json::{Value, json};

use nexus_bench::{arg, generate, peak_rss_kib, run_self};

/// Child mode: `--child-pull DB URL WINDOW` runs one pull and prints its report.
fn child_pull(args: &[String]) {
    let (db, url, window) = (&args[2], &args[3], args[4].parse().unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::open(db).await.unwrap();
        let options = SyncOptions {
            window_rows: window,
            ..SyncOptions::default()
        };
        let r = nexus_sync::pull(&store, &PgUrl::parse(url).unwrap().into(), &options)
            .await
            .unwrap();
        println!(
            "{}",
            json!({"seconds": r.seconds, "rows": r.rows(), "bulk": r.bulk, "peak_rss_kib": peak_rss_kib()})
        );
    });
}

fn run_child(db: &Path, url: &str, window: usize) -> Value {
    run_self(&[
        "--child-pull",
        db.to_str().unwrap(),
        url,
        &window.to_string(),
    ])
}

/// `--sources N --files F`: N stores, F files in all (a tenth of each
/// store's paths shared by all), push into one empty database at once.
fn many_sources(sources: usize, files: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = nexus_tests::pg::database("bench_sources").await;
        let url = format!("{}?sslmode=disable", db.url);
        let per = files / sources;
        let mut stores = Vec::new();
        for i in 0..sources {
            let s = Store::memory().await.unwrap();
            let batch: Vec<NewFile> = (0..per)
                .map(|k| {
                    let path = if k % 10 == 0 {
                        format!("/shared/{k:07}")
                    } else {
                        format!("/s{i:02}/{k:07}")
                    };
                    NewFile::new(path, "s3", format!("b/{i}/{k}"), k as u64).etag(format!("{i}-{k}"))
                })
                .collect();
            for c in batch.chunks(5000) {
                s.put_batch(c).await.unwrap();
            }
            stores.push(s);
        }
        let started = Instant::now();
        let pushes: Vec<_> = stores
            .iter()
            .map(|s| {
                let (s, u) = (s.clone(), url.clone());
                tokio::spawn(async move { Replicator::new(s, PgUrl::parse(&u).unwrap()).sync().await })
            })
            .collect();
        let (mut rows, mut conflicts, mut attempts) = (0, 0, 0);
        for p in pushes {
            let r = p.await.unwrap().unwrap();
            rows += r.rows();
            conflicts += r.conflicts.len();
            attempts += r.attempts;
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{sources} sources push {files} files ({rows} rows) at once into one empty database: {seconds:.2}s, \
             {:.0} rows/s, {conflicts} conflicts resolved, {attempts} attempts in all",
            rows as f64 / seconds
        );
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child-pull") {
        return child_pull(&args);
    }
    if args.iter().any(|a| a == "--sources") {
        return many_sources(arg("--sources", 10), arg("--files", 100_000));
    }
    let files = arg("--files", 1_000_000);
    let window = arg("--window", 10_000);
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.db");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(nexus_tests::pg::database("bench_pull"));
    let url = format!("{}?sslmode=disable", db.url);

    // The data, pushed into PostgreSQL (untimed).
    let started = Instant::now();
    let rows = rt.block_on(async {
        let s = Store::open(&source).await.unwrap();
        generate(&s, files).await;
        Replicator::new(s, PgUrl::parse(&url).unwrap())
            .sync()
            .await
            .unwrap()
            .rows()
    });
    eprintln!(
        "generated and pushed {files} files ({rows} rows) in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // 1. Reading them out: plain binary COPY TO STDOUT of each table.
    let copy_s = rt.block_on(async {
        let c = connect(&db.url).await;
        let started = Instant::now();
        let mut bytes = 0usize;
        for t in ["file_paths", "version_history", "file_metadata"] {
            let stream = c
                .copy_out(&format!("COPY {t} TO STDOUT (FORMAT binary)"))
                .await
                .unwrap();
            futures_util::pin_mut!(stream);
            while let Some(chunk) = stream.next().await {
                bytes += chunk.unwrap().len();
            }
        }
        eprintln!("COPY TO STDOUT: {bytes} bytes");
        started.elapsed().as_secs_f64()
    });

    // 2. Writing them in: the same rows, read from the source store
    //    beforehand (untimed), inserted into an empty store by the bulk path.
    let insert_s = rt.block_on(async {
        let changes = {
            let s = Store::open(&source).await.unwrap();
            let mut snap = s.snapshot().await.unwrap();
            let head = snap.change_seq();
            snap.changes(0, head).unwrap()
        };
        let target = Store::open(dir.path().join("insert.db")).await.unwrap();
        let started = Instant::now();
        let mut bulk = target.begin_bulk_pull("bench").await.unwrap().unwrap();
        for c in changes.files.chunks(window) {
            bulk.load(&nexus_core::Changes {
                files: c.to_vec(),
                ..Default::default()
            })
            .unwrap();
        }
        for c in changes.versions.chunks(window) {
            bulk.load(&nexus_core::Changes {
                versions: c.to_vec(),
                ..Default::default()
            })
            .unwrap();
        }
        for c in changes.metadata.chunks(window) {
            bulk.load(&nexus_core::Changes {
                metadata: c.to_vec(),
                ..Default::default()
            })
            .unwrap();
        }
        bulk.finish(1, &mut nexus_core::PullReport::default())
            .unwrap();
        started.elapsed().as_secs_f64()
    });

    // 3. Ours: the first pull into an empty store.
    let pulled_db = dir.path().join("pulled.db");
    let full = run_child(&pulled_db, &url, window);
    let ours_s = full["seconds"].as_f64().unwrap();
    assert_eq!(full["rows"].as_u64().unwrap(), rows, "{full}");
    assert_eq!(full["bulk"], true);

    // 4. Incremental: change 1% of the files at the source, push, pull.
    let changed = files / 100;
    rt.block_on(async {
        let s = Store::open(&source).await.unwrap();
        for start in (0..changed).step_by(1000) {
            let batch: Vec<NewFile> = (start..(start + 1000).min(changed))
                .map(|k| {
                    let i = k * 100;
                    NewFile::new(
                        format!("/data/d{:04}/file-{i:07}.bin", i % 1000),
                        "s3",
                        format!("bucket/objects/{i:07}-v2"),
                        1,
                    )
                    .etag(format!("changed-{i}"))
                })
                .collect();
            s.put_batch(&batch).await.unwrap();
        }
        Replicator::new(s, PgUrl::parse(&url).unwrap())
            .sync()
            .await
            .unwrap();
    });
    let inc = run_child(&pulled_db, &url, window);
    let inc_s = inc["seconds"].as_f64().unwrap();

    let rate = |s: f64| rows as f64 / s;
    println!(
        "files={files} rows={rows} (file_paths + version_history + file_metadata) window={window}"
    );
    println!(
        "{:<52} {:>9} {:>12} {:>10}",
        "first pull into an empty store", "seconds", "rows/s", "vs ours"
    );
    let line = |name: &str, s: f64| {
        println!(
            "{name:<52} {s:>9.2} {:>12.0} {:>9.2}x",
            rate(s),
            rate(s) / rate(ours_s)
        )
    };
    line("nexus pull (snapshot, committed per chunk)", ours_s);
    line("plain binary COPY TO STDOUT (reading, the limit)", copy_s);
    line("bulk insert from memory (writing, the limit)", insert_s);
    line("both limits one after the other", copy_s + insert_s);
    println!(
        "ours / the slower limit: {:.2}x   ours / both limits in turn: {:.2}x",
        rate(ours_s) / rate(copy_s.max(insert_s)),
        rate(ours_s) / rate(copy_s + insert_s)
    );
    println!(
        "incremental pull after changing {changed} files ({} rows): {:.2}s = {:.3} of the first pull",
        inc["rows"],
        inc_s,
        inc_s / ours_s
    );
    println!(
        "peak memory of the pull process: first {:.1} MiB, incremental {:.1} MiB",
        full["peak_rss_kib"].as_f64().unwrap() / 1024.0,
        inc["peak_rss_kib"].as_f64().unwrap() / 1024.0
    );
}
