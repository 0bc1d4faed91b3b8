//! The same workload through the embedded store and the PostgreSQL store
//! (`nexus-pg`), with 1 and with 8 concurrent clients, so that users can see
//! when to move. Reports ops/s; asserts nothing about speed.
//!
//! `cargo run --release -p nexus-bench --bin nexus-backend-bench -- [--ops N]`
//! PostgreSQL: a throwaway cluster (fsync off, like a tuned server's
//! synchronous_commit=off), or `NEXUS_TEST_DATABASE_URL`.

use std::time::Instant;

use nexus_core::{DynStore, ListOptions, NewFile, Store};

use nexus_bench::arg;

/// Runs `per_client` operations on each of `clients` threads; returns ops/s.
fn run(
    store: &DynStore,
    clients: usize,
    per_client: usize,
    op: fn(&DynStore, usize, usize),
) -> f64 {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for c in 0..clients {
            let store = store.clone();
            scope.spawn(move || {
                for i in 0..per_client {
                    op(&store, c, i);
                }
            });
        }
    });
    (clients * per_client) as f64 / started.elapsed().as_secs_f64()
}

fn put(s: &DynStore, c: usize, i: usize) {
    pollster::block_on(
        s.put(
            NewFile::new(format!("/bench/c{c}/f{i:06}"), "s3", "bucket/x", i as u64)
                .etag(format!("{i}")),
        ),
    )
    .unwrap();
}

fn get(s: &DynStore, c: usize, i: usize) {
    pollster::block_on(s.get(&format!("/bench/c{c}/f{i:06}")))
        .unwrap()
        .unwrap();
}

fn list(s: &DynStore, c: usize, _: usize) {
    let page =
        pollster::block_on(s.list_page(&ListOptions::prefix(format!("/bench/c{c}/")).limit(100)))
            .unwrap();
    assert_eq!(page.items.len(), 100);
}

fn main() {
    let ops = arg("--ops", 2000);
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(nexus_tests::pg::database("backend_bench"));
    let embedded: DynStore =
        std::sync::Arc::new(pollster::block_on(Store::open(dir.path().join("b.db"))).unwrap());
    let postgres: DynStore = std::sync::Arc::new(
        pollster::block_on(nexus_pg::PgStore::connect(
            &format!("{}?sslmode=disable", db.url),
            Default::default(),
        ))
        .unwrap(),
    );
    println!("ops/s, {ops} operations per configuration (each put is its own durable transaction)");
    println!(
        "{:<10} {:>8} {:>12} {:>12} {:>12}",
        "backend", "clients", "put", "get", "list 100"
    );
    for (name, store) in [("embedded", &embedded), ("postgres", &postgres)] {
        for clients in [1, 8] {
            let per = ops / clients;
            // Each configuration writes its own paths: clients 8 uses c0..c7, 1 uses c0 (written again).
            let p = run(store, clients, per, put);
            let g = run(store, clients, per, get);
            let l = run(store, clients, (per / 10).max(1), list);
            println!("{name:<10} {clients:>8} {p:>12.0} {g:>12.0} {l:>12.0}");
        }
    }
}
