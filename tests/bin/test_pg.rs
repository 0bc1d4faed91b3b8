//! The test PostgreSQL for tests outside Rust (the browser end-to-end test):
//! starts the throwaway cluster (or uses `NEXUS_TEST_DATABASE_URL`), creates
//! a fresh database, prints its URL on stdout, and keeps everything until
//! its stdin closes; then the database is dropped and the cluster stopped.
//!
//! `test-pg < /dev/null` prints a URL and cleans up at once.

#[cfg(target_family = "wasm")]
fn main() {}

#[cfg(not(target_family = "wasm"))]
fn main() {
    use std::io::{Read, Write};

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let db = rt.block_on(nexus_tests::pg::database("e2e"));
    println!("{}", db.url);
    std::io::stdout().flush().expect("stdout");
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    drop(db);
}
