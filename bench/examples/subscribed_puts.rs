//! What a subscription (`Store::subscribe`) costs a write: single puts and
//! batches of 500 into one file, with and without a subscriber draining
//! its events, alternating, three rounds each; prints the medians and
//! their ratio.
//!
//! `cargo run --release -p nexus-bench --example subscribed_puts`
use std::time::Instant;

use nexus_core::{NewFile, Store};

fn main() {
    let dir = tempfile::tempdir().unwrap();
    pollster::block_on(async {
        let store = Store::open(dir.path().join("s.db")).await.unwrap();
        let mut n = 0;
        // [without, with] x [single put, batched put], microseconds per put.
        let mut times: [[Vec<f64>; 2]; 2] = Default::default();
        for round in 0..6 {
            let sub = if round % 2 == 1 {
                Some(store.subscribe().await.unwrap())
            } else {
                None
            };
            let drain = || {
                if let Some(s) = &sub {
                    while s.try_next().is_some() {}
                }
            };
            let t = Instant::now();
            for _ in 0..2000 {
                n += 1;
                let f =
                    NewFile::new(format!("/d{}/f{n}", n % 97), "l", "p", 1).etag(format!("{n}"));
                store.put(f).await.unwrap();
                drain();
            }
            times[round % 2][0].push(t.elapsed().as_secs_f64() * 1e6 / 2000.0);
            let files: Vec<NewFile> = (0..5000)
                .map(|i| {
                    n += 1;
                    NewFile::new(format!("/b{}/f{n}", i % 97), "l", "p", 1)
                })
                .collect();
            let t = Instant::now();
            for c in files.chunks(500) {
                store.put_batch(c).await.unwrap();
                drain();
            }
            times[round % 2][1].push(t.elapsed().as_secs_f64() * 1e6 / 5000.0);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        for (w, name) in ["single put", "put in batches of 500"].iter().enumerate() {
            let without = median(&mut times[0][w]);
            let with = median(&mut times[1][w]);
            println!(
                "{name}: {without:.1} us without a subscriber, {with:.1} us with one ({:.2}x)",
                with / without
            );
        }
    });
}
