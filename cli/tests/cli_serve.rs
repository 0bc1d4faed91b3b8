//! `nexus serve` as a process on loopback, with the throwaway PostgreSQL,
//! and `nexus sync --with http://...` (once, and `--watch`) / `push` /
//! `pull` from stores in files: the server killed mid-push and restarted,
//! the clients retry and converge, nothing doubled; tokens never printed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{nexus, nexus_in, ok, paths, put, rt};
use serde_json::Value;

mod common;

const TOKEN: &str = "tok-of-the-default-tenant-0123456789";

/// A running `nexus serve`: its URL and its log file.
struct Served {
    child: Child,
    url: String,
    log: PathBuf,
}

fn serve(db_url: &str, tokens: &Path, listen: &str, log: PathBuf) -> Served {
    let mut command = nexus(db_url, &["serve", "--listen", listen, "--tokens"]);
    command.arg(tokens);
    start(command, log)
}

/// Starts `command` (a `nexus serve`), its stderr into `log`, and waits for
/// the line that says where it listens.
fn start(mut command: Command, log: PathBuf) -> Served {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| {
            panic!(
                "serve printed {line:?}; log: {}",
                std::fs::read_to_string(&log).unwrap()
            )
        })
        .to_string();
    Served { child, url, log }
}

/// `sync --with` until both stores list the same paths (the feed may end
/// short of a transaction still running elsewhere in the cluster).
fn converge(a: &Path, b: &Path, url: &str) -> Vec<String> {
    for _ in 0..100 {
        for db in [a, b] {
            ok(nexus(db, &["sync", "--with", url, "--token", TOKEN])
                .output()
                .unwrap());
        }
        let (la, lb) = (paths(a), paths(b));
        if la == lb {
            return la;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the stores did not converge");
}

#[test]
fn stores_sync_through_nexus_serve() {
    let rt = rt();
    let db = rt.block_on(nexus_tests::pg::database("cli_serve"));
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(TOKEN.as_bytes()));
    std::fs::write(&tokens, format!("default {hash}\n")).unwrap();
    let mut server = serve(
        &db.url,
        &tokens,
        "127.0.0.1:0",
        dir.path().join("serve1.log"),
    );
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    for (db, who) in [(&a, "a"), (&b, "b")] {
        for (path, etag) in [
            ("/shared.txt", format!("from-{who}")),
            (&*format!("/{who}.txt"), who.to_string()),
        ] {
            put(db, path, &etag);
        }
    }
    let text = ok(
        nexus(&a, &["sync", "--with", &server.url, "--token", TOKEN])
            .output()
            .unwrap(),
    );
    assert!(
        text.contains(&format!("pushed into {}", server.url)),
        "{text}"
    );
    let v: Value = serde_json::from_str(&ok(nexus(&b, &["--json", "sync", "--with", &server.url])
        .env("NEXUS_TOKEN", TOKEN)
        .output()
        .unwrap()))
    .unwrap();
    assert_eq!(v["conflicts"].as_array().unwrap().len(), 1, "{v}");
    let both = converge(&a, &b, &server.url);
    assert_eq!(both.len(), 4, "{both:?}");

    // A new store pulls through the server (its summary, then `--json` of
    // a pull with nothing new), then keeps syncing with `--watch`: its file
    // reaches the others, another store's file comes in, and an interrupt
    // ends it cleanly.
    let c = dir.path().join("c.db");
    let text = ok(
        nexus(&c, &["pull", "--from", &server.url, "--token", TOKEN])
            .output()
            .unwrap(),
    );
    assert!(
        text.contains(&format!("pulled from {}: position 0 -> ", server.url)),
        "{text}"
    );
    assert_eq!(paths(&c), both);
    let v: Value = serde_json::from_str(&ok(nexus(
        &c,
        &["--json", "pull", "--from", &server.url, "--token", TOKEN],
    )
    .output()
    .unwrap()))
    .unwrap();
    assert_eq!(
        (v["pages"].as_u64(), v["files"].as_u64()),
        (Some(0), Some(0)),
        "{v}"
    );
    put(&c, "/from-c.txt", "c");
    let mut watching = nexus(
        &c,
        &[
            "sync",
            "--with",
            &server.url,
            "--token",
            TOKEN,
            "--watch",
            "--interval",
            "0.3",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let (lines, rounds) = std::sync::mpsc::channel::<String>();
    let stdout = watching.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut seen = Vec::new();
    for _ in 0..100 {
        ok(
            nexus(&b, &["sync", "--with", &server.url, "--token", TOKEN])
                .output()
                .unwrap(),
        );
        seen = paths(&b);
        if seen.iter().any(|p| p == "/from-c.txt") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        seen.iter().any(|p| p == "/from-c.txt"),
        "the watch pushed: {seen:?}"
    );
    put(&b, "/from-b.txt", "b");
    ok(nexus(&b, &["push", "--to", &server.url, "--token", TOKEN])
        .output()
        .unwrap());
    // Two pulls of the watch after that push: the second began after it.
    rounds.try_iter().for_each(drop);
    let mut pulls = 0;
    while pulls < 2 {
        let line = rounds
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the watch kept syncing");
        pulls += usize::from(line.starts_with("pulled from"));
    }
    let pid = watching.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = watching.wait().unwrap();
    assert!(
        status.success(),
        "an interrupt ends the watch cleanly: {status:?}"
    );
    assert!(
        paths(&c).iter().any(|p| p == "/from-b.txt"),
        "{:?}",
        paths(&c)
    );
    assert_eq!(converge(&a, &b, &server.url).len(), 6);

    // No token, a wrong one: refused, and the token is not printed.
    let out = nexus(&a, &["pull", "--from", &server.url])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token"));
    let wrong = "wrong-token-that-must-not-show";
    let out = nexus(&a, &["push", "--to", &server.url, "--token", wrong])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not known") && !err.contains(wrong), "{err}");

    // Many files pushed in small windows; the server is killed mid-push
    // and started again on the same port: the push retries and completes,
    // nothing doubled.
    let folder = dir.path().join("folder");
    std::fs::create_dir(&folder).unwrap();
    for i in 0..400 {
        std::fs::write(folder.join(format!("f{i:04}.txt")), format!("{i}")).unwrap();
    }
    ok(nexus(&a, &["scan"]).arg(&folder).output().unwrap());
    let addr = server.url.trim_start_matches("http://").to_string();
    let pushing = nexus(
        &a,
        &[
            "push",
            "--to",
            &server.url,
            "--token",
            TOKEN,
            "--window",
            "5",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let log1 = std::fs::read_to_string(&server.log).unwrap();
    server = serve(&db.url, &tokens, &addr, dir.path().join("serve2.log"));
    let out = pushing.wait_with_output().unwrap();
    if !out.status.success() {
        // Given up before the restart: the next run resumes.
        ok(nexus(&a, &["push", "--to", &server.url, "--token", TOKEN])
            .output()
            .unwrap());
    }
    let files = rt.block_on(async {
        let c = nexus_tests::pg::connect(&db.url).await;
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM file_paths WHERE deleted_at IS NULL",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        n
    });
    assert_eq!(files as usize, paths(&a).len(), "every file once");
    // A change after the restart: the restarted server's log has a push
    // with rows too, whether the one above was cut or had finished.
    put(&b, "/after-restart.txt", "r");
    let both = converge(&a, &b, &server.url);
    assert_eq!(both.len(), 407);

    // Graceful stop on SIGTERM; the logs have one line per request and no token.
    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let log2 = std::fs::read_to_string(&server.log).unwrap();
    for log in [&log1, &log2] {
        assert!(log.contains("answered"), "{log}");
        // One line per request (the rest are warnings or errors): its
        // answer, with what a push applied.
        for line in log
            .lines()
            .filter(|l| l.contains("request{") && l.contains(" INFO "))
        {
            assert!(line.contains("answered"), "{line}");
        }
        assert!(!log.contains(TOKEN) && !log.contains(wrong));
        assert!(!log.contains(&hash));
    }
    assert!(log1.contains("status=401"), "{log1}");
    assert!(
        log2.lines().any(|l| l.contains("path=/v1/push")
            && l.contains("rows=")
            && l.contains("status=200")),
        "{log2}"
    );
}

/// `nexus serve` with no flags takes its settings from `nexus.toml`: the
/// database from `[database]`, the address, the tokens file and the body
/// limit from `[serve]` (a push larger than that limit goes in parts).
#[test]
fn serve_takes_its_settings_from_nexus_toml() {
    let rt = rt();
    let db = rt.block_on(nexus_tests::pg::database("cli_serve_toml"));
    let dir = tempfile::tempdir().unwrap();
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(TOKEN.as_bytes()));
    std::fs::write(dir.path().join("tokens"), format!("default {hash}\n")).unwrap();
    std::fs::write(
        dir.path().join("nexus.toml"),
        format!(
            "[database]\nurl = \"{}\"\n\n[serve]\nlisten = \"127.0.0.1:0\"\ntokens = \"tokens\"\nmax_body_bytes = 4096\nmax_applies = 3\nmax_applies_per_tenant = 1\n",
            db.url
        ),
    )
    .unwrap();
    let mut server = start(
        {
            let mut c = nexus_in(dir.path());
            c.arg("serve");
            c
        },
        dir.path().join("serve.log"),
    );
    let folder = dir.path().join("folder");
    std::fs::create_dir(&folder).unwrap();
    for i in 0..100 {
        std::fs::write(folder.join(format!("f{i:03}.txt")), format!("{i}")).unwrap();
    }
    let store = dir.path().join("store.db");
    ok(nexus(&store, &["scan"]).arg(&folder).output().unwrap());
    let out = nexus(
        &store,
        &["push", "--to", &server.url, "--token", "not-this-one"],
    )
    .output()
    .unwrap();
    assert!(!out.status.success(), "a token not in the file is refused");
    ok(
        nexus(&store, &["push", "--to", &server.url, "--token", TOKEN])
            .output()
            .unwrap(),
    );
    let copy = dir.path().join("copy.db");
    ok(
        nexus(&copy, &["pull", "--from", &server.url, "--token", TOKEN])
            .output()
            .unwrap(),
    );
    assert_eq!(paths(&copy), paths(&store));
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        log.contains("path=/v1/push/part"),
        "the 100-file transaction went in parts under the 4 KiB limit: {log}"
    );
}
