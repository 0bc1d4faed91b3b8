//! `nexus push` / `pull` / `sync --with` as processes, against a real
//! PostgreSQL: the two-stores case of the two-way issue as a user runs it,
//! and processes killed at random instants.

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{nexus, ok, ok_json as json, put, rt};

mod common;

/// Every live path and its etag, as `ls -r --json` shows them.
fn listing(db: &Path) -> Vec<(String, String)> {
    common::listing(db)
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["etag"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The issue's case, from the command line: two stores that each recorded
/// `/shared.txt` push; the second gets a conflict copy (in the summary and
/// in `--json`), its own file arrives, later runs work, and after `sync
/// --with` both stores list the same files, `find nexus.conflict` shows the
/// copy, and `verify` holds.
#[test]
fn two_stores_from_the_command_line() {
    let rt = rt();
    let target = rt.block_on(nexus_tests::pg::database("cli_two_way"));
    let url = target.url.as_str();
    let dir = tempfile::tempdir().unwrap();
    let (a, b): (PathBuf, PathBuf) = (dir.path().join("a.db"), dir.path().join("b.db"));
    put(&a, "/shared.txt", "aaa");
    put(&a, "/a.txt", "a1");
    put(&b, "/shared.txt", "bbb");
    put(&b, "/b.txt", "b1");

    ok(nexus(&a, &["push", "--to", url]).output().unwrap());
    let text = ok(nexus(&b, &["sync", "--to", url]).output().unwrap());
    assert!(
        text.contains("1 conflict resolved")
            && text.contains("/shared.txt -> /shared.sync-conflict-"),
        "{text}"
    );
    put(&b, "/b2.txt", "b2");
    let again = json(
        nexus(&b, &["--json", "push", "--to", url])
            .output()
            .unwrap(),
    );
    assert_eq!(
        again["conflicts"],
        serde_json::json!([]),
        "not stuck: {again}"
    );

    let both = json(
        nexus(&a, &["--json", "sync", "--with", url])
            .output()
            .unwrap(),
    );
    assert!(both["pull"]["files"].as_u64().unwrap() >= 3, "{both}");
    ok(nexus(&b, &["sync", "--with", url]).output().unwrap());
    let listed = listing(&a);
    assert_eq!(listed, listing(&b));
    let paths: Vec<&str> = listed.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths.len(), 5, "{paths:?}");
    assert!(listed.contains(&("/shared.txt".into(), "aaa".into())));
    let found = json(
        nexus(&a, &["--json", "find", "nexus.conflict"])
            .output()
            .unwrap(),
    );
    assert_eq!(found["items"].as_array().unwrap().len(), 1, "{found}");
    for db in [&a, &b] {
        let v = json(
            nexus(db, &["--json", "verify", "--to", url])
                .output()
                .unwrap(),
        );
        assert_eq!(v["equal"], true, "{v}");
    }
    // A pull with nothing new says so.
    let text = ok(nexus(&a, &["pull", "--from", url]).output().unwrap());
    assert!(
        text.contains("up to date") || text.contains(" 0 rows"),
        "{text}"
    );
}

/// A deletion, rename or metadata change either succeeds or is refused
/// because its path is missing (or its store is not made yet) or its
/// target taken, as for a user: true when done.
fn done_or_refused(mut command: std::process::Command) -> bool {
    let out = command.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success()
            || err.contains("no such file")
            || err.contains("already exists")
            || err.contains("no store at"),
        "{err}"
    );
    out.status.success()
}

/// `sync --with` processes killed at random instants (mid-push, mid-pull)
/// while three stores keep changing overlapping paths (puts, deletions,
/// metadata, renames of files and of a folder): after clean runs, every
/// store and PostgreSQL agree (`verify` holds for each), and no version a
/// store wrote is missing.
#[test]
fn killed_sync_processes_then_converge() {
    let rt = rt();
    let target = rt.block_on(nexus_tests::pg::database("cli_two_way_kill"));
    let url = target.url.as_str();
    let dir = tempfile::tempdir().unwrap();
    let stores = ["a.db", "b.db", "c.db"].map(|n| dir.path().join(n));
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut written = Vec::new();
    // Deletions, file renames, metadata changes, folder renames done.
    let mut done = [0u32; 4];
    for round in 0..6 {
        for (i, db) in stores.iter().enumerate() {
            for k in 0..3 {
                let path = format!("/{}/{}", ["r", "s"][(next() % 2) as usize], next() % 4);
                match next() % 6 {
                    0 => done[0] += done_or_refused(nexus(db, &["rm", &path])) as u32,
                    1 => {
                        let to = format!("/r/{}", next() % 4);
                        if to != path {
                            done[1] += done_or_refused(nexus(db, &["mv", &path, &to])) as u32;
                        }
                    }
                    2 => {
                        let value = format!("\"s{i}-r{round}-{k}\"");
                        done[2] +=
                            done_or_refused(nexus(db, &["meta", "set", &path, "k", &value])) as u32;
                    }
                    3 => {
                        let folders = ["/r", "/s", "/t"];
                        let (from, to) = (
                            folders[(next() % 3) as usize],
                            folders[(next() % 3) as usize],
                        );
                        if from != to {
                            done[3] += done_or_refused(nexus(db, &["mv", from, to])) as u32;
                        }
                    }
                    _ => {
                        let etag = format!("s{i}-r{round}-{k}");
                        put(db, &path, &etag);
                        written.push(etag);
                    }
                }
            }
            let mut child = nexus(db, &["sync", "--with", url])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(next() % 150));
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    assert!(
        done.iter().all(|n| *n > 0),
        "each kind of change done: {done:?}"
    );
    for _ in 0..2 {
        for db in &stores {
            ok(nexus(db, &["sync", "--with", url]).output().unwrap());
        }
    }
    assert_eq!(listing(&stores[0]), listing(&stores[1]));
    assert_eq!(listing(&stores[0]), listing(&stores[2]));
    for db in &stores {
        let v = json(
            nexus(db, &["--json", "verify", "--to", url])
                .output()
                .unwrap(),
        );
        assert_eq!(v["equal"], true, "{v}");
    }
    rt.block_on(nexus_tests::pg::assert_no_write_lost(url, &written));
}
