//! Side-by-side benchmark of the move into PostgreSQL, on the same data in one
//! run: `nexus sync` (full, then incremental after changing 1%) against
//! `pgloader` loading the same SQLite-format file, and against a raw binary
//! `COPY` of the same rows into the same schema, index build included (the
//! limit). Our sync runs in a child process so that its peak memory is its own.
//!
//! `cargo run --release -p nexus-bench --bin nexus-sync-bench -- [--files N] [--window N]`
//! (default 1,000,000 files, each with one version and one metadata entry).
//! PostgreSQL: a throwaway cluster, or `NEXUS_TEST_DATABASE_URL`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::pin_mut;
use nexus_core::{NewFile, Store};
use nexus_sync::{PgUrl, Replicator, SyncOptions};
use nexus_tests::pg::connect;
use serde_json::{Value, json};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::ToSql;

use nexus_bench::{arg, peak_rss_kib, run_self};

/// Child mode: `--child-sync DB URL WINDOW` runs one sync and prints its report.
fn child_sync(args: &[String]) {
    let (db, url, window) = (&args[2], &args[3], args[4].parse().unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Store::open(db).await.unwrap();
        let r = Replicator::new(store, PgUrl::parse(url).unwrap()).with_options(SyncOptions {
            window_rows: window,
            ..SyncOptions::default()
        });
        let report = r.sync().await.unwrap();
        println!(
            "{}",
            json!({"seconds": report.seconds, "rows": report.rows(), "mode": report.mode, "peak_rss_kib": peak_rss_kib()})
        );
    });
}

fn run_child(db: &Path, url: &str, window: usize) -> Value {
    run_self(&[
        "--child-sync",
        db.to_str().unwrap(),
        url,
        &window.to_string(),
    ])
}

async fn count_rows(url: &str, tables: &[&str]) -> i64 {
    let c = connect(url).await;
    let mut n = 0;
    for t in tables {
        if let Ok(r) = c.query_one(&format!("SELECT count(*) FROM {t}"), &[]).await {
            n += r.get::<_, i64>(0);
        }
    }
    n
}

fn ts(micros: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(micros as u64)
}

