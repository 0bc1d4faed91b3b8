//! `nexus sync` / `nexus verify` as processes, against a real PostgreSQL.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{nexus, ok_json, rt, with_stdout_closed};
use nexus_core::{NewFile, Store};
use nexus_tests::pg::connect as pg;

mod common;

#[test]
fn sync_and_verify_from_the_command_line() {
    let rt = rt();
    let target = rt.block_on(nexus_tests::pg::database("cli_sync"));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nexus.db");
    for i in 0..20 {
        assert!(
            nexus(
                &db,
                &[
                    "put",
                    &format!("/f/{i}"),
                    "--backend",
                    "l",
                    "--physical",
                    "p",
                    "--size",
                    "1"
                ]
            )
            .output()
            .unwrap()
            .status
            .success()
        );
    }
    assert!(
        nexus(&db, &["meta", "set", "/f/1", "k", "[1,2]"])
            .output()
            .unwrap()
            .status
            .success()
    );

    let dry = ok_json(
        nexus(&db, &["sync", "--dry-run", "--json", "--to", &target.url])
            .output()
            .unwrap(),
    );
    assert_eq!(dry["mode"], "full");
    assert_eq!(dry["tables"][0], serde_json::json!(["file_paths", 20]));

    let first = ok_json(
        nexus(&db, &["sync", "--json", "--to", &target.url])
            .output()
            .unwrap(),
    );
    assert_eq!(first["mode"], "full");
    assert_eq!(first["tables"][0]["rows"], 20);
    let verify = ok_json(
        nexus(&db, &["verify", "--json", "--to", &target.url])
            .output()
            .unwrap(),
    );
    assert_eq!(verify["equal"], true);
    // A closed stdout ends verify quietly...
    let closed = with_stdout_closed(&mut nexus(&db, &["verify", "--to", &target.url]), 0);
    assert_eq!(
        (
            closed.status.code(),
            String::from_utf8_lossy(&closed.stderr)
        ),
        (Some(0), "".into())
    );

    assert!(
        nexus(&db, &["rm", "/f/3"])
            .output()
            .unwrap()
            .status
            .success()
    );
    // NEXUS_DATABASE_URL stands in for --to.
    let second = ok_json(
        nexus(&db, &["sync", "--json"])
            .env("NEXUS_DATABASE_URL", &target.url)
            .output()
            .unwrap(),
    );
    assert_eq!(second["mode"], "incremental");
    assert_eq!(second["tables"][0]["rows"], 1);
    let text = nexus(&db, &["sync", "--to", &target.url]).output().unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("already up to date"));

    // A difference makes verify fail, naming the table.
    rt.block_on(async {
        pg(&target.url)
            .await
            .execute("DELETE FROM file_metadata", &[])
            .await
            .unwrap()
    });
    let bad = nexus(&db, &["verify", "--to", &target.url])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("file_metadata: 1 row in the store, 0 in PostgreSQL"),
        "{stderr}"
    );
    // ... but not its verdict: copies that differ still fail, and say so.
    let closed = with_stdout_closed(&mut nexus(&db, &["verify", "--to", &target.url]), 0);
    assert_eq!(closed.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&closed.stderr).contains("file_metadata: 1 row in the store"),
        "{closed:?}"
    );
}

#[test]
fn passwords_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nexus.db");
    assert!(nexus(&db, &["init"]).output().unwrap().status.success());
    let out = nexus(
        &db,
        &["sync", "--to", "postgresql://u:topsecret99@127.0.0.1:1/x"],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("topsecret99"), "{all}");
    assert!(all.contains("retryable"), "{all}");
    let out = nexus(
        &db,
        &["sync", "--to", "postgresql://u:topsecret99@h:notaport/x"],
    )
    .output()
    .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !all.contains("topsecret99") && all.contains("invalid PostgreSQL URL"),
        "{all}"
    );
}

