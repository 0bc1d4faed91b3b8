//! The `nexus` binary end to end: real processes on real files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

mod common;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("nexus.db")
    }

    fn cmd(&self) -> Command {
        common::nexus_in(self.dir.path())
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Runs, expects success, returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        common::ok(self.run(args))
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    /// Runs, expects failure, returns the (single) stderr line.
    fn err(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "nexus {args:?} should fail");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr:?}");
        stderr
    }
}

const RECORD_FIELDS: [&str; 10] = [
    "path",
    "backend",
    "physical_path",
    "size",
    "etag",
    "mime_type",
    "created_at",
    "modified_at",
    "version",
    "tenant",
];

#[test]
fn init_creates_default_database_in_current_folder() {
    let env = Env::new();
    let out = env.ok(&["init"]);
    let head = nexus_migrations::Migrator::new(nexus_migrations::Dialect::Sqlite).head();
    assert!(out.contains(&format!("schema version {head}")), "{out}");
    assert!(env.db().exists());
    let other = env.dir.path().join("elsewhere.db");
    env.cmd()
        .arg("init")
        .env("NEXUS_DB", &other)
        .output()
        .unwrap();
    assert!(other.exists(), "NEXUS_DB is honoured");
}

#[test]
fn put_get_round_trip_with_json_fields() {
    let env = Env::new();
    let put = env.json(&[
        "put",
        "/docs/a.txt",
        "--backend",
        "s3",
        "--physical",
        "bucket/a",
        "--size",
        "42",
        "--etag",
        "e1",
        "--mime",
        "text/plain",
    ]);
    let got = env.json(&["get", "/docs/a.txt"]);
    assert_eq!(put, got);
    for f in RECORD_FIELDS {
        assert!(got.get(f).is_some(), "field {f} missing in {got}");
    }
    assert_eq!(got["size"], 42);
    assert_eq!(got["etag"], "e1");
    assert_eq!(got["version"], 1);
    assert_eq!(got["tenant"], "default");
    assert!(got["created_at"].as_str().unwrap().ends_with('Z'));
    let human = env.ok(&["get", "/docs/a.txt"]);
    assert!(human.contains("bucket/a") && human.contains("text/plain"));
}

#[test]
fn missing_paths_exit_non_zero_with_one_line() {
    let env = Env::new();
    env.ok(&["init"]);
    for args in [
        &["get", "/nope"][..],
        &["rm", "/nope"],
        &["mv", "/nope", "/other"],
        &["versions", "/nope"],
        &["rollback", "/nope", "1"],
        &["meta", "get", "/nope", "k"],
        &["meta", "set", "/nope", "k", "1"],
    ] {
        let line = env.err(args);
        assert!(
            line.starts_with("nexus: ") && line.contains("/nope"),
            "{args:?}: {line}"
        );
    }
    let bad = env.err(&[
        "put",
        "relative",
        "--backend",
        "l",
        "--physical",
        "p",
        "--size",
        "1",
    ]);
    assert!(bad.contains("invalid path \"relative\""), "{bad}");
    let neg = env.err(&[
        "put",
        "/x",
        "--backend",
        "l",
        "--physical",
        "p",
        "--size",
        "-1",
    ]);
    assert!(neg.contains("invalid size -1"), "{neg}");
    let json = env.err(&["find", "k=not json"]);
    assert!(json.contains("not valid JSON"), "{json}");
}

#[test]
fn ls_pages_with_cursor_and_shows_directories() {
    let env = Env::new();
    for p in ["/d/a", "/d/b", "/d/c", "/d/sub/x", "/e"] {
        env.ok(&["put", p, "--backend", "l", "--physical", "p", "--size", "1"]);
    }
    let first = env.json(&["ls", "/d", "-r", "--limit", "2"]);
    let names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["path"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&first), ["/d/a", "/d/b"]);
    let cursor = first["next_cursor"].as_str().unwrap().to_string();
    let second = env.json(&["ls", "/d", "-r", "--limit", "2", "--cursor", &cursor]);
    assert_eq!(names(&second), ["/d/c", "/d/sub/x"]);
    assert!(second["next_cursor"].is_null());
    let wrong = env.err(&["ls", "/e", "-r", "--cursor", &cursor]);
    assert!(wrong.contains("invalid cursor"), "{wrong}");

    let direct = env.json(&["ls", "/d"]);
    assert_eq!(names(&direct), ["/d/a", "/d/b", "/d/c"]);
    assert_eq!(direct["directories"], serde_json::json!(["/d/sub"]));
    let human = env.ok(&["ls"]);
    assert!(human.contains("/d/") && human.contains("/e"), "{human}");
}

