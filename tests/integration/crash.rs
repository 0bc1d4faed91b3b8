//! Crash safety: a writer process (several threads writing at once, so
//! that their writes share group commits) is killed with SIGKILL at random
//! instants; every write it acknowledged (after commit) must be there on
//! reopen, and the file must pass `PRAGMA integrity_check`.
//!
//! `NEXUS_CRASH_KILLS=100 cargo test -p nexus-tests crash` runs the full count.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nexus_core::Store;
use nexus_tests::crash::{Model, WRITERS, apply_model, observe};

fn kills() -> usize {
    std::env::var("NEXUS_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

#[test]
fn sigkill_at_random_instants_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut rng = seed;
    let mut next_rand = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // Per writer thread: its model and its first operation not known to
    // have committed.
    let mut models = vec![Model::new(); WRITERS];
    let mut next = vec![0u64; WRITERS];
    let mut acknowledged_total = 0u64;
    for round in 0..kills() {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash-writer"))
            .arg(&db)
            .args(next.iter().map(|n| n.to_string()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let (t, i) = line.split_once(' ').unwrap();
                tx.send((t.parse::<usize>().unwrap(), i.parse::<u64>().unwrap()))
                    .unwrap();
            }
        });
        // Let it write for a random while, then kill it mid-flight.
        std::thread::sleep(Duration::from_millis(5 + next_rand() % 120));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        reader.join().unwrap();
        let acked: Vec<(usize, u64)> = rx.try_iter().collect();
        if let Some(code) = status.code() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            panic!("round {round}: the writer exited by itself ({code}): {err} (seed {seed})");
        }
        let mut last = next.clone(); // per thread: first operation not acknowledged
        for &(t, i) in &acked {
            assert_eq!(i, last[t], "thread {t}'s acks are in order");
            last[t] += 1;
        }
        acknowledged_total += acked.len() as u64;

        let integrity: String = rusqlite::Connection::open(&db)
            .unwrap()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(integrity, "ok", "round {round} (seed {seed})");

        let store = pollster::block_on(Store::open(&db)).unwrap();
        for t in 0..WRITERS {
            for i in next[t]..last[t] {
                apply_model(&mut models[t], t, i);
            }
            // Each thread's operation in flight may have committed before
            // its ack was printed.
            let mut with_in_flight = models[t].clone();
            apply_model(&mut with_in_flight, t, last[t]);
            let actual = pollster::block_on(observe(&store, t));
            if actual == models[t] {
                next[t] = last[t];
            } else if actual == with_in_flight {
                models[t] = with_in_flight;
                next[t] = last[t] + 1;
            } else {
                let missing: Vec<_> = models[t]
                    .iter()
                    .filter(|(k, v)| actual.get(*k) != Some(v))
                    .take(5)
                    .collect();
                panic!(
                    "round {round}: thread {t}'s acknowledged writes lost (seed {seed}); first differences: {missing:?}"
                );
            }
        }
        drop(store);
    }
    assert!(
        acknowledged_total > 0,
        "the writer got some writes acknowledged"
    );
    eprintln!(
        "{} kills, {acknowledged_total} acknowledged writes, all present",
        kills()
    );
}
