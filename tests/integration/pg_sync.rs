//! `nexus-sync` into a real PostgreSQL: round trips, incremental runs, faults.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nexus_core::{NewFile, Store};
use nexus_sync::{PgUrl, Replicator, SyncMode, SyncOptions};
use nexus_tests::pg::{self, connect};
use serde_json::json;

use crate::common::Fixture;

fn replicator(store: &Store, url: &str) -> Replicator {
    Replicator::new(store.clone(), PgUrl::parse(url).unwrap())
}

async fn assert_equal(r: &Replicator) {
    let v = r.verify().await.unwrap();
    assert!(
        v.equal(),
        "store and PostgreSQL differ: {:?}\n{v:#?}",
        v.differences()
    );
}

/// A store with every kind of record and edge: tenants, unicode, `%`/`_`,
/// versions and a rollback, metadata of every JSON shape, deletes, renames,
/// chunks referenced, released and collected.
pub(crate) async fn populate(s: &Store) {
    let acme = s.with_tenant("acme").unwrap();
    let paths = [
        "/a.txt",
        "/docs/ünï/日本.md",
        "/100%/x_y",
        "/dir/sub/deep/file",
        "/with space/q'uote\"",
        "/z",
    ];
    for (i, p) in paths.iter().enumerate() {
        s.put(
            NewFile::new(*p, "local", format!("/srv/{i}"), i as u64 * 10)
                .etag(format!("h{i}"))
                .mime_type("text/plain"),
        )
        .await
        .unwrap();
        acme.put(NewFile::new(*p, "s3", format!("bucket/{i}"), 7))
            .await
            .unwrap();
    }
    s.put(NewFile::new("/a.txt", "local", "/srv/a2", 99).etag("h-new"))
        .await
        .unwrap();
    s.rollback("/a.txt", 1).await.unwrap();
    s.set_metadata("/a.txt", "tags", &json!(["x", "y"]))
        .await
        .unwrap();
    s.set_metadata(
        "/a.txt",
        "nested",
        &json!({"b": {"c": [1, 2.5, null, true]}, "a": "ü"}),
    )
    .await
    .unwrap();
    s.set_metadata("/a.txt", "gone", &json!(1)).await.unwrap();
    s.delete_metadata("/a.txt", "gone").await.unwrap();
    s.set_metadata("/z", "n", &json!(null)).await.unwrap();
    acme.set_metadata("/z", "owner", &json!("acme"))
        .await
        .unwrap();
    s.delete("/z").await.unwrap();
    s.rename("/dir", "/moved").await.unwrap();
    s.add_chunk_ref("c1", 10, "/cas/c1").await.unwrap();
    s.add_chunk_ref("c1", 10, "/cas/c1").await.unwrap();
    s.add_chunk_ref("c2", 20, "/cas/c2").await.unwrap();
    s.release_chunk_ref("c2", Duration::ZERO).await.unwrap();
    s.remove_chunk("c2").await.unwrap();
    s.add_chunk_ref("c3", 30, "/cas/c3").await.unwrap();
    s.release_chunk_ref("c3", Duration::from_secs(3600))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_then_incremental_sync_round_trips_every_field() {
    let db = pg::database("sync_roundtrip").await;
    let f = Fixture::file().await;
    populate(&f).await;
    let r = replicator(&f, &db.url);

    let first = r.sync().await.unwrap();
    assert_eq!(first.mode, SyncMode::Full);
    assert_eq!(first.from_seq, 0);
    assert_eq!(first.to_seq, f.stats().await.unwrap().change_seq);
    assert_equal(&r).await;

    // Spot-check fields through PostgreSQL's own types.
    let client = connect(&db.url).await;
    let a = f.get("/a.txt").await.unwrap().unwrap();
    let row = client
        .query_one(
            "SELECT path_id::text, backend_id, physical_path, size_bytes, content_hash, file_type, current_version, \
             (extract(epoch FROM created_at) * 1000000)::int8, (extract(epoch FROM updated_at) * 1000000)::int8 \
             FROM file_paths WHERE tenant_id = 'default' AND virtual_path = '/a.txt' AND deleted_at IS NULL",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), a.path_id);
    assert_eq!(row.get::<_, String>(2), a.physical_path);
    assert_eq!(row.get::<_, i64>(3) as u64, a.size);
    assert_eq!(row.get::<_, Option<String>>(4), a.etag);
    assert_eq!(row.get::<_, i32>(6) as u32, a.version);
    assert_eq!(row.get::<_, i64>(7), a.created_at.as_micros());
    assert_eq!(row.get::<_, i64>(8), a.modified_at.as_micros());
    let nested: serde_json::Value = client
        .query_one("SELECT value FROM file_metadata m JOIN file_paths p USING (path_id) WHERE p.virtual_path = '/a.txt' AND p.tenant_id = 'default' AND key = 'nested'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(nested, json!({"a": "ü", "b": {"c": [1, 2.5, null, true]}}));
    // Byte-order collation: PostgreSQL sorts live paths like the store.
    let pg_order: Vec<String> = client
        .query("SELECT virtual_path FROM file_paths WHERE tenant_id = 'default' AND deleted_at IS NULL ORDER BY virtual_path", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let ours: Vec<String> = f
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(pg_order, ours);

    // Nothing changed: nothing to do.
    let again = r.sync().await.unwrap();
    assert_eq!(again.mode, SyncMode::UpToDate);
    assert_eq!(again.rows(), 0);

    // Change a little; only that is sent.
    let before = f.stats().await.unwrap().change_seq;
    f.put(NewFile::new("/a.txt", "local", "/srv/a3", 5).etag("h-3"))
        .await
        .unwrap();
    f.set_metadata("/a.txt", "tags", &json!(["changed"]))
        .await
        .unwrap();
    f.delete_metadata("/a.txt", "nested").await.unwrap();
    f.delete("/100%/x_y").await.unwrap();
    f.rename("/moved/sub", "/elsewhere").await.unwrap();
    f.put(NewFile::new("/z", "local", "/srv/z-again", 1))
        .await
        .unwrap();
    f.release_chunk_ref("c1", Duration::ZERO).await.unwrap();
    let counts = {
        let mut snap = f.snapshot().await.unwrap();
        snap.count_changes(before, snap.change_seq()).unwrap()
    };
    let inc = r.sync().await.unwrap();
    assert_eq!(inc.mode, SyncMode::Incremental);
    assert_eq!(inc.from_seq, first.to_seq);
    assert_eq!(
        inc.rows(),
        counts.iter().sum::<u64>(),
        "exactly the changed rows were sent"
    );
    assert!(inc.rows() < first.rows());
    assert_equal(&r).await;

    // verify notices a single changed value, and names the table.
    client
        .execute("UPDATE file_paths SET physical_path = physical_path || '!' WHERE virtual_path = '/a.txt'", &[])
        .await
        .unwrap();
    let v = r.verify().await.unwrap();
    assert!(!v.equal());
    assert_eq!(
        v.differences(),
        ["file_paths: same row count (13), different contents"]
    );
    client
        .execute(
            "DELETE FROM tombstones WHERE table_name = 'content_chunks'",
            &[],
        )
        .await
        .unwrap();
    let v = r.verify().await.unwrap();
    assert_eq!(
        v.differences(),
        [
            "file_paths: same row count (13), different contents",
            "tombstones: 3 rows in the store, 2 in PostgreSQL"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_changing_hands_within_one_run() {
    let db = pg::database("sync_swaps").await;
    let f = Fixture::memory().await;
    for p in ["/a", "/b", "/x", "/d/1", "/d/2"] {
        f.put(NewFile::new(p, "local", p, 1)).await.unwrap();
    }
    let r = replicator(&f, &db.url);
    r.sync().await.unwrap();
    // Swap /a and /b, delete and re-create /x, move a directory onto a freed name.
    f.rename("/a", "/tmp").await.unwrap();
    f.rename("/b", "/a").await.unwrap();
    f.rename("/tmp", "/b").await.unwrap();
    f.delete("/x").await.unwrap();
    f.put(NewFile::new("/x", "local", "/x2", 2)).await.unwrap();
    f.delete("/d/1").await.unwrap();
    f.rename("/d", "/e").await.unwrap();
    f.put(NewFile::new("/d/1", "local", "/d1-new", 3))
        .await
        .unwrap();
    let report = r.sync_once().await.unwrap();
    assert_eq!(report.mode, SyncMode::Incremental);
    assert_equal(&r).await;
    let client = connect(&db.url).await;
    let sentinel: i64 = client
        .query_one(
            "SELECT count(*) FROM file_paths WHERE deleted_at = '-infinity'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sentinel, 0, "no row left half-moved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_connection_mid_sync_then_rerun_converges() {
    let db = pg::database("sync_cut").await;
    let f = Fixture::file().await;
    let files: Vec<NewFile> = (0..6000)
        .map(|i| NewFile::new(format!("/bulk/{i:05}"), "local", "/p", i))
        .collect();
    for chunk in files.chunks(500) {
        f.put_batch(chunk).await.unwrap();
    }
    let url = format!("{}?application_name=nexus_cut_test", db.url);
    let fired = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let hook = {
        let fired = fired.clone();
        Arc::new(move |_done: u64, _total: u64| {
            if !fired.swap(true, Ordering::SeqCst) {
                tx.send(()).unwrap();
                // Give the killer time to act while the transaction is open.
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    let killer = {
        let admin = db.url.clone();
        tokio::task::spawn_blocking(move || {
            rx.recv().unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let client = connect(&admin).await;
                client
                    .query(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'nexus_cut_test'",
                        &[],
                    )
                    .await
                    .unwrap()
                    .len()
            })
        })
    };
    let r =
        Replicator::new(f.store.clone(), PgUrl::parse(&url).unwrap()).with_options(SyncOptions {
            window_rows: 200,
            max_attempts: 1,
            progress: Some(hook),
            ..SyncOptions::default()
        });
    let err = r.sync().await.unwrap_err();
    assert!(killer.await.unwrap() >= 1, "a backend was terminated");
    assert!(err.is_retryable(), "a cut connection is retryable: {err}");
    // Nothing of the failed run is visible.
    let client = connect(&db.url).await;
    let rows: i64 = client
        .query_one("SELECT count(*) FROM file_paths", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "the failed run committed nothing");
    assert!(
        client
            .query_opt("SELECT 1 FROM nexus_sync_state", &[])
            .await
            .unwrap()
            .is_none()
    );

    // The same replicator with retries converges.
    let r = replicator(&f, &db.url);
    let report = r.sync().await.unwrap();
    assert_eq!(report.mode, SyncMode::Full);
    assert_equal(&r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_after_a_terminated_backend() {
    let db = pg::database("sync_retry").await;
    let f = Fixture::memory().await;
    let files: Vec<NewFile> = (0..3000)
        .map(|i| NewFile::new(format!("/r/{i:05}"), "local", "/p", 1))
        .collect();
    f.put_batch(&files).await.unwrap();
    let url = format!("{}?application_name=nexus_retry_test", db.url);
    let killed = Arc::new(AtomicBool::new(false));
    let hook = {
        let killed = killed.clone();
        let admin = db.url.clone();
        Arc::new(move |_d: u64, _t: u64| {
            if !killed.swap(true, Ordering::SeqCst) {
                let admin = admin.clone();
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                    rt.block_on(async {
                        connect(&admin)
                            .await
                            .query(
                                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'nexus_retry_test'",
                                &[],
                            )
                            .await
                            .unwrap();
                    })
                })
                .join()
                .unwrap();
            }
        })
    };
    let r =
        Replicator::new(f.store.clone(), PgUrl::parse(&url).unwrap()).with_options(SyncOptions {
            window_rows: 100,
            progress: Some(hook),
            backoff: Duration::from_millis(50),
            ..SyncOptions::default()
        });
    let report = r.sync().await.unwrap();
    assert!(
        report.attempts >= 2,
        "the first attempt was cut: {report:?}"
    );
    assert_equal(&r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_reports_without_touching_the_target() {
    let db = pg::database("sync_dry").await;
    let f = Fixture::file().await;
    populate(&f).await;
    // Values that cannot go to PostgreSQL, written behind the store's back.
    f.debug_query(
        "INSERT INTO file_paths (path_id, tenant_id, virtual_path, backend_id, physical_path, size_bytes, created_at, \
         updated_at, current_version, change_seq) VALUES ('not-a-uuid', 'default', '/bad', 'l', 'p', 0, 0, 0, 1, 1)",
    )
    .await
    .unwrap();
    let a = f.get("/a.txt").await.unwrap().unwrap();
    f.debug_query(&format!(
        "INSERT INTO file_metadata VALUES ('{}', 'broken', '{{not json', 0, 0, 1)",
        a.path_id
    ))
    .await
    .unwrap();
    f.debug_query(
        "UPDATE file_paths SET created_at = -300000000000000000 WHERE virtual_path = '/z' AND tenant_id = 'acme'",
    )
    .await
    .unwrap();
    let r = replicator(&f, &db.url);
    let report = r.dry_run().await.unwrap();
    assert!(!report.target_has_schema);
    assert_eq!(report.mode, SyncMode::Full);
    assert_eq!(report.problem_count, 3, "{:#?}", report.problems);
    let all = report.problems.join("\n");
    assert!(all.contains("\"not-a-uuid\" is not a UUID"), "{all}");
    assert!(all.contains("not valid JSON"), "{all}");
    assert!(all.contains("4713 BC"), "{all}");
    let files = report
        .tables
        .iter()
        .find(|t| t.0 == "file_paths")
        .unwrap()
        .1;
    assert_eq!(
        files,
        f.debug_query("SELECT count(*) FROM file_paths")
            .await
            .unwrap()[0][0]
            .as_deref()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    );
    let client = connect(&db.url).await;
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "a dry run runs no DDL");
    // And the real run refuses with the first problem, committing nothing.
    let err = r.sync().await.unwrap_err();
    assert!(err.to_string().contains("--dry-run"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_ahead_of_source_is_refused() {
    let db = pg::database("sync_ahead").await;
    let f = Fixture::memory().await;
    f.put(NewFile::new("/a", "l", "p", 1)).await.unwrap();
    let r = replicator(&f, &db.url);
    r.sync().await.unwrap();
    let client = connect(&db.url).await;
    client
        .execute(
            "UPDATE nexus_sync_state SET watermark = watermark + 100",
            &[],
        )
        .await
        .unwrap();
    let err = r.sync().await.unwrap_err();
    assert!(
        matches!(err, nexus_sync::Error::TargetAhead { .. }),
        "{err}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_stay_out_of_errors() {
    let f = Fixture::memory().await;
    let r = replicator(&f, "postgresql://nexus:hunter2-secret@127.0.0.1:1/nexus");
    let err = r.sync().await.unwrap_err();
    let shown = format!("{err} {err:?} {r:?}");
    assert!(!shown.contains("hunter2-secret"), "{shown}");
    assert!(err.is_retryable(), "a refused connection is retryable");
}

/// `sslmode=require` connects over TLS (rustls) when the server offers it,
/// and fails clearly when it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_sslmode_require() {
    let db = pg::database("sync_tls").await;
    let target = PgUrl::parse(&format!("{}?sslmode=require", db.url)).unwrap();
    if pg::server_has_tls().await {
        let client = target.connect("nexus-tests", None).await.unwrap();
        let ssl: bool = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(ssl, "the session is encrypted");
        let f = Fixture::memory().await;
        f.put(NewFile::new("/tls", "l", "p", 1)).await.unwrap();
        let r = Replicator::new(f.store.clone(), target);
        r.sync().await.unwrap();
        assert_equal(&r).await;
        // The default (prefer) also encrypts when the server offers TLS.
        let plain_url = PgUrl::parse(&db.url).unwrap();
        let c = plain_url.connect("nexus-tests", None).await.unwrap();
        let ssl: bool = c
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(ssl);
    } else {
        let err = target.connect("nexus-tests", None).await.unwrap_err();
        assert!(
            err.to_string().to_lowercase().contains("tls") || err.to_string().contains("SSL"),
            "{err}"
        );
    }
}

/// A hook that terminates the sync's backend after the `at`-th window.
fn cut_after(at: u64, admin: String, app: &'static str) -> nexus_sync::ProgressFn {
    let windows = Arc::new(std::sync::atomic::AtomicU64::new(0));
    Arc::new(move |_d: u64, _t: u64| {
        if windows.fetch_add(1, Ordering::SeqCst) + 1 == at {
            let admin = admin.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    connect(&admin)
                        .await
                        .query(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                            &[&app],
                        )
                        .await
                        .unwrap();
                })
            })
            .join()
            .unwrap();
        }
    })
}

/// The connection cut at many points of a full and of an incremental run:
/// each cut run commits nothing, and the next run converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_at_many_points_then_converge() {
    let db = pg::database("sync_cuts").await;
    let f = Fixture::memory().await;
    // Many small transactions, so that a run has many windows to cut between.
    let files: Vec<NewFile> = (0..2000)
        .map(|i| NewFile::new(format!("/c/{i:05}"), "l", "p", i))
        .collect();
    for chunk in files.chunks(50) {
        f.put_batch(chunk).await.unwrap();
    }
    let entries: Vec<(String, String, serde_json::Value)> = (0..2000)
        .map(|i| (format!("/c/{i:05}"), "k".to_string(), json!(i)))
        .collect();
    for chunk in entries.chunks(50) {
        f.set_metadata_batch(chunk).await.unwrap();
    }
    let url = format!("{}?application_name=nexus_cuts", db.url);
    let client = connect(&db.url).await;
    for round in 0..2 {
        if round == 1 {
            // Then changes for an incremental run.
            let changed: Vec<NewFile> = (0..2000)
                .step_by(3)
                .map(|i| NewFile::new(format!("/c/{i:05}"), "l", "p2", 1).etag("v2"))
                .collect();
            for chunk in changed.chunks(40) {
                f.put_batch(chunk).await.unwrap();
            }
            f.delete_batch(
                &(0..2000)
                    .step_by(7)
                    .map(|i| format!("/c/{i:05}"))
                    .collect::<Vec<_>>(),
            )
            .await
            .unwrap();
        }
        let before: Option<i64> = client
            .query_opt("SELECT watermark FROM nexus_sync_state", &[])
            .await
            .ok()
            .flatten()
            .map(|r| r.get(0));
        for at in [1, 2, 4, 6] {
            let r = Replicator::new(f.store.clone(), PgUrl::parse(&url).unwrap()).with_options(
                SyncOptions {
                    window_rows: 100,
                    max_attempts: 1,
                    progress: Some(cut_after(at, db.url.clone(), "nexus_cuts")),
                    ..SyncOptions::default()
                },
            );
            let err = r.sync().await.unwrap_err();
            assert!(
                err.is_retryable(),
                "round {round}, cut after window {at}: {err}"
            );
            let now: Option<i64> = client
                .query_opt("SELECT watermark FROM nexus_sync_state", &[])
                .await
                .ok()
                .flatten()
                .map(|r| r.get(0));
            assert_eq!(now, before, "a cut run moves no watermark");
        }
        let r = replicator(&f, &db.url);
        r.sync().await.unwrap();
        assert_equal(&r).await;
    }
}

/// A target that is read-only for a while: a clear, permanent error; once
/// writable again, the next run converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_target_then_recovers() {
    let db = pg::database("sync_readonly").await;
    let f = Fixture::memory().await;
    f.put(NewFile::new("/a", "l", "p", 1)).await.unwrap();
    let r = replicator(&f, &db.url);
    r.sync().await.unwrap();
    f.put(NewFile::new("/b", "l", "p", 1)).await.unwrap();
    let admin = connect(&db.url).await;
    let name: String = admin
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{name}\" SET default_transaction_read_only = on"
        ))
        .await
        .unwrap();
    let err = r.sync().await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("read-only transaction"), "{err}");
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{name}\" SET default_transaction_read_only = off"
        ))
        .await
        .unwrap();
    let report = r.sync().await.unwrap();
    assert_eq!(report.mode, SyncMode::Incremental);
    assert_equal(&r).await;
}

/// A statement that fails as a full disk would (SQLSTATE 53100): a clear
/// error naming it, nothing committed; after the cause is gone, convergence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_statement_like_a_full_disk() {
    let db = pg::database("sync_diskfull").await;
    let f = Fixture::memory().await;
    for i in 0..50 {
        f.put(NewFile::new(format!("/d/{i}"), "l", "p", 1))
            .await
            .unwrap();
        f.set_metadata(&format!("/d/{i}"), "k", &json!(i))
            .await
            .unwrap();
    }
    let admin = connect(&db.url).await;
    let mut setup = connect(&db.url).await;
    nexus_postgres::migrate(&mut setup).await.unwrap();
    admin
        .batch_execute(
            "CREATE FUNCTION nexus_test_full() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full'; END $$; \
             CREATE TRIGGER full_disk BEFORE INSERT ON file_metadata FOR EACH ROW EXECUTE FUNCTION nexus_test_full();",
        )
        .await
        .unwrap();
    let r = replicator(&f, &db.url);
    let err = r.sync().await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("No space left on device"), "{msg}");
    let rows: i64 = admin
        .query_one("SELECT count(*) FROM file_paths", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "nothing of the failed run is visible");
    admin
        .batch_execute("DROP TRIGGER full_disk ON file_metadata")
        .await
        .unwrap();
    r.sync().await.unwrap();
    assert_equal(&r).await;
}