#[test]
fn meta_find_versions_rollback_mv_rm() {
    let env = Env::new();
    env.ok(&[
        "put",
        "/f",
        "--backend",
        "l",
        "--physical",
        "p1",
        "--size",
        "1",
        "--etag",
        "h1",
    ]);
    env.ok(&[
        "put",
        "/f",
        "--backend",
        "l",
        "--physical",
        "p2",
        "--size",
        "2",
        "--etag",
        "h2",
    ]);
    env.ok(&["meta", "set", "/f", "status", r#""ready""#]);
    env.ok(&["meta", "set", "/f", "tags", r#"["a", "b"]"#]);
    assert_eq!(
        env.json(&["meta", "get", "/f", "tags"])["value"],
        serde_json::json!(["a", "b"])
    );
    assert_eq!(
        env.ok(&["meta", "get", "/f", "status"]).trim(),
        r#""ready""#
    );
    let found = env.json(&["find", r#"status="ready""#]);
    assert_eq!(found["items"][0]["path"], "/f");
    assert_eq!(
        env.json(&["find", r#"status="other""#])["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // A key that holds `=` is named with --key.
    env.ok(&["meta", "set", "/f", "a=b", "1"]);
    let found = env.json(&["find", "--key", "a=b", "--value", "1"]);
    assert_eq!(found["items"][0]["path"], "/f");
    assert_eq!(env.json(&["find", "--key", "a=b"])["items"][0]["value"], 1);
    // Positional, it splits at the first `=`.
    let odd = env.err(&["find", "a=b"]);
    assert!(
        odd.contains(r#"the value for "a" is not valid JSON"#),
        "{odd}"
    );
    // Both, or neither: clap's usage error.
    for args in [&["find", "k", "--key", "k"][..], &["find"]] {
        let out = env.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            stderr.contains("Usage: nexus find <QUERY|--key <KEY>>"),
            "{stderr}"
        );
    }
    env.ok(&["meta", "rm", "/f", "status"]);
    assert!(
        env.err(&["meta", "get", "/f", "status"])
            .contains("no metadata key")
    );

    let versions = env.json(&["versions", "/f"]);
    let numbers: Vec<u64> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [2, 1]);
    let rolled = env.json(&["rollback", "/f", "1"]);
    assert_eq!(
        (rolled["version"].as_u64(), rolled["etag"].as_str()),
        (Some(3), Some("h1"))
    );

    env.ok(&["mv", "/f", "/g"]);
    assert_eq!(
        env.json(&["meta", "get", "/g", "tags"])["value"],
        serde_json::json!(["a", "b"])
    );
    env.ok(&["rm", "/g"]);
    env.err(&["get", "/g"]);
    let stats = env.json(&["stats"]);
    assert_eq!(stats["files"], 0);
    assert_eq!(stats["deleted_files"], 1);
}

#[test]
fn tenants_do_not_see_each_other() {
    let env = Env::new();
    env.ok(&[
        "--tenant",
        "acme",
        "put",
        "/x",
        "--backend",
        "l",
        "--physical",
        "p",
        "--size",
        "1",
    ]);
    env.err(&["get", "/x"]);
    env.err(&["--tenant", "other", "get", "/x"]);
    assert_eq!(
        env.json(&["--tenant", "acme", "get", "/x"])["tenant"],
        "acme"
    );
}

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

#[test]
fn scan_records_a_folder_and_rescan_touches_only_changes() {
    let env = Env::new();
    let root = env.dir.path().join("photos");
    write(&root.join("a.txt"), "hello");
    write(&root.join("sub/b.json"), "{}");
    write(&root.join("c.png"), "png");
    let first = env.json(&["scan", "photos"]);
    assert_eq!(
        (first["added"].as_u64(), first["files"].as_u64()),
        (Some(3), Some(3))
    );
    let a = env.json(&["get", "/photos/a.txt"]);
    assert_eq!(a["mime_type"], "text/plain");
    assert_eq!(a["size"], 5);
    // sha256("hello")
    assert_eq!(
        a["etag"],
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    assert_eq!(
        env.json(&["get", "/photos/c.png"])["mime_type"],
        "image/png"
    );

    let again = env.json(&["scan", "photos"]);
    assert_eq!(
        (
            again["unchanged"].as_u64(),
            again["added"].as_u64(),
            again["updated"].as_u64()
        ),
        (Some(3), Some(0), Some(0))
    );
    assert_eq!(again["bytes_hashed"], 0, "nothing unchanged is re-read");
    let seq_before = env.json(&["stats"])["change_seq"].as_u64().unwrap();
    env.json(&["scan", "photos"]);
    assert_eq!(
        env.json(&["stats"])["change_seq"].as_u64().unwrap(),
        seq_before,
        "an unchanged re-scan writes nothing"
    );

    std::thread::sleep(std::time::Duration::from_millis(20));
    write(&root.join("a.txt"), "hello, world");
    std::fs::remove_file(root.join("c.png")).unwrap();
    write(&root.join("new.md"), "# new");
    let third = env.json(&["scan", "photos"]);
    assert_eq!(
        (
            third["added"].as_u64(),
            third["updated"].as_u64(),
            third["removed"].as_u64(),
            third["unchanged"].as_u64()
        ),
        (Some(1), Some(1), Some(1), Some(1))
    );
    assert_eq!(env.json(&["get", "/photos/a.txt"])["version"], 2);
    env.err(&["get", "/photos/c.png"]);

    let at_root = env.json(&["scan", "photos", "--prefix", "/"]);
    assert_eq!(at_root["prefix"], "/");
    assert!(env.json(&["get", "/sub/b.json"])["size"] == 2);
}

/// A re-scan removes the records of the folder's files that are gone,
/// and only those: a record put by hand under the same prefix (another
/// backend, or the local one naming a file elsewhere) and the records of
/// another folder, or of a parent folder, scanned into the same prefix
/// stay.
#[test]
fn a_scan_removes_only_records_of_its_own_folders_files() {
    let env = Env::new();
    write(&env.dir.path().join("a/one.txt"), "1");
    write(&env.dir.path().join("a/two.txt"), "2");
    write(&env.dir.path().join("b/three.txt"), "3");
    env.ok(&["scan", "a", "--prefix", "/"]);
    env.ok(&["scan", "b", "--prefix", "/"]);
    for (path, backend, physical) in [
        ("/contract.pdf", "s3", "bucket/contract.pdf"),
        ("/kept/notes.txt", "local", "/elsewhere/notes.txt"),
    ] {
        env.ok(&[
            "put",
            path,
            "--backend",
            backend,
            "--physical",
            physical,
            "--size",
            "1",
        ]);
    }
    std::fs::remove_file(env.dir.path().join("a/two.txt")).unwrap();
    let s = env.json(&["scan", "a", "--prefix", "/"]);
    assert_eq!(
        (s["removed"].as_u64(), s["unchanged"].as_u64()),
        (Some(1), Some(1)),
        "{s}"
    );
    let listed = common::paths(env.db());
    assert_eq!(
        listed,
        ["/contract.pdf", "/kept/notes.txt", "/one.txt", "/three.txt"]
    );
    // A subfolder scanned into the prefix of its parent's scan: the
    // parent's records, of files still there, are not its to remove.
    write(&env.dir.path().join("a/sub/deep.txt"), "4");
    env.ok(&["scan", "a", "--prefix", "/"]);
    let s = env.json(&["scan", "a/sub", "--prefix", "/"]);
    assert_eq!(
        (s["added"].as_u64(), s["removed"].as_u64()),
        (Some(1), Some(0)),
        "{s}"
    );
    env.ok(&["get", "/sub/deep.txt"]);
    env.ok(&["get", "/deep.txt"]);
}

/// A scan of the folder that holds the store (`nexus scan .` beside
/// `./nexus.db`) leaves the store's own files out: the database, its WAL
/// and shared-memory files are not files of the folder, and change with
/// every write. Records a scan made of them before are removed.
#[test]
fn scan_leaves_the_stores_own_files_out() {
    let env = Env::new();
    write(&env.dir.path().join("notes/a.txt"), "a");
    write(&env.dir.path().join("nexus.db.txt"), "not the store");
    // A record of the store's file, as an older scan made it.
    let physical = env.dir.path().canonicalize().unwrap().join("nexus.db");
    env.ok(&[
        "put",
        "/here/nexus.db",
        "--backend",
        "local",
        "--physical",
        physical.to_str().unwrap(),
        "--size",
        "1",
    ]);
    assert!(env.db().exists());
    let s = env.json(&["scan", ".", "--prefix", "/here"]);
    assert_eq!(
        (
            s["added"].as_u64(),
            s["removed"].as_u64(),
            s["skipped"].as_u64()
        ),
        (Some(2), Some(1), Some(0)),
        "{s}"
    );
    let listed = common::paths(env.db());
    assert_eq!(listed, ["/here/nexus.db.txt", "/here/notes/a.txt"]);
    // The same store named through a path with `..` in it.
    let other = env.dir.path().join("notes/../nexus.db");
    let s = env.json(&[
        "--db",
        other.to_str().unwrap(),
        "scan",
        ".",
        "--prefix",
        "/here",
    ]);
    assert_eq!(s["unchanged"].as_u64(), Some(2), "{s}");
}

#[cfg(unix)]
#[test]
fn scan_reports_and_skips_non_utf8_names() {
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    let root = env.dir.path().join("odd");
    write(&root.join("fine.txt"), "ok");
    let bad = root.join(std::ffi::OsStr::from_bytes(b"bad-\xff.txt"));
    std::fs::write(&bad, "x").unwrap();
    let out = env.run(&["scan", "odd", "--json"]);
    assert!(out.status.success());
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (summary["added"].as_u64(), summary["skipped"].as_u64()),
        (Some(1), Some(1))
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not UTF-8") && stderr.contains("bad-"),
        "{stderr}"
    );
}

/// Symbolic links and other entries that are not regular files are not
/// followed or read: each is named on stderr and counted as skipped.
#[cfg(unix)]
#[test]
fn scan_names_and_counts_links_and_pipes_it_skips() {
    let env = Env::new();
    let root = env.dir.path().join("mixed");
    write(&root.join("real.txt"), "ok");
    std::os::unix::fs::symlink(root.join("real.txt"), root.join("link.txt")).unwrap();
    let fifo = root.join("pipe");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo");
    let out = env.run(&["scan", "mixed", "--json"]);
    assert!(out.status.success());
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (summary["added"].as_u64(), summary["skipped"].as_u64()),
        (Some(1), Some(2)),
        "{summary}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("link.txt: a symbolic link") && stderr.contains("pipe: not a regular file"),
        "{stderr}"
    );
    assert_eq!(env.ok(&["ls", "-r", "/", "-1"]).trim(), "/mixed/real.txt");
    // One file is one file.
    let again = env.ok(&["scan", "mixed"]);
    assert!(
        again.starts_with("scanned 1 file into /mixed: 0 added, 0 updated, 1 unchanged"),
        "{again}"
    );
}

#[test]
fn migrate_status_down_up() {
    let env = Env::new();
    env.ok(&[
        "put",
        "/x",
        "--backend",
        "l",
        "--physical",
        "p",
        "--size",
        "1",
    ]);
    let status = env.json(&["migrate", "status"]);
    assert_eq!(status["migrations"][0]["state"], "applied");
    let head = nexus_migrations::Migrator::new(nexus_migrations::Dialect::Sqlite).head();
    assert_eq!(
        env.json(&["migrate", "down", "--to", "0"])["reverted"],
        serde_json::json!((1..=head).rev().collect::<Vec<_>>())
    );
    assert_eq!(
        env.json(&["migrate", "status"])["migrations"][0]["state"],
        "pending"
    );
    assert_eq!(
        env.json(&["migrate", "up"])["applied"],
        serde_json::json!((1..=head).collect::<Vec<_>>())
    );
    assert_eq!(
        env.json(&["migrate", "up"])["applied"],
        serde_json::json!([])
    );
    assert!(
        env.err(&["migrate", "up", "--to", "77"])
            .contains("no migration version 77")
    );
}

/// Two processes on one file both succeed: the second waits for the first.
#[test]
fn two_processes_on_one_file_both_succeed() {
    let env = Env::new();
    env.ok(&["init"]);
    let spawn = |tag: &'static str| {
        let mut cmd = Command::new("sh");
        let script = format!(
            "for i in $(seq 1 25); do {} put /{tag}/$i --backend l --physical p --size 1 >/dev/null || exit 1; done",
            env!("CARGO_BIN_EXE_nexus")
        );
        cmd.args(["-c", &script]);
        cmd.current_dir(env.dir.path());
        cmd
    };
    let mut a = spawn("a").spawn().unwrap();
    let mut b = spawn("b").spawn().unwrap();
    assert!(a.wait().unwrap().success());
    assert!(b.wait().unwrap().success());
    assert_eq!(env.json(&["stats"])["files"], 50);
}

/// A process holding the file past the busy timeout gives a clear, bounded failure.
#[test]
fn busy_database_fails_after_the_timeout_with_clear_error() {
    let env = Env::new();
    env.ok(&["init"]);
    let store = pollster::block_on(nexus_core::Store::open(env.db())).unwrap();
    let started = std::time::Instant::now();
    let line = env.err(&["--busy-timeout", "0.5", "get", "/x"]);
    let waited = started.elapsed();
    assert!(line.contains("busy"), "{line}");
    let waited_s: f64 = line
        .trim_end()
        .rsplit_once("gave up after ")
        .and_then(|(_, s)| s.strip_suffix(" s"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("the wait in seconds: {line}"));
    assert!((0.5..30.0).contains(&waited_s), "{line}");
    assert!(
        waited >= std::time::Duration::from_millis(500),
        "it waited: {waited:?}"
    );
    drop(store);
    let after = env.err(&["get", "/x"]);
    assert!(
        after.contains("no such file"),
        "once released, the file opens: {after}"
    );
}

/// Four processes writing one file at once with mixed operations: every
/// operation succeeds (each process waits its turn, bounded), counts add up,
/// and the file is intact.
#[test]
fn four_processes_mixed_writes_on_one_file() {
    let env = Env::new();
    env.ok(&["init"]);
    let nexus = env!("CARGO_BIN_EXE_nexus");
    let children: Vec<_> = (0..4)
        .map(|p| {
            let script = format!(
                "set -e; for i in $(seq 1 12); do \
                   {nexus} put /p{p}/f$i --backend l --physical x --size $i --etag e$i >/dev/null; \
                   {nexus} meta set /p{p}/f$i n $i >/dev/null; \
                 done; \
                 for i in $(seq 1 4); do {nexus} mv /p{p}/f$i /p{p}/moved$i >/dev/null; done; \
                 for i in $(seq 5 8); do {nexus} rm /p{p}/f$i >/dev/null; done"
            );
            Command::new("sh")
                .args(["-c", &script])
                .current_dir(env.dir.path())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(
            c.wait().unwrap().success(),
            "every operation of every process succeeded"
        );
    }
    let stats = env.json(&["stats"]);
    assert_eq!(stats["files"], 4 * 8, "12 puts - 4 deletes per process");
    assert_eq!(stats["deleted_files"], 4 * 4);
    assert_eq!(stats["metadata_entries"], 4 * 8);
    for p in 0..4 {
        let moved = env.json(&["meta", "get", &format!("/p{p}/moved3"), "n"]);
        assert_eq!(moved["value"], 3, "metadata followed the rename");
    }
    let integrity: String = rusqlite_check(&env.db());
    assert_eq!(integrity, "ok");
}

fn rusqlite_check(db: &Path) -> String {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

/// A command that works on records already there, run on a store file
/// that does not exist (a mistyped `--db`), says so and makes nothing;
/// commands that write make the store.
#[test]
fn reading_a_store_that_does_not_exist_says_so_and_makes_nothing() {
    let env = Env::new();
    for args in [
        vec!["ls", "-r", "/"],
        vec!["get", "/x"],
        vec!["stats"],
        vec!["find", "k"],
        vec!["meta", "ls", "/x"],
        vec!["export-changes"],
        vec!["push", "--to", "postgresql://nobody@127.0.0.1:9/none"],
        vec!["migrate", "status"],
        vec!["migrate", "down"],
    ] {
        let mut all = vec!["--db", "typo/dir/store.db"];
        all.extend(args.iter().copied());
        let line = env.err(&all);
        assert!(
            line.contains("no store at typo/dir/store.db: the file does not exist"),
            "{args:?}: {line}"
        );
    }
    assert!(!env.dir.path().join("typo").exists(), "nothing was made");
    env.ok(&["--db", "new.db", "init"]);
    assert_eq!(env.json(&["--db", "new.db", "stats"])["files"], 0);
}

/// Mistakes name what is wrong: a file that is not a database, another
/// program's database, a folder that is not there, a negative count.
#[test]
fn common_mistakes_get_errors_that_name_them() {
    let env = Env::new();
    std::fs::write(
        env.dir.path().join("notes.txt"),
        "not a database, just notes",
    )
    .unwrap();
    let line = env.err(&["--db", "notes.txt", "ls", "/"]);
    assert!(line.contains("\"notes.txt\": is not a store"), "{line}");
    assert_eq!(
        std::fs::read_to_string(env.dir.path().join("notes.txt")).unwrap(),
        "not a database, just notes"
    );
    // Another program's SQLite database: refused, by writing commands
    // too, and left without the store's tables.
    let theirs = env.dir.path().join("app.sqlite");
    rusqlite::Connection::open(&theirs)
        .unwrap()
        .execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('hi');")
        .unwrap();
    for args in [
        vec!["ls", "/"],
        vec![
            "put",
            "/x",
            "--backend",
            "s3",
            "--physical",
            "p",
            "--size",
            "1",
        ],
        vec!["migrate", "status"],
        vec!["migrate", "up"],
    ] {
        let mut all = vec!["--db", "app.sqlite"];
        all.extend(args);
        let line = env.err(&all);
        assert!(
            line.contains("is not a store: an SQLite database of other tables (notes)"),
            "{line}"
        );
    }
    let tables: Vec<String> = rusqlite::Connection::open(&theirs)
        .unwrap()
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(tables, ["notes"]);
    // Sizes whose sum passes 2^63 (SQLite's SUM would overflow).
    for p in ["/huge/a", "/huge/b"] {
        env.ok(&[
            "put",
            p,
            "--backend",
            "s3",
            "--physical",
            "p",
            "--size",
            "6000000000000000000",
        ]);
    }
    assert_eq!(
        env.json(&["stats"])["total_bytes"].as_u64(),
        Some(12_000_000_000_000_000_000)
    );
    let line = env.err(&["scan", "not-here"]);
    assert!(
        line.contains("cannot scan not-here: no such folder"),
        "{line}"
    );
    env.ok(&["init"]);
    let out = env.run(&["ls", "--limit", "-1", "/"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("invalid value '-1' for '--limit"),
        "{stderr}"
    );
}

/// `nexus.toml` supplies the database and tenant; flags and environment win;
/// a bad file is refused with a message naming it.
#[test]
fn config_file_is_read_and_overridden() {
    let env = Env::new();
    std::fs::write(
        env.dir.path().join("nexus.toml"),
        "[database]\nurl = \"from-config.db\"\ntenant = \"acme\"\nwait_timeout_secs = 5\n",
    )
    .unwrap();
    let put = env.json(&[
        "put",
        "/x",
        "--backend",
        "l",
        "--physical",
        "p",
        "--size",
        "1",
    ]);
    assert_eq!(put["tenant"], "acme");
    assert!(
        env.dir.path().join("from-config.db").exists(),
        "the config's url was used"
    );
    assert!(!env.db().exists());
    // Flags and environment override the file.
    let line = env.err(&["--db", "flag.db", "get", "/x"]);
    assert!(line.contains("no store at flag.db"), "{line}");
    assert_eq!(
        env.json(&["--tenant", "acme", "get", "/x"])["tenant"],
        "acme"
    );
    let other_tenant = env
        .cmd()
        .args(["get", "/x"])
        .env("NEXUS_TENANT", "globex")
        .output()
        .unwrap();
    assert!(
        !other_tenant.status.success(),
        "NEXUS_TENANT wins over the file"
    );

    std::fs::write(
        env.dir.path().join("bad.toml"),
        "[database]\nurll = \"x\"\n",
    )
    .unwrap();
    let bad = env.err(&["--config", "bad.toml", "stats"]);
    assert!(
        bad.contains("invalid config file bad.toml") && bad.contains("urll"),
        "{bad}"
    );
    // A secret on a line the parser refuses, or a value of the wrong type,
    // is not repeated in the error; the line and the field are named.
    for (toml, names) in [
        ("[serve]\njwt_secret = \"s3cr3t-typo\" x\n", "line 2"),
        (
            "[serve]\nmax_body_bytes = \"s3cr3t-typo\"\n",
            "invalid type: string",
        ),
        (
            "[database]\nurl = [\"postgresql://u:s3cr3t-typo@h/db\"]\n",
            "line 2",
        ),
    ] {
        std::fs::write(env.dir.path().join("secret.toml"), toml).unwrap();
        let bad = env.err(&["--config", "secret.toml", "stats"]);
        assert!(
            bad.contains("invalid config file secret.toml") && bad.contains(names),
            "{bad}"
        );
        assert!(!bad.contains("s3cr3t"), "the error repeats a secret: {bad}");
    }
    let missing = env.err(&["--config", "missing.toml", "stats"]);
    assert!(
        missing.contains("cannot read the config file missing.toml"),
        "{missing}"
    );
}

/// Spawns `nexus args` with stdout and stderr piped, reads `lines` lines of
/// stdout (0: none, the pipe is closed before the command can write) and
/// closes the pipe, then waits. Returns the exit status and stderr.
/// `nexus ls -r / | head`: the reader closes the pipe after a line, while
/// the command still has far more than a pipe buffer to write. The command
/// ends quietly with status 0 (as ripgrep does; see `output.rs`), text and
/// JSON; so does every other command whose stdout is closed before it
/// prints. A closed stderr does not panic either.
#[test]
fn closed_stdout_ends_every_command_quietly() {
    let env = Env::new();
    // 1,500 files with long names: the listing is several pipe buffers long.
    let long = "n".repeat(100);
    for i in 0..1500 {
        write(
            &env.dir
                .path()
                .join(format!("tree/d{}/{long}-{i}.txt", i % 3)),
            &i.to_string(),
        );
    }
    env.json(&["scan", "tree"]);
    let first = format!("/tree/d0/{long}-0.txt");
    env.ok(&["meta", "set", &first, "k", "1"]);
    let full = env.ok(&["ls", "-r", "/"]);
    assert_eq!(full.lines().count(), 1500);
    assert!(
        full.len() > 3 * 65536,
        "more than a pipe buffer: {}",
        full.len()
    );
    assert!(env.ok(&["ls", "-r", "/", "--json"]).len() > 3 * 65536);

    for (args, lines) in [
        (&["ls", "-r", "/"][..], 1),
        (&["ls", "-r", "/", "--json"], 1),
        (&["ls", "-r", "/", "-1"], 10),
        (&["ls", "-r", "/"], 0),
        (&["ls", "/tree"], 0),
        (&["ls", "-r", "/", "--limit", "3"], 0),
        (&["export-changes"], 0),
        (&["get", &first], 0),
        (&["get", &first, "--json"], 0),
        (&["versions", &first], 0),
        (&["meta", "ls", &first], 0),
        (&["find", "k"], 0),
        (&["stats"], 0),
        (&["stats", "/tree"], 0),
        (&["stats", "/tree", "--json"], 0),
        (&["migrate", "status"], 0),
        (&["--help"], 0),
        (&["ls", "--help"], 0),
    ] {
        ends_quietly(&env, args, lines);
    }

    // A write is done (committed) before its report is printed.
    ends_quietly(
        &env,
        &[
            "put",
            "/late",
            "--backend",
            "l",
            "--physical",
            "p",
            "--size",
            "3",
        ],
        0,
    );
    assert_eq!(env.json(&["get", "/late"])["size"], 3);

    // So is every other write, and `init`: each ends quietly with its work
    // done.
    env.ok(&[
        "put",
        "/late",
        "--backend",
        "l",
        "--physical",
        "p2",
        "--size",
        "4",
        "--etag",
        "e2",
    ]);
    write(&env.dir.path().join("more/x.txt"), "x");
    type Check = fn(&Env);
    let writes: [(&[&str], Check); 7] = [
        (&["init"], |_| {}),
        (&["mv", "/late", "/later"], |env| {
            assert_eq!(env.json(&["get", "/later"])["size"], 4);
        }),
        (&["meta", "set", "/later", "k2", "2"], |env| {
            assert_eq!(
                env.json(&["meta", "get", "/later", "k2"])["value"],
                json!(2)
            );
        }),
        (&["meta", "rm", "/later", "k2"], |env| {
            assert_eq!(env.json(&["meta", "ls", "/later"])["metadata"], json!({}));
        }),
        (&["rollback", "/later", "1"], |env| {
            assert_eq!(env.json(&["get", "/later"])["size"], 3);
        }),
        (&["rm", "/later"], |env| {
            assert!(
                !env.cmd()
                    .args(["get", "/later"])
                    .output()
                    .unwrap()
                    .status
                    .success()
            );
        }),
        (&["scan", "more"], |env| {
            assert!(env.ok(&["ls", "-r", "/more"]).contains("x.txt"));
        }),
    ];
    for (args, check) in writes {
        ends_quietly(&env, args, 0);
        check(&env);
    }

    // A failure keeps its status when stderr is closed, and does not panic.
    let mut child = env
        .cmd()
        .args(["get", "/nope"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
}

/// `nexus ARGS` with stdout closed after `lines` lines (0: before it
/// writes) exits 0 and writes nothing to stderr.
fn ends_quietly(env: &Env, args: &[&str], lines: usize) {
    let out = common::with_stdout_closed(env.cmd().args(args), lines);
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).as_ref()
        ),
        (Some(0), ""),
        "nexus {args:?} with stdout closed after {lines} lines"
    );
}

fn put_sized(env: &Env, path: &str, size: u64) {
    env.ok(&[
        "put",
        path,
        "--backend",
        "l",
        "--physical",
        "p",
        "--size",
        &size.to_string(),
    ]);
}

/// `stats PREFIX`: files and bytes below a prefix, and per immediate
/// subdirectory (as `du -d1`), in text and JSON; `-h` as `du -h`.
#[test]
fn stats_prefix_sums_per_subdirectory() {
    let env = Env::new();
    for (path, size) in [
        ("/d/a", 10),
        ("/d/sub/x", 100),
        ("/d/sub/deeper/y", 1000),
        ("/d/other/z", 1536),
        ("/d2/w", 7),
        ("/e", 5 * 1024 * 1024 + 1),
    ] {
        put_sized(&env, path, size);
    }
    env.ok(&["rm", "/d/a"]);
    put_sized(&env, "/d/b", 20);

    let d = env.json(&["stats", "/d"]);
    assert_eq!(
        d,
        serde_json::json!({
            "prefix": "/d/", "files": 4, "bytes": 2656,
            "directories": [
                {"path": "/d/other", "files": 1, "bytes": 1536},
                {"path": "/d/sub", "files": 2, "bytes": 1100},
            ],
        }),
        "deleted files do not count; /d2 is not below /d"
    );
    assert_eq!(env.json(&["stats", "/d/"]), d);
    let root = env.json(&["stats", "/"]);
    assert_eq!(
        (root["files"].as_u64(), root["bytes"].as_u64()),
        (Some(6), Some(2656 + 7 + 5 * 1024 * 1024 + 1))
    );
    let dirs: Vec<&str> = root["directories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(dirs, ["/d", "/d2"]);
    // A prefix that is not a directory is taken as it is: /d matches /d2 too.
    let raw = env.json(&["stats", "/d/su"]);
    assert_eq!(
        (raw["prefix"].as_str(), raw["files"].as_u64()),
        (Some("/d/su"), Some(2))
    );
    let none = env.json(&["stats", "/nothing"]);
    assert_eq!(
        (none["files"].as_u64(), none["bytes"].as_u64()),
        (Some(0), Some(0))
    );

    let text = env.ok(&["stats", "/d"]);
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        [
            vec!["bytes", "files", "path"],
            vec!["1536", "1", "/d/other/"],
            vec!["1100", "2", "/d/sub/"],
            vec!["2656", "4", "/d/"],
        ],
        "{text}"
    );
    let human = env.ok(&["stats", "-h", "/"]);
    let lines: Vec<Vec<&str>> = human
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    // Rounded up, as du -h: 5 MiB + 2,664 bytes is 5.1 MiB.
    assert_eq!(
        lines[1..],
        [
            vec!["2.6", "KiB", "4", "/d/"],
            vec!["7", "B", "1", "/d2/"],
            vec!["5.1", "MiB", "6", "/"],
        ],
        "{human}"
    );
    let human = env.ok(&["stats", "--human-readable", "/d"]);
    assert!(
        human.contains("1.5 KiB") && human.contains("1.1 KiB") && human.contains("2.6 KiB"),
        "{human}"
    );
    // Without a prefix: the tenant's counts, as before; -h for its bytes.
    let tenant = env.json(&["stats"]);
    assert_eq!(tenant["files"], 6);
    assert!(
        env.ok(&["stats", "-h"])
            .contains("total bytes      5.1 MiB")
    );
    assert!(env.ok(&["stats", "--help"]).contains("--human-readable"));
}

/// `ls -h` (sizes as `ls -h`), `ls -1` (paths only), `ls -R` (= `-r`), and
/// `--help` still there with `-h` taken.
#[test]
fn ls_human_sizes_names_only_and_recursive_alias() {
    let env = Env::new();
    for (path, size) in [
        ("/d/a", 512),
        ("/d/b", 1536),
        ("/d/sub/c", 3 * 1024 * 1024 + 1),
        ("/d/sub/deeper/e", 1),
    ] {
        put_sized(&env, path, size);
    }
    let human = env.ok(&["ls", "-h", "/d"]);
    let sizes: Vec<String> = human.lines().map(|l| l[..12].trim().to_string()).collect();
    assert_eq!(sizes, ["-", "512 B", "1.5 KiB"], "{human}");
    let long = env.ok(&["ls", "--human-readable", "-r", "/d/sub"]);
    assert!(long.contains("3.1 MiB") && long.contains("1 B"), "{long}");
    // JSON keeps sizes in bytes.
    assert_eq!(env.json(&["ls", "-h", "/d"])["items"][1]["size"], 1536);

    assert_eq!(env.ok(&["ls", "-1", "/d"]), "/d/sub/\n/d/a\n/d/b\n");
    assert_eq!(
        env.ok(&["ls", "-1", "-R", "/d"]),
        "/d/a\n/d/b\n/d/sub/c\n/d/sub/deeper/e\n"
    );
    assert_eq!(env.ok(&["ls", "-R", "/d"]), env.ok(&["ls", "-r", "/d"]));
    // With a limit, the cursor goes to stderr: stdout stays a list of paths.
    let page = env.run(&["ls", "-1", "-r", "/d", "--limit", "2"]);
    assert!(page.status.success());
    assert_eq!(String::from_utf8(page.stdout).unwrap(), "/d/a\n/d/b\n");
    assert!(
        String::from_utf8(page.stderr)
            .unwrap()
            .contains("more: --cursor ")
    );

    let help = env.ok(&["ls", "--help"]);
    assert!(
        help.contains("-h, --human-readable") && help.contains("--help"),
        "{help}"
    );
}
