//! The sync server (`nexus serve`) under load, side by side in one run with
//! the same work done directly against PostgreSQL:
//!
//! 1. `--clients N` (default 50) stores each repeat for `--seconds S`
//!    (default 20): write 1 to 10 files, push, pull. Changes (files) per
//!    second over all clients, and p50/p99 latency of a push and of a pull,
//!    through the server and directly (`postgresql://`), all clients in one
//!    tenant: every client pulls every other client's changes. Then through
//!    the server with one tenant per client (each pulls only its own
//!    tenant's changes): the server's own cost, without the fan-out. Then
//!    the same by light clients (`light_load`): the same requests, of
//!    change files the clients' stores wrote and exported before the run,
//!    answers read but not applied: what the server and PostgreSQL sustain
//!    when the clients' stores do not share their cores.
//! 2. `--files F` (default 1,000,000; 0 skips it): the first pull of F files
//!    into an empty file store through the server, against the direct pull
//!    (`nexus pull --from postgresql://`, a snapshot) of the same database.
//! 3. The same push pulled through the feed by stores that had pulled
//!    before it (one transaction larger than a page, in parts), through the
//!    server and directly.
//!
//! 4. `--one-transaction T` (default 200,000; 0 skips it): a store that
//!    pushed before puts T files in one `put_batch` (one transaction, larger
//!    than the server's body limit of 64 MiB from about 150,000 files) and
//!    pushes it, through the server (in parts, applied whole by the last
//!    request, which must finish within the request timeout) and directly
//!    (one window). The figure says how many files of one transaction fit
//!    in the server's 60 s request timeout here.
//!
//! `cargo run --release -p nexus-bench --bin nexus-serve-bench -- [--clients N] [--seconds S] [--files F] [--one-transaction T] [--pool P] [--applies A] [--all-applies A]`
//! (`--pool`: the server's connections, 16; `--applies`: concurrent applies
//! per tenant, 8; `--all-applies`: over all tenants, 8).
//! The server runs in a child process (this binary with `--server-child`)
//! on 127.0.0.1 (HS256 tokens), so that its memory is measured apart from
//! the clients' (its peak, and its resident memory through its run); PostgreSQL is a throwaway cluster started durable (fsync and
//! synchronous commit on, as a real server), or `NEXUS_TEST_DATABASE_URL`.

use std::time::{Duration, Instant};

use nexus_core::{NewFile, Store};
use nexus_sync::{Remote, SyncOptions, pull, push};
use nexus_tests::serve::{TestServer, hs256, token};

use nexus_bench::{arg, bench_file, generate, peak_rss_kib, rss_kib};

/// The server of a run: a child process (this binary with
/// `--server-child`, on 127.0.0.1, with `--pool` connections and
/// `--applies` applies at once per tenant), so that its memory is its own.
struct ServerProcess {
    child: std::process::Child,
    url: String,
}

/// What a server child reports when it stops: its peak resident memory
/// and its resident memory sampled every [`SAMPLE`], in KiB.
struct ServerMemory {
    peak_kib: u64,
    samples_kib: Vec<u64>,
}

const SAMPLE: Duration = Duration::from_millis(250);

impl ServerProcess {
    fn start(url: &str) -> ServerProcess {
        let (pool, applies) = (
            arg("--pool", 16).to_string(),
            arg("--applies", 8).to_string(),
        );
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--server-child",
                url,
                "--pool",
                &pool,
                "--applies",
                &applies,
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // One byte at a time, so that nothing after the line is read here.
        let mut line = Vec::new();
        let out = child.stdout.as_mut().unwrap();
        let mut byte = [0u8];
        while std::io::Read::read(out, &mut byte).unwrap() == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        let line = String::from_utf8(line).unwrap();
        assert!(
            line.starts_with("http://"),
            "the server child said {line:?}"
        );
        ServerProcess { child, url: line }
    }

    /// The remote of a store that syncs through it, as `tenant`.
    fn remote(&self, tenant: &str) -> Remote {
        Remote::parse(&self.url, Some(token(tenant, 3600))).unwrap()
    }

    /// Stops it gracefully (by closing its stdin) and returns its memory.
    fn stop(mut self) -> ServerMemory {
        drop(self.child.stdin.take());
        let out = self.child.wait_with_output().unwrap();
        assert!(out.status.success(), "the server child failed");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        ServerMemory {
            peak_kib: v["peak_rss_kib"].as_u64().unwrap(),
            samples_kib: v["rss_kib"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|x| x.as_u64())
                .collect(),
        }
    }
}