/// SIGKILL the sync process while its transaction is open, then re-run:
/// the target converges to the store.
#[test]
fn killed_sync_process_then_rerun_converges() {
    let rt = rt();
    let target = rt.block_on(nexus_tests::pg::database("cli_kill"));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nexus.db");
    rt.block_on(async {
        let s = Store::open(&db).await.unwrap();
        let files: Vec<NewFile> = (0..12_000)
            .map(|i| {
                NewFile::new(format!("/k/{i:06}"), "local", format!("/p/{i}"), i)
                    .etag(format!("{i:x}"))
            })
            .collect();
        for c in files.chunks(2000) {
            s.put_batch(c).await.unwrap();
        }
    });
    let url = format!("{}?application_name=nexus_kill_me", target.url);
    let admin = rt.block_on(pg(&target.url));
    let mut child = nexus(&db, &["sync", "--window", "500", "--to", &url])
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut in_transaction = false;
    while started.elapsed() < Duration::from_secs(60) {
        let n: i64 = rt
            .block_on(admin.query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'nexus_kill_me' \
                 AND backend_xid IS NOT NULL AND query LIKE 'COPY %'",
                &[],
            ))
            .unwrap()
            .get(0);
        if n > 0 {
            in_transaction = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(in_transaction, "saw the sync's COPY inside its transaction");
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed, not finished");
    // The killed run committed nothing (its backend rolls back).
    let watermarks: i64 = rt
        .block_on(admin.query_one("SELECT count(*) FROM nexus_sync_state", &[]))
        .unwrap()
        .get(0);
    assert_eq!(watermarks, 0, "no watermark from the killed run");
    let rows: i64 = rt
        .block_on(admin.query_one("SELECT count(*) FROM file_paths", &[]))
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "no rows from the killed run");

    let rerun = ok_json(
        nexus(&db, &["sync", "--json", "--to", &target.url])
            .output()
            .unwrap(),
    );
    assert_eq!(rerun["tables"][0]["rows"], 12_000);
    let verify = ok_json(
        nexus(&db, &["verify", "--json", "--to", &target.url])
            .output()
            .unwrap(),
    );
    assert_eq!(verify["equal"], true, "{verify}");
}

fn nexus_url(url: &str, args: &[&str]) -> Output {
    nexus(url, args).output().unwrap()
}

/// The same commands work with `--db postgresql://...` (distributed mode).
#[test]
fn commands_work_on_postgres() {
    let rt = rt();
    let target = rt.block_on(nexus_tests::pg::database("cli_pg_store"));
    let url = &target.url;
    for (p, e) in [("/d/a", "e1"), ("/d/b", "e1"), ("/d/a", "e2")] {
        ok_json(nexus_url(
            url,
            &[
                "put",
                p,
                "--backend",
                "s3",
                "--physical",
                "x",
                "--size",
                "3",
                "--etag",
                e,
                "--json",
            ],
        ));
    }
    let a = ok_json(nexus_url(url, &["get", "/d/a", "--json"]));
    assert_eq!(
        (a["version"].as_u64(), a["etag"].as_str()),
        (Some(2), Some("e2"))
    );
    ok_json(nexus_url(
        url,
        &["meta", "set", "/d/a", "tags", "[\"x\"]", "--json"],
    ));
    assert_eq!(
        ok_json(nexus_url(url, &["find", "tags", "--json"]))["items"][0]["path"],
        "/d/a"
    );
    ok_json(nexus_url(url, &["mv", "/d", "/e", "--json"]));
    let ls = ok_json(nexus_url(url, &["ls", "/e", "-r", "--json"]));
    let paths: Vec<&str> = ls["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/e/a", "/e/b"]);
    ok_json(nexus_url(url, &["rollback", "/e/a", "1", "--json"]));
    assert_eq!(
        ok_json(nexus_url(url, &["versions", "/e/a", "--json"]))["versions"][0]["version"],
        3
    );
    ok_json(nexus_url(url, &["rm", "/e/b", "--json"]));
    let missing = nexus_url(url, &["get", "/e/b"]);
    assert!(
        !missing.status.success()
            && String::from_utf8_lossy(&missing.stderr).contains("no such file")
    );
    assert_eq!(ok_json(nexus_url(url, &["stats", "--json"]))["files"], 1);
    assert_eq!(
        ok_json(nexus_url(url, &["migrate", "status", "--json"]))["migrations"][0]["state"],
        "applied"
    );
    let sync = nexus_url(url, &["sync", "--to", url]);
    assert!(
        String::from_utf8_lossy(&sync.stderr).contains("embedded store"),
        "sync needs an embedded source"
    );
}