/// Raw binary COPY of the given rows into the migrated schema, secondary
/// indexes and foreign keys dropped first and rebuilt after, one transaction.
async fn raw_copy(url: &str, source_id: &str, changes: &nexus_core::Changes) -> Duration {
    let mut client = connect(url).await;
    nexus_postgres::migrate(&mut client).await.unwrap();
    let files: Vec<_> = changes
        .files
        .iter()
        .map(|f| (uuid::Uuid::parse_str(&f.path_id).unwrap(), f))
        .collect();
    let versions: Vec<_> = changes
        .versions
        .iter()
        .map(|v| {
            (
                uuid::Uuid::parse_str(&v.version_id).unwrap(),
                uuid::Uuid::parse_str(&v.path_id).unwrap(),
                v,
            )
        })
        .collect();
    let metadata: Vec<_> = changes
        .metadata
        .iter()
        .map(|m| {
            (
                uuid::Uuid::parse_str(&m.path_id).unwrap(),
                serde_json::from_str::<Value>(&m.value).unwrap(),
                m,
            )
        })
        .collect();
    let started = Instant::now();
    let tx = client.transaction().await.unwrap();
    // The same index and foreign-key drop and rebuild as the sync's bulk load.
    let rebuild = nexus_sync::drop_secondary(&tx).await.unwrap();
    {
        let sink = tx
            .copy_in(
                nexus_sync::copy_into(&nexus_core::tables::FILE_PATHS)
                    .sql
                    .as_str(),
            )
            .await
            .unwrap();
        let w = BinaryCopyInWriter::new(
            sink,
            &nexus_sync::copy_into(&nexus_core::tables::FILE_PATHS).types,
        );
        pin_mut!(w);
        for (id, f) in &files {
            let (c, u, d, v) = (
                ts(f.created_at),
                ts(f.updated_at),
                f.deleted_at.map(ts),
                f.current_version as i32,
            );
            let row: [&(dyn ToSql + Sync); 14] = [
                id,
                &f.tenant_id,
                &f.virtual_path,
                &f.backend_id,
                &f.physical_path,
                &f.size_bytes,
                &f.content_hash,
                &f.file_type,
                &c,
                &u,
                &d,
                &v,
                &f.change_seq,
                &source_id,
            ];
            w.as_mut().write(&row).await.unwrap();
        }
        w.finish().await.unwrap();
    }
    {
        let sink = tx
            .copy_in(
                nexus_sync::copy_into(&nexus_core::tables::VERSION_HISTORY)
                    .sql
                    .as_str(),
            )
            .await
            .unwrap();
        let w = BinaryCopyInWriter::new(
            sink,
            &nexus_sync::copy_into(&nexus_core::tables::VERSION_HISTORY).types,
        );
        pin_mut!(w);
        for (id, path, v) in &versions {
            let (n, c) = (v.version_number as i32, ts(v.created_at));
            let parent: Option<uuid::Uuid> = v
                .parent_version_id
                .as_deref()
                .map(|p| uuid::Uuid::parse_str(p).unwrap());
            let row: [&(dyn ToSql + Sync); 15] = [
                id,
                path,
                &n,
                &v.backend_id,
                &v.physical_path,
                &v.content_hash,
                &v.size_bytes,
                &v.mime_type,
                &parent,
                &v.source_type,
                &v.change_reason,
                &v.created_by,
                &c,
                &v.change_seq,
                &source_id,
            ];
            w.as_mut().write(&row).await.unwrap();
        }
        w.finish().await.unwrap();
    }
    {
        let sink = tx
            .copy_in(
                nexus_sync::copy_into(&nexus_core::tables::FILE_METADATA)
                    .sql
                    .as_str(),
            )
            .await
            .unwrap();
        let w = BinaryCopyInWriter::new(
            sink,
            &nexus_sync::copy_into(&nexus_core::tables::FILE_METADATA).types,
        );
        pin_mut!(w);
        for (id, value, m) in &metadata {
            let (c, u) = (ts(m.created_at), ts(m.updated_at));
            let row: [&(dyn ToSql + Sync); 7] =
                [id, &m.key, value, &c, &u, &m.change_seq, &source_id];
            w.as_mut().write(&row).await.unwrap();
        }
        w.finish().await.unwrap();
    }
    nexus_sync::rebuild_secondary(&tx, &rebuild).await.unwrap();
    tx.commit().await.unwrap();
    started.elapsed()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child-sync") {
        return child_sync(&args);
    }
    let files = arg("--files", 1_000_000);
    let window = arg("--window", 10_000);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("source.db");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // The data: written by our store into a SQLite-format file.
    let generated = Instant::now();
    rt.block_on(async {
        let s = Store::open(&db).await.unwrap();
        nexus_bench::generate(&s, files).await;
    });
    let total_rows = files * 3;
    eprintln!(
        "generated {files} files ({total_rows} rows) in {:.1}s",
        generated.elapsed().as_secs_f64()
    );

    // Plain connections for all three: the figures compare loading, not TLS.
    let (ours_db, loader_db, copy_db) = rt.block_on(async {
        (
            nexus_tests::pg::database("bench_ours").await,
            nexus_tests::pg::database("bench_pgloader").await,
            nexus_tests::pg::database("bench_copy").await,
        )
    });

    // 1. Ours, full.
    let plain = |url: &str| format!("{url}?sslmode=disable");
    let full = run_child(&db, &plain(&ours_db.url), window);
    let ours_s = full["seconds"].as_f64().unwrap();
    assert_eq!(full["rows"].as_u64().unwrap() as usize, total_rows);

    // 2. pgloader on the same file.
    let started = Instant::now();
    // Its default prefetch (100,000 rows) exhausts its heap on this data
    // ("Welcome to LDB"); 10,000 rows per batch lets it finish.
    let out = Command::new("pgloader")
        .args([
            "--with",
            "prefetch rows = 10000",
            "--with",
            "batch rows = 10000",
        ])
        .arg(format!("sqlite://{}", db.display()))
        .arg(plain(&loader_db.url))
        .output()
        .expect("pgloader (Debian package pgloader) must be installed");
    let loader_s = started.elapsed().as_secs_f64();
    let loader_ok = out.status.success();
    let loaded = rt.block_on(count_rows(
        &loader_db.url,
        &["file_paths", "version_history", "file_metadata"],
    ));
    if !loader_ok || loaded as usize != total_rows {
        eprintln!(
            "pgloader: status {:?}, {loaded} of {total_rows} rows loaded\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .rev()
                .take(25)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    // 3. Raw binary COPY of the same rows (read beforehand, untimed).
    let (source_id, changes) = rt.block_on(async {
        let s = Store::open(&db).await.unwrap();
        let mut snap = s.snapshot().await.unwrap();
        let head = snap.change_seq();
        (snap.source_id().to_string(), snap.changes(0, head).unwrap())
    });
    let copy_s = rt
        .block_on(raw_copy(&plain(&copy_db.url), &source_id, &changes))
        .as_secs_f64();
    drop(changes);

    // 4. Incremental after changing 1% of the files.
    let changed = files / 100;
    rt.block_on(async {
        let s = Store::open(&db).await.unwrap();
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
    });
    let inc = run_child(&db, &plain(&ours_db.url), window);
    let inc_s = inc["seconds"].as_f64().unwrap();

    let rate = |s: f64| total_rows as f64 / s;
    println!(
        "files={files} rows={total_rows} (file_paths + version_history + file_metadata) window={window}"
    );
    println!(
        "{:<44} {:>9} {:>12} {:>10}",
        "load into an empty PostgreSQL", "seconds", "rows/s", "vs ours"
    );
    println!(
        "{:<44} {:>9.2} {:>12.0} {:>9.2}x",
        "nexus sync (full, binary COPY, index rebuild)",
        ours_s,
        rate(ours_s),
        1.0
    );
    println!(
        "{:<44} {:>9.2} {:>12.0} {:>9.2}x{}",
        "pgloader (same file)",
        loader_s,
        loaded as f64 / loader_s,
        (loaded as f64 / loader_s) / rate(ours_s),
        if loaded as usize == total_rows {
            String::new()
        } else {
            format!("  ({loaded} rows loaded)")
        }
    );
    println!(
        "{:<44} {:>9.2} {:>12.0} {:>9.2}x",
        "raw binary COPY + index build (the limit)",
        copy_s,
        rate(copy_s),
        rate(copy_s) / rate(ours_s)
    );
    println!(
        "ours / pgloader rows/s: {:.2}x   ours / raw COPY rows/s: {:.2}x",
        rate(ours_s) / (loaded.max(1) as f64 / loader_s),
        rate(ours_s) / rate(copy_s)
    );
    println!(
        "incremental after changing {changed} files ({} rows sent): {:.2}s = {:.3} of the full sync",
        inc["rows"],
        inc_s,
        inc_s / ours_s
    );
    println!(
        "peak memory of the sync process: full {:.1} MiB, incremental {:.1} MiB",
        full["peak_rss_kib"].as_f64().unwrap() / 1024.0,
        inc["peak_rss_kib"].as_f64().unwrap() / 1024.0
    );
}