impl ServerMemory {
    /// Its peak, and its resident memory at a quarter, half, three quarters
    /// and the end of the server's life, in MiB.
    fn line(&self) -> String {
        let at = |f: f64| match self.samples_kib.len() {
            0 => 0,
            n => self.samples_kib[((n - 1) as f64 * f).round() as usize] / 1024,
        };
        format!(
            "server process memory: peak {} MiB; resident at 1/4, 1/2, 3/4 and the end of its run: {} / {} / {} / {} MiB",
            self.peak_kib / 1024,
            at(0.25),
            at(0.5),
            at(0.75),
            at(1.0)
        )
    }
}

/// The child mode: a server for the database `url` until stdin closes;
/// prints its address first and its memory (JSON) last.
fn server_child(url: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = TestServer::start_with(
            url,
            |c| {
                c.pool_size = arg("--pool", 16);
                c.max_applies_per_tenant = arg("--applies", 8);
                c.max_applies = arg("--all-applies", 8);
            },
            hs256(),
        )
        .await;
        println!("{}", server.url);
        let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sampler = {
            let samples = samples.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(SAMPLE);
                loop {
                    tick.tick().await;
                    samples.lock().unwrap().push(rss_kib());
                }
            })
        };
        // Until the parent closes stdin.
        tokio::task::spawn_blocking(|| std::io::read_to_string(std::io::stdin()))
            .await
            .unwrap()
            .unwrap();
        server.stop().await;
        sampler.abort();
        let samples = samples.lock().unwrap().clone();
        println!(
            "{}",
            serde_json::json!({"peak_rss_kib": peak_rss_kib(), "rss_kib": samples})
        );
    });
}

