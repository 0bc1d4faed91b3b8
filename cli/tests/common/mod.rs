//! What the command-line tests share: running `nexus` with a clean
//! environment, and reading what it printed. (Each test file uses some.)
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// The `nexus` binary, run in `dir`, with none of the settings it reads
/// from the environment inherited (a developer's `NEXUS_DB` or token must
/// not reach a test).
pub fn nexus_in(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nexus"));
    c.current_dir(dir);
    for var in [
        "NEXUS_DB",
        "NEXUS_TENANT",
        "NEXUS_DATABASE_URL",
        "NEXUS_TOKEN",
        "NEXUS_JWT_SECRET",
    ] {
        c.env_remove(var);
    }
    c
}

/// `nexus --db DB ARGS...` (a file or a `postgresql://` URL).
pub fn nexus(db: impl AsRef<OsStr>, args: &[&str]) -> Command {
    let mut c = nexus_in(Path::new("."));
    c.arg("--db").arg(db).args(args);
    c
}

/// Expects success; returns stdout.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Expects success; returns stdout as JSON.
pub fn ok_json(out: Output) -> Value {
    serde_json::from_str(&ok(out)).unwrap()
}

/// Expects failure with exit code 1 and one line on stderr; returns it.
pub fn err(out: Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr:?}");
    stderr
}

/// Runs `c` and closes its stdout after reading `lines` lines (`| head -n
/// LINES`; 0 closes it before the command can print).
pub fn with_stdout_closed(c: &mut Command, lines: usize) -> Output {
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    if lines > 0 {
        let mut reader = std::io::BufReader::new(stdout);
        for _ in 0..lines {
            let mut line = String::new();
            assert!(reader.read_line(&mut line).unwrap() > 0, "{c:?}: output");
        }
    } else {
        drop(stdout);
    }
    // The pipe's only read end is closed here (or was, with the reader).
    child.wait_with_output().unwrap()
}

/// A runtime for the tests' own PostgreSQL connections.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Every live file of the store at `db`, as `ls -r --json` shows them.
pub fn listing(db: impl AsRef<OsStr>) -> Vec<Value> {
    ok_json(nexus(db, &["--json", "ls", "-r", "/"]).output().unwrap())["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// The paths of [`listing`].
pub fn paths(db: impl AsRef<OsStr>) -> Vec<String> {
    listing(db)
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect()
}

/// `nexus put PATH` into the store at `db` (size 5, `etag`).
pub fn put(db: &Path, path: &str, etag: &str) {
    ok(nexus(
        db,
        &[
            "put",
            path,
            "--backend",
            "s3",
            "--physical",
            path,
            "--size",
            "5",
            "--etag",
            etag,
        ],
    )
    .output()
    .unwrap());
}
