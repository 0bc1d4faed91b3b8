//! The writer of the crash-safety test: [`nexus_tests::crash::WRITERS`]
//! threads on one store, thread `t` applying its deterministic operation
//! sequence from `START_t` on; each prints `t i` on stdout only after
//! operation `i` committed. Their writes share group commits. The test kills
//! the process with SIGKILL at random instants.
//!
//! `crash-writer DB START_0 START_1 ...`

#[cfg(target_family = "wasm")]
fn main() {}

#[cfg(not(target_family = "wasm"))]
fn main() {
    use std::io::Write;
    use std::sync::Mutex;

    use nexus_tests::crash::WRITERS;

    let mut args = std::env::args().skip(1);
    let db = args.next().expect("crash-writer DB START...");
    let starts: Vec<u64> = args.map(|s| s.parse().expect("START")).collect();
    assert_eq!(starts.len(), WRITERS, "one START per writer thread");
    let store = pollster::block_on(nexus_core::Store::open(&db)).expect("open");
    let out = Mutex::new(std::io::stdout());
    std::thread::scope(|scope| {
        for (t, start) in starts.into_iter().enumerate() {
            let (store, out) = (&store, &out);
            scope.spawn(move || {
                for i in start.. {
                    if let Err(e) = pollster::block_on(nexus_tests::crash::apply(store, t, i)) {
                        eprintln!("thread {t}: operation {i} failed: {e}");
                        std::process::exit(1);
                    }
                    let mut out = out.lock().unwrap();
                    writeln!(out, "{t} {i}").unwrap();
                    out.flush().unwrap();
                }
            });
        }
    });
}