/// Where the clients of a run sync: through `server`, as `tenant`, or
/// without one directly to the database `url`.
fn remote_of(server: Option<&ServerProcess>, url: &str, tenant: &str) -> Remote {
    match server {
        Some(server) => server.remote(tenant),
        None => Remote::parse(url, None).unwrap(),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Load {
    changes_per_s: f64,
    push: (f64, f64),
    pull: (f64, f64),
    rounds: usize,
}

impl Load {
    /// The load of a run that took `seconds`: every push's and pull's
    /// latency in ms, and the files pushed.
    fn of(mut pushes: Vec<f64>, mut pulls: Vec<f64>, files: usize, seconds: f64) -> Load {
        pushes.sort_by(f64::total_cmp);
        pulls.sort_by(f64::total_cmp);
        Load {
            changes_per_s: files as f64 / seconds,
            push: (percentile(&pushes, 0.5), percentile(&pushes, 0.99)),
            pull: (percentile(&pulls, 0.5), percentile(&pulls, 0.99)),
            rounds: pushes.len(),
        }
    }

    /// Changes/s, rounds, and push and pull latency, as a line tells them.
    fn line(&self) -> String {
        format!(
            "{:>7.0} changes/s, {} rounds; push p50 {:.1} ms p99 {:.1} ms; pull p50 {:.1} ms p99 {:.1} ms",
            self.changes_per_s, self.rounds, self.push.0, self.push.1, self.pull.0, self.pull.1
        )
    }
}

/// The files (1 to 10) client `c` writes in its round `round`.
fn round_files(c: usize, round: usize) -> Vec<NewFile> {
    let n = 1 + (c * 7 + round * 3) % 10;
    (0..n)
        .map(|i| {
            NewFile::new(format!("/c{c:03}/r{round:06}-{i}"), "s3", "k", 1)
                .etag(format!("{c}-{round}-{i}"))
        })
        .collect()
}

/// A light client's requests (see [`light_load`]): one store's change
/// files, one per round, prepared before the run.
struct Prepared {
    tenant: String,
    source: String,
    files: Vec<nexus_core::ChangeFile>,
}

/// Client `c`'s first `rounds` rounds as [`load`]'s client `c` writes
/// them, each exported as the change file its push would send.
async fn prepare(c: usize, tenant: String, rounds: usize) -> Prepared {
    let store = Store::memory().await.unwrap().with_tenant(&tenant).unwrap();
    let source = store.snapshot().await.unwrap().source_id().to_string();
    let mut files = Vec::with_capacity(rounds);
    let mut after = 0;
    for round in 0..rounds {
        store.put_batch(&round_files(c, round)).await.unwrap();
        let file = store.export_changes(after).await.unwrap();
        after = file.changes.through;
        files.push(file);
    }
    Prepared {
        tenant,
        source,
        files,
    }
}

/// [`load`] through `server` with one tenant per client, by light clients:
/// each sends the requests a store's sync sends (its state, then per
/// round a push of the round's change file from the position it recorded,
/// and pulls from that position until caught up, by pages of a store's
/// size: `protocol::push_requests`, `protocol::pull_path`) and reads the
/// answers, but its change files were
/// written and exported before the run, and it applies nothing. The
/// server's and PostgreSQL's work of [`load`]'s rounds, with little of
/// the clients' on the same cores. `None` when a client ran out of
/// prepared rounds before the end.
async fn light_load(server: &ServerProcess, clients: usize, seconds: u64) -> Option<Load> {
    use nexus_core::protocol;
    // Enough for 2,000 rounds a second over all the clients (the light
    // run makes about 1,000 here with 50 clients).
    let rounds = (seconds as usize * (2_000 / clients.max(1)).max(40)).max(50);
    let mut prepared = Vec::new();
    for c in 0..clients {
        prepared.push(prepare(c, format!("t{c}"), rounds).await);
    }
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in prepared {
        let base_url = server.url.clone();
        let bearer = format!("Bearer {}", token(&p.tenant, 3600));
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let call = |method: reqwest::Method, path: &str, body: Option<Vec<u8>>| {
                let mut request = http
                    .request(method, format!("{base_url}{path}"))
                    .header("authorization", &bearer)
                    .header(protocol::PROTOCOL_HEADER, protocol::PROTOCOL_VERSION);
                if let Some(body) = body {
                    request = request
                        .header("content-type", "application/json")
                        .body(body);
                }
                async move {
                    let answer = request.send().await.unwrap();
                    let status = answer.status();
                    let bytes = answer.bytes().await.unwrap();
                    assert!(status.is_success(), "{status}: {bytes:?}");
                    bytes
                }
            };
            let state: protocol::State = serde_json::from_slice(
                &call(reqwest::Method::GET, &protocol::state_path(&p.source), None).await,
            )
            .unwrap();
            let hub = state.checks_hub.then_some(state.hub_id.as_str());
            // Pages of the size a store's sync asks for.
            let window = SyncOptions::default().window_rows;
            // The position as a store records it (the `base` of its pushes,
            // where its pulls start): an idle page is not recorded.
            let (mut pushes, mut pulls, mut files, mut position) = (Vec::new(), Vec::new(), 0, 0);
            let mut ran_out = true;
            for file in &p.files {
                if Instant::now() >= until {
                    ran_out = false;
                    break;
                }
                let t = Instant::now();
                for request in protocol::push_requests(file, position, &state) {
                    let answer =
                        call(reqwest::Method::POST, &request.path, Some(request.body)).await;
                    serde_json::from_slice::<serde_json::Value>(&answer).unwrap();
                }
                pushes.push(t.elapsed().as_secs_f64() * 1000.0);
                files += file.changes.files.len();
                let t = Instant::now();
                let mut at = position;
                loop {
                    let path = protocol::pull_path(&p.source, at, None, window, hub);
                    let page: protocol::Pulled =
                        serde_json::from_slice(&call(reqwest::Method::GET, &path, None).await)
                            .unwrap();
                    assert!(page.within.is_none(), "a page of one small push each");
                    at = page.changes.through;
                    if !page.changes.is_empty() || page.left_out > 0 {
                        position = at;
                    }
                    if page.caught_up {
                        break;
                    }
                }
                pulls.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            (pushes, pulls, files, ran_out)
        }));
    }
    let (mut pushes, mut pulls, mut files, mut ran_out) = (Vec::new(), Vec::new(), 0, false);
    for t in tasks {
        let (a, b, f, out) = t.await.unwrap();
        pushes.extend(a);
        pulls.extend(b);
        files += f;
        ran_out |= out;
    }
    let elapsed = started.elapsed().as_secs_f64();
    (!ran_out).then(|| Load::of(pushes, pulls, files, elapsed))
}

