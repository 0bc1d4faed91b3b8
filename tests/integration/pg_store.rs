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

/// Two renames into one destination at once: the second waits for the
/// first and then refuses, as it would one after the other (the first's
/// files are there), instead of merging both into the destination.
#[test]
fn concurrent_renames_to_one_destination_do_not_merge() {
    let f = pollster::block_on(PgFixture::new());
    let s = f.dyn_store();
    pollster::block_on(async {
        s.put(NewFile::new("/e1/x", "l", "p", 1)).await.unwrap();
        s.put(NewFile::new("/e2/y", "l", "p", 1)).await.unwrap();
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let first = rt.block_on(async {
        let c = nexus_tests::pg::connect(f.url()).await;
        c.batch_execute("BEGIN").await.unwrap();
        let row = c
            .query_one(
                "SELECT status FROM nexus_rename('default', '/e1', '/e1/', '/e10', '/dst', '/dst/', \
                 '/dst0', now(), 4096)",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, &str>(0), "renamed");
        c
    });
    std::thread::scope(|scope| {
        let second = scope.spawn(|| pollster::block_on(s.rename("/e2", "/dst")));
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(
            !second.is_finished(),
            "the second rename waits for the first"
        );
        rt.block_on(first.batch_execute("COMMIT")).unwrap();
        let err = second.join().unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    });
    pollster::block_on(async {
        let paths: Vec<String> = s
            .list("/")
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.path)
            .collect();
        assert_eq!(paths, ["/dst/x", "/e2/y"]);
    });
}

/// Runs `call` on a thread of its own while a transaction of another
/// connection that ran `statements` is open: checks that `call` waits for
/// it (`waits`), commits it, and returns what `call` returned.
fn while_held_open<T: Send>(
    url: &str,
    statements: &str,
    waits: &str,
    call: impl FnOnce() -> T + Send,
) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let holder = rt.block_on(async {
        let c = nexus_tests::pg::connect(url).await;
        c.batch_execute(&format!("BEGIN; {statements}"))
            .await
            .unwrap();
        c
    });
    std::thread::scope(|scope| {
        let caller = scope.spawn(call);
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(!caller.is_finished(), "{waits}");
        rt.block_on(holder.batch_execute("COMMIT")).unwrap();
        caller.join().unwrap()
    })
}

/// A chunk reference added while a removal of the chunk commits: the chunk
/// is live again and its tombstone gone (a key has a live row or a
/// tombstone, never both).
#[test]
fn a_chunk_added_back_during_its_removal_has_no_tombstone() {
    let f = pollster::block_on(PgFixture::new());
    let s = f.dyn_store();
    pollster::block_on(async {
        s.add_chunk_ref("h1", 5, "store/h1").await.unwrap();
        s.release_chunk_ref("h1", std::time::Duration::ZERO)
            .await
            .unwrap();
    });
    // The removal, as remove_chunk does it, held open.
    let chunk = while_held_open(
        f.url(),
        "DELETE FROM content_chunks WHERE tenant_id = 'default' AND content_hash = 'h1'; \
         INSERT INTO tombstones (table_name, key1, key2, deleted_at) \
         VALUES ('content_chunks', 'default', 'h1', now())",
        "the add waits for the removal",
        || pollster::block_on(s.add_chunk_ref("h1", 5, "store/h1")),
    )
    .unwrap();
    assert_eq!(chunk.ref_count, 1);
    let tombstones = pollster::block_on(s.debug_query(
        "SELECT count(*) FROM tombstones WHERE table_name = 'content_chunks' AND key2 = 'h1'",
    ))
    .unwrap();
    assert_eq!(
        tombstones[0][0].as_deref(),
        Some("0"),
        "the tombstone is gone"
    );
}

/// A metadata value set while a removal of the key commits (the set waits
/// for the removed row): the value is live again, its removal gone, and
/// it is stamped after that removal even though the removal's time is
/// ahead of the clock (a change is stamped after the state it changes).
#[test]
fn a_key_set_during_its_removal_is_stamped_after_it() {
    let f = pollster::block_on(PgFixture::new());
    let s = f.dyn_store();
    pollster::block_on(async {
        s.put(NewFile::new("/f", "l", "p", 0)).await.unwrap();
        s.set_metadata("/f", "k", &serde_json::json!(1))
            .await
            .unwrap();
    });
    // A removal, as delete_metadata does it, held open, stamped ahead.
    while_held_open(
        f.url(),
        "DELETE FROM file_metadata WHERE key = 'k'; \
         INSERT INTO tombstones (table_name, key1, key2, deleted_at) \
         SELECT 'file_metadata', path_id::text, 'k', '2999-01-01Z' FROM file_paths \
         WHERE virtual_path = '/f'",
        "the set waits for the removal",
        || pollster::block_on(s.set_metadata("/f", "k", &serde_json::json!(2))),
    )
    .unwrap();
    let rows = pollster::block_on(s.debug_query(
        "SELECT (SELECT count(*) FROM tombstones WHERE table_name = 'file_metadata'), \
         (SELECT count(*) FROM file_metadata WHERE key = 'k' AND value = '2' \
           AND updated_at > '2999-01-01Z')",
    ))
    .unwrap();
    assert_eq!(
        (rows[0][0].as_deref(), rows[0][1].as_deref()),
        (Some("0"), Some("1")),
        "the removal is gone and the value stamped after it"
    );
}

/// A feed position beyond anything this server handed out (the database
/// was restored, or failed over to a standby that lost transactions) is
/// refused by name instead of read as "nothing new".
#[test]
fn a_feed_position_ahead_of_the_server_is_refused() {
    let f = pollster::block_on(PgFixture::new());
    let err = pollster::block_on(f.store.changes_after(i64::MAX / 2, None, 10)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("feed position"), "{err}");
}
