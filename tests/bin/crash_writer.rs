//! The writer of the crash-safety test: applies the deterministic operation
//! sequence from `START` on, and prints each operation's index on stdout only
//! after it committed. The test kills it with SIGKILL at random instants.
//!
//! `crash-writer DB START`

#[cfg(target_family = "wasm")]
fn main() {}

#[cfg(not(target_family = "wasm"))]
fn main() {
    use std::io::Write;

    let mut args = std::env::args().skip(1);
    let db = args.next().expect("crash-writer DB START");
    let start: u64 = args.next().and_then(|s| s.parse().ok()).expect("START");
    pollster::block_on(async {
        let store = nexus_core::Store::open(&db).await.expect("open");
        let mut out = std::io::stdout().lock();
        for i in start.. {
            if let Err(e) = nexus_tests::crash::apply(&store, i).await {
                eprintln!("operation {i} failed: {e}");
                std::process::exit(1);
            }
            writeln!(out, "{i}").unwrap();
            out.flush().unwrap();
        }
    });
}