/// `clients` stores write, push and pull for `seconds`, client `c` in
/// tenant `t{c % tenants}` through `remote(tenant)`.
async fn load(
    remote: impl Fn(&str) -> Remote,
    clients: usize,
    tenants: usize,
    seconds: u64,
) -> Load {
    let mut tasks = Vec::new();
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    for c in 0..clients {
        let tenant = if tenants == 1 {
            "default".to_string()
        } else {
            format!("t{}", c % tenants)
        };
        let remote = remote(&tenant);
        tasks.push(tokio::spawn(async move {
            let store = Store::memory().await.unwrap().with_tenant(&tenant).unwrap();
            let options = SyncOptions::default();
            let (mut pushes, mut pulls, mut files) = (Vec::new(), Vec::new(), 0usize);
            let mut round = 0usize;
            while Instant::now() < until {
                let batch = round_files(c, round);
                store.put_batch(&batch).await.unwrap();
                files += batch.len();
                let t = Instant::now();
                push(&store, &remote, &options).await.unwrap();
                pushes.push(t.elapsed().as_secs_f64() * 1000.0);
                let t = Instant::now();
                pull(&store, &remote, &options).await.unwrap();
                pulls.push(t.elapsed().as_secs_f64() * 1000.0);
                round += 1;
            }
            (pushes, pulls, files)
        }));
    }
    let (mut pushes, mut pulls, mut files) = (Vec::new(), Vec::new(), 0);
    for t in tasks {
        let (a, b, f) = t.await.unwrap();
        pushes.extend(a);
        pulls.extend(b);
        files += f;
    }
    Load::of(pushes, pulls, files, started.elapsed().as_secs_f64())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--server-child") {
        return server_child(&args[2]);
    }
    let clients = arg("--clients", 50);
    let seconds = arg("--seconds", 20) as u64;
    let files = arg("--files", 1_000_000);
    let one_transaction = arg("--one-transaction", 200_000);
    nexus_tests::pg::durable();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // 1. Many small clients, through the server and directly.
        let mut rows = Vec::new();
        for (via, tenants) in [("server", 1), ("direct", 1), ("server", clients)] {
            let db = nexus_tests::pg::database(&format!("bench_serve_{via}_{tenants}")).await;
            let url = format!("{}?sslmode=disable", db.url);
            // Only the scenarios through the server start one (an idle
            // server would still share the cores with the direct clients).
            let server = match via {
                "server" => Some(ServerProcess::start(&url)),
                _ => None,
            };
            let remote = |tenant: &str| remote_of(server.as_ref(), &url, tenant);
            let l = load(remote, clients, tenants, seconds).await;
            println!("{clients} clients in {tenants} tenant(s), {via:>6}: {}", l.line());
            rows.push((via, l));
            if let Some(server) = server {
                println!("  {}", server.stop().line());
            }
        }
        // The last run again, by light clients.
        if clients > 0 {
            let db = nexus_tests::pg::database(&format!("bench_serve_light_{clients}")).await;
            let url = format!("{}?sslmode=disable", db.url);
            let server = ServerProcess::start(&url);
            match light_load(&server, clients, seconds).await {
                Some(l) => println!(
                    "{clients} light clients in {clients} tenant(s), server: {} (full stores: {:.2}x)",
                    l.line(),
                    l.changes_per_s / rows[2].1.changes_per_s
                ),
                None => println!("{clients} light clients: a client ran out of prepared rounds"),
            }
            println!("  {}", server.stop().line());
        }
        println!(
            "one tenant, server / direct: changes/s {:.2}x; peak memory of the clients' process {} MiB",
            rows[0].1.changes_per_s / rows[1].1.changes_per_s,
            peak_rss_kib() / 1024
        );

        // 4. (first: it needs neither of the big databases below) One
        // transaction larger than a request body.
        if one_transaction > 0 {
            big_transaction(one_transaction).await;
        }

        // 2. The first pull of many files: through the server and directly.
        if files == 0 {
            return;
        }
        let db = nexus_tests::pg::database("bench_serve_pull").await;
        let url = format!("{}?sslmode=disable", db.url);
        let dir = tempfile::tempdir().unwrap();
        let server = ServerProcess::start(&url);
        let remotes = [
            ("direct", Remote::parse(&url, None).unwrap()),
            ("server", server.remote("default")),
        ];
        // 3. (set up first) Stores that pulled before the bulk push: it
        // reaches them through the feed, one transaction in parts.
        let mut early = Vec::new();
        for (name, remote) in &remotes {
            let s = Store::open(dir.path().join(format!("{name}-early.db")))
                .await
                .unwrap();
            s.put(nexus_core::NewFile::new(format!("/early/{name}"), "local", "p", 1))
                .await
                .unwrap();
            nexus_sync::sync_with(&s, remote, &SyncOptions::default())
                .await
                .unwrap();
            early.push(s);
        }
        let source = Store::open(dir.path().join("source.db")).await.unwrap();
        generate(&source, files).await;
        push(&source, &Remote::parse(&url, None).unwrap(), &SyncOptions::default())
            .await
            .unwrap();
        // What autovacuum does after a bulk load, done before the timed
        // pulls: otherwise it starts during one of them (the second, through
        // the server) and shares the disk and cores with it.
        nexus_tests::pg::connect(&db.url)
            .await
            .batch_execute("VACUUM ANALYZE")
            .await
            .unwrap();
        let mut seconds_of = Vec::new();
        for (name, remote) in &remotes {
            let store = Store::open(dir.path().join(format!("{name}.db"))).await.unwrap();
            let t = Instant::now();
            let r = pull(&store, remote, &SyncOptions::default()).await.unwrap();
            let s = t.elapsed().as_secs_f64();
            println!(
                "first pull of {files} files, {name:>6}: {s:.1}s, {} rows, {:.0} rows/s{}",
                r.rows(),
                r.rows() as f64 / s,
                if r.bulk { " (snapshot)" } else { " (feed pages)" }
            );
            seconds_of.push(s);
        }
        println!("server / direct: time {:.2}x", seconds_of[1] / seconds_of[0]);

        // 3. The same push pulled by the stores that had pulled before it.
        let mut seconds_of = Vec::new();
        for ((name, remote), store) in remotes.iter().zip(&early) {
            let t = Instant::now();
            let r = pull(store, remote, &SyncOptions::default()).await.unwrap();
            let s = t.elapsed().as_secs_f64();
            println!(
                "the push of {files} files into a store that had pulled, {name:>6}: {s:.1}s, {} rows, {:.0} rows/s, {} pages",
                r.rows(),
                r.rows() as f64 / s,
                r.pages
            );
            seconds_of.push(s);
        }
        println!("server / direct: time {:.2}x", seconds_of[1] / seconds_of[0]);
        println!("  {}", server.stop().line());
    });
}

