//! Distributed mode under contention: many tasks and connections at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use nexus_core::{ErrorKind, NewFile, Precondition};

use crate::common::PgFixture;

/// Read-modify-write with `put_if(Version)` from 8 concurrent tasks: every
/// success is a distinct version, failures are `Conflict`, no update is lost.
#[test]
fn conditional_puts_under_contention_never_lose_an_update() {
    pollster::block_on(async {
        let f = PgFixture::new().await;
        let s = f.dyn_store();
        s.put(NewFile::new("/counter", "l", "p", 0).etag("v0"))
            .await
            .unwrap();
        let wins = Arc::new(AtomicUsize::new(0));
        let conflicts = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|scope| {
            for t in 0..8 {
                let (s, wins, conflicts) = (s.clone(), wins.clone(), conflicts.clone());
                scope.spawn(move || {
                    pollster::block_on(async {
                        for i in 0..15 {
                            let seen = s.get("/counter").await.unwrap().unwrap();
                            let next = NewFile::new("/counter", "l", "p", seen.size + 1)
                                .etag(format!("t{t}-{i}"));
                            match s.put_if(next, Precondition::Version(seen.version)).await {
                                Ok(_) => wins.fetch_add(1, Ordering::SeqCst),
                                Err(e) => {
                                    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
                                    conflicts.fetch_add(1, Ordering::SeqCst)
                                }
                            };
                        }
                    })
                });
            }
        });
        let wins = wins.load(Ordering::SeqCst);
        let last = s.get("/counter").await.unwrap().unwrap();
        assert_eq!(
            last.version as usize,
            1 + wins,
            "one version per successful conditional put"
        );
        assert_eq!(
            last.size as usize, wins,
            "each success built on the one before: no lost update"
        );
        assert_eq!(wins + conflicts.load(Ordering::SeqCst), 8 * 15);
        assert!(wins > 0);
    });
}

/// Opening by location picks the backend: a path or `sqlite:` is embedded,
/// a `postgresql://` URL is PostgreSQL; the same calls work on both.
#[test]
fn open_by_location_picks_the_backend() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(nexus_tests::pg::database("open_by_url"));
    let dir = tempfile::tempdir().unwrap();
    pollster::block_on(async {
        let file = dir.path().join("x.db");
        for location in [
            file.display().to_string(),
            format!("sqlite:{}", dir.path().join("y.db").display()),
            db.url.clone(),
        ] {
            let s = nexus_pg::open(&location, nexus_pg::PgOptions::default())
                .await
                .unwrap();
            s.put(NewFile::new("/same", "l", "p", 1)).await.unwrap();
            assert!(s.exists("/same").await.unwrap(), "{location}");
            let is_pg = format!("{s:?}").starts_with("PgStore");
            assert_eq!(
                is_pg,
                location.starts_with("postgresql://"),
                "{location}: {s:?}"
            );
        }
        assert!(file.exists());
        assert!(dir.path().join("y.db").exists());
    });
}