/// After `nexus sync`, switching the URL carries on with the same data.
#[test]
fn switch_to_postgres_after_sync_and_carry_on() {
    let rt = rt();
    let target = rt.block_on(nexus_tests::pg::database("cli_switch"));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nexus.db");
    let photos = dir.path().join("photos");
    std::fs::create_dir_all(photos.join("sub")).unwrap();
    std::fs::write(photos.join("a.txt"), "hello").unwrap();
    std::fs::write(photos.join("sub/b.json"), "{}").unwrap();
    ok_json(
        nexus(&db, &["scan", photos.to_str().unwrap(), "--json"])
            .output()
            .unwrap(),
    );
    ok_json(
        nexus(&db, &["meta", "set", "/photos/a.txt", "k", "1", "--json"])
            .output()
            .unwrap(),
    );
    ok_json(
        nexus(&db, &["sync", "--to", &target.url, "--json"])
            .output()
            .unwrap(),
    );
    let embedded = ok_json(
        nexus(&db, &["ls", "/photos", "-r", "--json"])
            .output()
            .unwrap(),
    );
    // Now only the URL changes: NEXUS_DATABASE_URL, no --db.
    let on_pg = |args: &[&str]| {
        common::nexus_in(dir.path())
            .args(args)
            .env("NEXUS_DATABASE_URL", &target.url)
            .output()
            .unwrap()
    };
    let distributed = ok_json(on_pg(&["ls", "/photos", "-r", "--json"]));
    assert_eq!(
        distributed["items"], embedded["items"],
        "every field of every record is the same"
    );
    assert_eq!(
        ok_json(on_pg(&["meta", "get", "/photos/a.txt", "k", "--json"]))["value"],
        1
    );
    // And writes carry on, with versions continuing.
    ok_json(on_pg(&[
        "put",
        "/photos/a.txt",
        "--backend",
        "local",
        "--physical",
        "p",
        "--size",
        "1",
        "--etag",
        "new",
        "--json",
    ]));
    assert_eq!(
        ok_json(on_pg(&["get", "/photos/a.txt", "--json"]))["version"],
        2
    );
}

/// Several processes writing one PostgreSQL at once: every operation
/// succeeds, counts add up; concurrent conditional puts never lose an update.
#[test]
fn processes_hammer_one_postgres() {
    let rt = rt();
    let target = rt.block_on(nexus_tests::pg::database("cli_hammer"));
    let nexus = env!("CARGO_BIN_EXE_nexus");
    ok_json(nexus_url(&target.url, &["init", "--json"]));
    let children: Vec<_> = (0..4)
        .map(|p| {
            let script = format!(
                "set -e; for i in $(seq 1 10); do \
                   {nexus} --db \"$U\" put /p{p}/f$i --backend l --physical x --size $i >/dev/null; \
                   {nexus} --db \"$U\" put /shared --backend l --physical x --size 1 --etag p{p}-$i >/dev/null; \
                   {nexus} --db \"$U\" meta set /p{p}/f$i n $i >/dev/null; \
                 done"
            );
            Command::new("sh").args(["-c", &script]).env("U", &target.url).spawn().unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let stats = ok_json(nexus_url(&target.url, &["stats", "--json"]));
    assert_eq!(stats["files"], 41);
    assert_eq!(stats["metadata_entries"], 40);
    let shared = ok_json(nexus_url(&target.url, &["get", "/shared", "--json"]));
    assert_eq!(
        shared["version"], 40,
        "each of the 40 puts with a new etag made one version"
    );
    let live: i64 = rt
        .block_on(async {
            pg(&target.url)
                .await
                .query_one("SELECT count(*) FROM file_paths WHERE virtual_path = '/shared' AND deleted_at IS NULL", &[])
                .await
        })
        .unwrap()
        .get(0);
    assert_eq!(live, 1, "concurrent first puts left one live row");
}