/// Part 4: a push of one transaction of `files` files, through the server
/// and directly, each into a database of its own.
async fn big_transaction(files: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut seconds_of = Vec::new();
    for via in ["direct", "server"] {
        let db = nexus_tests::pg::database(&format!("bench_serve_one_tx_{via}")).await;
        let url = format!("{}?sslmode=disable", db.url);
        let server = match via {
            "server" => Some(ServerProcess::start(&url)),
            _ => None,
        };
        let remote = remote_of(server.as_ref(), &url, "default");
        let store = Store::open(dir.path().join(format!("{via}.db")))
            .await
            .unwrap();
        // Pushed once before, so that the big one is an incremental push
        // (a first push from a store goes by COPY) on both paths.
        store
            .put(NewFile::new("/first", "local", "p", 1))
            .await
            .unwrap();
        push(&store, &remote, &SyncOptions::default())
            .await
            .unwrap();
        let batch: Vec<NewFile> = (0..files).map(|i| bench_file("/one-tx", i)).collect();
        store.put_batch(&batch).await.unwrap();
        drop(batch);
        let t = Instant::now();
        let r = push(&store, &remote, &SyncOptions::default())
            .await
            .unwrap();
        let s = t.elapsed().as_secs_f64();
        println!(
            "one transaction of {files} files pushed, {via:>6}: {s:.1}s, {} rows, {:.0} rows/s, {} attempt(s)",
            r.rows(),
            r.rows() as f64 / s,
            r.attempts
        );
        seconds_of.push(s);
        if let Some(server) = server {
            println!("  {}", server.stop().line());
        }
    }
    println!(
        "server / direct: time {:.2}x; at the server's rate (parts sent and the whole applied), about {:.0} files of one transaction fit in its 60 s request timeout",
        seconds_of[1] / seconds_of[0],
        files as f64 / seconds_of[1] * 60.0
    );
}
