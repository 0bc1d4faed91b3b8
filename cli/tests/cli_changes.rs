//! `nexus export-changes`, `import-changes` and `sync --from-changes` as
//! processes: native round trips and a real PostgreSQL.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{err, ok, ok_json};
use serde_json::Value;

mod common;

fn nexus(dir: &Path, args: &[&str]) -> Command {
    let mut c = common::nexus_in(dir);
    c.args(args);
    c
}

fn run(dir: &Path, args: &[&str]) -> Output {
    nexus(dir, args).output().unwrap()
}

fn with_stdin(dir: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut child = nexus(dir, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn put(dir: &Path, db: &str, path: &str) {
    ok(run(
        dir,
        &[
            "--db",
            db,
            "put",
            path,
            "--backend",
            "l",
            "--physical",
            "p",
            "--size",
            "1",
        ],
    ));
}

fn listing(dir: &Path, db: &str) -> Vec<Value> {
    common::listing(dir.join(db))
}

#[test]
fn export_then_import_between_embedded_stores() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for i in 0..5 {
        put(d, "a.db", &format!("/f/{i}"));
    }
    ok(run(
        d,
        &["--db", "a.db", "meta", "set", "/f/1", "k", "[1,2]"],
    ));
    let summary = ok_json(run(
        d,
        &["--db", "a.db", "export-changes", "-o", "one.json", "--json"],
    ));
    assert_eq!(summary["after"], 0);
    assert_eq!(summary["files"], 5);
    assert_eq!(summary["metadata"], 1);
    let through = summary["through"].as_i64().unwrap();

    let report = ok_json(run(
        d,
        &["--db", "b.db", "import-changes", "one.json", "--json"],
    ));
    assert_eq!(report["skipped"], false);
    assert_eq!(report["files"], 5);
    assert_eq!(listing(d, "a.db"), listing(d, "b.db"));
    let again = ok(run(d, &["--db", "b.db", "import-changes", "one.json"]));
    assert!(again.contains("already applied"), "{again}");

    // A later file through a pipe: export to stdout, import from stdin.
    ok(run(d, &["--db", "a.db", "rm", "/f/0"]));
    ok(run(d, &["--db", "a.db", "mv", "/f/2", "/g/2"]));
    let bytes = nexus(
        d,
        &[
            "--db",
            "a.db",
            "export-changes",
            "--since",
            &through.to_string(),
        ],
    )
    .output()
    .unwrap();
    assert!(bytes.status.success());
    let text = ok(with_stdin(
        d,
        &["--db", "b.db", "import-changes", "-"],
        &bytes.stdout,
    ));
    assert!(text.contains("imported <stdin>"), "{text}");
    assert_eq!(listing(d, "a.db"), listing(d, "b.db"));

    // Errors: one line, exit 1, naming the file and what is wrong.
    std::fs::write(
        d.join("bad.json"),
        b"{\"format\": \"nexus-changes\",\n oops}",
    )
    .unwrap();
    let e = err(run(d, &["--db", "b.db", "import-changes", "bad.json"]));
    assert!(
        e.contains("bad.json") && e.contains("not valid JSON") && e.contains("line 2"),
        "{e}"
    );
    let e = err(with_stdin(
        d,
        &["--db", "b.db", "import-changes", "-"],
        br#"{"format":"nexus-changes","version":9}"#,
    ));
    assert!(
        e.contains("<stdin>") && e.contains("unsupported version 9"),
        "{e}"
    );
    let e = err(run(d, &["--db", "b.db", "import-changes", "missing.json"]));
    assert!(
        e.contains("cannot read the change file missing.json"),
        "{e}"
    );
    let e = err(run(d, &["--db", "a.db", "import-changes", "one.json"]));
    assert!(
        e.contains("one.json") && e.contains("this store itself"),
        "{e}"
    );
    // A gap: the second file into a fresh store.
    ok(run(
        d,
        &[
            "--db",
            "a.db",
            "export-changes",
            "--since",
            &through.to_string(),
            "-o",
            "two.json",
        ],
    ));
    let e = err(run(d, &["--db", "c.db", "import-changes", "two.json"]));
    assert!(
        e.contains("two.json")
            && e.contains(&format!("({through}, "))
            && e.contains("through change 0"),
        "{e}"
    );
    let e = err(run(
        d,
        &["--db", "a.db", "export-changes", "--since", "999"],
    ));
    assert!(e.contains("999"), "{e}");
    let e = err(run(
        d,
        &[
            "--db",
            "postgresql://u@127.0.0.1:1/x",
            "import-changes",
            "one.json",
        ],
    ));
    assert!(e.contains("nexus sync --from-changes"), "{e}");
}

#[test]
fn sync_from_changes_into_postgres() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let target = rt.block_on(nexus_tests::pg::database("cli_from_changes"));
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for i in 0..4 {
        put(d, "a.db", &format!("/f/{i}"));
    }
    ok(run(
        d,
        &["--db", "a.db", "export-changes", "-o", "one.json"],
    ));
    // No --db needed (and none is created).
    let report = ok_json(run(
        d,
        &[
            "sync",
            "--from-changes",
            "one.json",
            "--to",
            &target.url,
            "--json",
        ],
    ));
    assert!(!d.join("nexus.db").exists());
    assert_eq!(report["mode"], "incremental");
    assert_eq!(report["tables"][0]["rows"], 4);
    let verify = ok_json(run(
        d,
        &["--db", "a.db", "verify", "--json", "--to", &target.url],
    ));
    assert_eq!(verify["equal"], true);
    let again = ok(run(
        d,
        &["sync", "--from-changes", "one.json", "--to", &target.url],
    ));
    assert!(again.contains("already applied"), "{again}");

    // A normal sync continues from there; then a later file from stdin.
    ok(run(d, &["--db", "a.db", "rm", "/f/1"]));
    let s = ok_json(run(
        d,
        &["--db", "a.db", "sync", "--json", "--to", &target.url],
    ));
    assert_eq!(s["mode"], "incremental");
    let since = s["to_seq"].as_i64().unwrap().to_string();
    ok(run(d, &["--db", "a.db", "mv", "/f/2", "/g"]));
    let file = nexus(d, &["--db", "a.db", "export-changes", "--since", &since])
        .output()
        .unwrap();
    ok(with_stdin(
        d,
        &["sync", "--from-changes", "-", "--to", &target.url],
        &file.stdout,
    ));
    let verify = ok_json(run(
        d,
        &["--db", "a.db", "verify", "--json", "--to", &target.url],
    ));
    assert_eq!(verify["equal"], true);

    // Errors name the file.
    std::fs::write(d.join("bad.json"), b"[]").unwrap();
    let e = err(run(
        d,
        &["sync", "--from-changes", "bad.json", "--to", &target.url],
    ));
    assert!(
        e.contains("bad.json") && e.contains("not a change file"),
        "{e}"
    );
    ok(run(
        d,
        &[
            "--db",
            "z.db",
            "put",
            "/z",
            "--backend",
            "l",
            "--physical",
            "p",
            "--size",
            "1",
        ],
    ));
    ok(run(
        d,
        &[
            "--db",
            "z.db",
            "put",
            "/y",
            "--backend",
            "l",
            "--physical",
            "p",
            "--size",
            "1",
        ],
    ));
    ok(run(
        d,
        &[
            "--db",
            "z.db",
            "export-changes",
            "--since",
            "1",
            "-o",
            "gap.json",
        ],
    ));
    let e = err(run(
        d,
        &["sync", "--from-changes", "gap.json", "--to", &target.url],
    ));
    assert!(
        e.contains("gap.json") && e.contains("only through change 0"),
        "{e}"
    );
}
