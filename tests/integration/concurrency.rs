//! Many threads on one store in a file: reads run side by side on the
//! store's reading connections, next to the writer, and each sees a
//! committed state; writes of many threads share group commits, and each
//! caller gets its own result.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use nexus_core::{Error, ListOptions, NewFile, Precondition, Store};

fn open(dir: &tempfile::TempDir, readers: usize) -> Store {
    pollster::block_on(
        Store::builder()
            .path(dir.path().join("nexus.db"))
            .readers(readers)
            .open(),
    )
    .unwrap()
}

/// Sets the flag when dropped, also when the thread that holds it panics, so
/// that the threads polling the flag stop and the test fails instead of
/// hanging.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

fn integrity_ok(store: &Store) {
    let rows = pollster::block_on(store.debug_query("PRAGMA integrity_check")).unwrap();
    assert_eq!(rows, vec![vec![Some("ok".to_string())]]);
}

/// Round `k` of the group: every file has etag `k` and size `k`.
fn group(paths: &[String], k: u64) -> Vec<NewFile> {
    paths
        .iter()
        .map(|p| NewFile::new(p, "local", "/d", k).etag(k.to_string()))
        .collect()
}

/// One writer rewrites a group of files in one transaction per round while
/// another adds files one put at a time; readers on other threads never see
/// a group half written (in `get_batch`, `list`, `list_page`), never see it
/// go back to an older round, and a snapshot held across commits keeps its
/// counts. At the end the counts add up and the file is sound.
#[test]
fn reads_see_only_committed_states_while_writers_write() {
    const FILES: usize = 25;
    const ROUNDS: u64 = 120;
    const SINGLES: usize = 150;
    const READERS: usize = 4;

    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, 3);
    let paths: Vec<String> = (0..FILES).map(|i| format!("/group/f{i:03}")).collect();
    pollster::block_on(store.put_batch(&group(&paths, 0))).unwrap();

    let done = AtomicBool::new(false);
    let seen = Mutex::new(HashSet::new());
    let reads = AtomicU64::new(0);
    let snapshot_checks = AtomicU64::new(0);

    // The round every record of a read holds; panics on a mix.
    let round_of = |etags: Vec<Option<String>>, what: &str| -> u64 {
        assert_eq!(etags.len(), FILES, "{what}: every file of the group");
        let first = etags[0].clone();
        assert!(
            etags.iter().all(|e| *e == first),
            "{what} saw a group half written: {etags:?}"
        );
        first.unwrap().parse().unwrap()
    };

    std::thread::scope(|scope| {
        let stop = SetOnDrop(&done);
        let rounds = scope.spawn(|| {
            for k in 1..=ROUNDS {
                pollster::block_on(store.put_batch(&group(&paths, k))).unwrap();
            }
        });
        let singles = scope.spawn(|| {
            for i in 0..SINGLES {
                pollster::block_on(store.put(NewFile::new(
                    format!("/singles/s{i:04}"),
                    "local",
                    "/d",
                    1,
                )))
                .unwrap();
            }
        });
        let readers: Vec<_> = (0..READERS)
            .map(|r| {
                let (store, paths, done, seen, reads) = (&store, &paths, &done, &seen, &reads);
                scope.spawn(move || {
                    let mut last = 0;
                    let mut mine = HashSet::new();
                    while !done.load(Ordering::Acquire) {
                        let k = match r % 3 {
                            0 => {
                                let got = pollster::block_on(store.get_batch(paths)).unwrap();
                                let etags =
                                    paths.iter().map(|p| got[p].as_ref().unwrap().etag.clone());
                                round_of(etags.collect(), "get_batch")
                            }
                            1 => {
                                let got = pollster::block_on(store.list("/group/")).unwrap();
                                round_of(got.into_iter().map(|f| f.etag).collect(), "list")
                            }
                            _ => {
                                let page = pollster::block_on(store.list_page(
                                    &ListOptions::prefix("/").limit(1000).recursive(false),
                                ))
                                .unwrap();
                                assert!(page.items.is_empty(), "no file directly below /");
                                let page = pollster::block_on(
                                    store.list_page(&ListOptions::prefix("/group/").limit(1000)),
                                )
                                .unwrap();
                                round_of(
                                    page.items.into_iter().map(|f| f.etag).collect(),
                                    "list_page",
                                )
                            }
                        };
                        assert!(k >= last, "a later read went back from round {last} to {k}");
                        last = k;
                        mine.insert(k);
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    seen.lock().unwrap().extend(mine);
                })
            })
            .collect();
        // A snapshot held across commits keeps seeing what it saw first.
        let snapshots = scope.spawn(|| {
            while !done.load(Ordering::Acquire) {
                let mut snap = pollster::block_on(store.snapshot()).unwrap();
                let before = snap.row_counts().unwrap();
                let head = snap.change_seq();
                std::thread::sleep(std::time::Duration::from_millis(5));
                assert_eq!(
                    snap.row_counts().unwrap(),
                    before,
                    "a snapshot's counts moved"
                );
                assert!(pollster::block_on(store.stats()).unwrap().change_seq >= head);
                drop(snap);
                snapshot_checks.fetch_add(1, Ordering::Relaxed);
            }
        });
        rounds.join().unwrap();
        singles.join().unwrap();
        drop(stop);
        for r in readers {
            r.join().unwrap();
        }
        snapshots.join().unwrap();
    });

    assert!(reads.load(Ordering::Relaxed) >= READERS as u64);
    assert!(snapshot_checks.load(Ordering::Relaxed) >= 1);
    assert!(
        seen.lock().unwrap().len() >= 2,
        "the readers ran while the writer wrote: {:?}",
        seen.lock().unwrap()
    );
    let stats = pollster::block_on(store.stats()).unwrap();
    assert_eq!(stats.files, (FILES + SINGLES) as u64);
    assert_eq!(stats.change_seq, 1 + ROUNDS as i64 + SINGLES as i64);
    let got = pollster::block_on(store.get_batch(&paths)).unwrap();
    assert!(
        got.values()
            .all(|f| f.as_ref().unwrap().version as u64 == ROUNDS + 1)
    );
    integrity_ok(&store);
}

/// While one thread lists 100,000 files, point gets on other threads keep
/// completing: the listing holds one reader, not the store.
#[test]
fn a_long_listing_does_not_stop_point_gets() {
    const FILES: usize = 100_000;
    const LISTINGS: usize = 2;
    const GETTERS: usize = 2;

    let dir = tempfile::tempdir().unwrap();
    drop(open(&dir, 1));
    // Rows written by C SQLite in one statement (100,000 puts through the
    // store take minutes in a debug build): live files without history.
    let conn = rusqlite::Connection::open(dir.path().join("nexus.db")).unwrap();
    conn.execute_batch(&format!(
        "BEGIN; \
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {FILES} - 1) \
         INSERT INTO file_paths (path_id, tenant_id, virtual_path, backend_id, physical_path, size_bytes, \
         created_at, updated_at, change_seq) \
         SELECT printf('id-%06d', i), 'default', printf('/big/f%06d', i), 'local', '/d', i, 0, 0, 1 FROM n; \
         UPDATE nexus_state SET change_seq = 1 WHERE id = 1; \
         COMMIT;"
    ))
    .unwrap();
    drop(conn);
    let store = open(&dir, 2);

    let gets = AtomicU64::new(0);
    let listing_done = AtomicBool::new(false);
    let mut during = 0;
    std::thread::scope(|scope| {
        for g in 0..GETTERS {
            let (store, gets, listing_done) = (&store, &gets, &listing_done);
            scope.spawn(move || {
                let mut i = g;
                while !listing_done.load(Ordering::Acquire) {
                    let path = format!("/big/f{:06}", (i * 7919) % FILES);
                    assert!(pollster::block_on(store.get(&path)).unwrap().is_some());
                    gets.fetch_add(1, Ordering::Release);
                    i += GETTERS;
                }
            });
        }
        let _stop = SetOnDrop(&listing_done);
        // The getters are running before the first listing starts.
        while gets.load(Ordering::Acquire) < 10 {
            std::thread::yield_now();
        }
        for _ in 0..LISTINGS {
            let before = gets.load(Ordering::Acquire);
            let all = pollster::block_on(store.list("/big/")).unwrap();
            let after = gets.load(Ordering::Acquire);
            assert_eq!(all.len(), FILES);
            during += after - before;
        }
    });
    // The count includes the gets that ran while a listing waited for a
    // reader. With one reader (or the store behind one lock) a few dozen
    // complete in a debug build, all while the listings wait their turn and
    // none while they run; with two readers, thousands.
    assert!(
        during >= 1000,
        "only {during} point gets completed during {LISTINGS} listings of {FILES} files"
    );
}

/// A snapshot holds one reader: writes and other reads go on meanwhile, on
/// the same task, and the snapshot does not see them.
#[test]
fn a_snapshot_does_not_hold_up_writes_or_reads() {
    pollster::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, 2);
        store
            .put(NewFile::new("/a", "local", "/d", 1))
            .await
            .unwrap();
        let mut snap = store.snapshot().await.unwrap();
        store
            .put(NewFile::new("/b", "local", "/d", 1))
            .await
            .unwrap();
        assert!(store.get("/b").await.unwrap().is_some());
        assert_eq!(snap.row_counts().unwrap()[0], 1);
        assert_eq!(snap.changes(0, snap.change_seq()).unwrap().files.len(), 1);
        drop(snap);
        let mut snap = store.snapshot().await.unwrap();
        assert_eq!(snap.row_counts().unwrap()[0], 2);
    });
}

/// The number of readers is the builder's, at least one; a second open of
/// the same file joins the first's connections.
#[test]
fn readers_are_configurable_and_shared_per_file() {
    pollster::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, 3);
        assert_eq!(store.readers(), 3);
        let again = Store::builder()
            .path(dir.path().join("nexus.db"))
            .readers(7)
            .open()
            .await
            .unwrap();
        assert_eq!(again.readers(), 3);
        let one = Store::builder().memory().readers(0).open().await.unwrap();
        assert_eq!(one.readers(), 1);
        one.put(NewFile::new("/x", "local", "/d", 1)).await.unwrap();
        assert!(one.get("/x").await.unwrap().is_some());
        assert!(Store::memory().await.unwrap().readers() >= 2);
    });
}

/// After migrating down to base and up again (every table dropped and
/// created anew), every reader reads the new tables: none keeps a statement
/// prepared against the old ones.
#[test]
fn every_reader_sees_the_schema_after_migrations() {
    pollster::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, 3);
        store
            .put(NewFile::new("/a", "local", "/d", 1))
            .await
            .unwrap();
        store
            .put(NewFile::new("/b", "local", "/d", 1))
            .await
            .unwrap();
        // Three snapshots at once: each on its own reader, each with its
        // statements prepared.
        let mut snaps = Vec::new();
        for _ in 0..3 {
            let mut s = store.snapshot().await.unwrap();
            assert_eq!(s.row_counts().unwrap()[0], 2);
            snaps.push(s);
        }
        drop(snaps);
        store.migrate_down(0).await.unwrap();
        store.migrate_up(None).await.unwrap();
        store
            .put(NewFile::new("/c", "local", "/d", 1))
            .await
            .unwrap();
        let mut snaps = Vec::new();
        for _ in 0..3 {
            let mut s = store.snapshot().await.unwrap();
            assert_eq!(s.row_counts().unwrap(), [1, 1, 0, 0, 0]);
            assert_eq!(s.change_seq(), 1);
            snaps.push(s);
        }
        drop(snaps);
        assert_eq!(store.list("/").await.unwrap().len(), 1);
        integrity_ok(&store);
    });
}

/// Eight threads write at once (their writes share group commits): puts of
/// paths of their own, conditional puts that must fail (absent expected on
/// a path that exists), conditional puts that must succeed, and conditional
/// puts on one path that every thread races for (exactly one wins). Each
/// caller gets its own result. Meanwhile a reader follows the change feed
/// in windows `(after, head]` of successive snapshots, others read, and a
/// snapshot held across commits keeps its counts. At the end: every
/// acknowledged write is in the feed exactly once, each thread's writes
/// have strictly increasing change sequence numbers, the numbers have no
/// gap (a failed write takes none), the counts add up, and the file is
/// sound.
#[test]
fn concurrent_writers_each_get_their_own_result() {
    const WRITERS: usize = 8;
    const OPS: usize = 50;
    const TAKEN: usize = 10;

    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, 3);
    let taken: Vec<String> = (0..TAKEN).map(|k| format!("/taken/{k}")).collect();
    pollster::block_on(store.put_batch(&group(&taken, 0))).unwrap();

    let done = AtomicBool::new(false);
    // Per writer: the paths of its acknowledged writes, in order.
    let acked: Vec<Mutex<Vec<String>>> = (0..WRITERS).map(|_| Mutex::new(Vec::new())).collect();
    let race_wins = Mutex::new(HashMap::<usize, Vec<usize>>::new());
    let conflicts = AtomicU64::new(0);

    let followed = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|t| {
                let (store, taken, acked, race_wins, conflicts) =
                    (&store, &taken, &acked, &race_wins, &conflicts);
                scope.spawn(move || {
                    for i in 0..OPS {
                        let own = format!("/w/t{t}/f{i:03}");
                        let etag = format!("t{t}i{i}");
                        let size = (t * 1000 + i) as u64;
                        let file = |path: &str| NewFile::new(path, "local", "/d", size).etag(&etag);
                        let acked_path = match i % 5 {
                            0 | 1 => {
                                let r = pollster::block_on(store.put(file(&own))).unwrap();
                                assert_eq!((r.path.as_str(), r.size), (own.as_str(), size));
                                assert_eq!(
                                    (r.etag.as_deref(), r.version),
                                    (Some(etag.as_str()), 1)
                                );
                                Some(own)
                            }
                            2 => {
                                let path = &taken[(t + i) % TAKEN];
                                match pollster::block_on(
                                    store.put_if(file(path), Precondition::Absent),
                                ) {
                                    Err(Error::Conflict { path: p, .. }) => assert_eq!(&p, path),
                                    other => panic!("a put_if on {path} that exists: {other:?}"),
                                }
                                conflicts.fetch_add(1, Ordering::Relaxed);
                                None
                            }
                            3 => {
                                let r = pollster::block_on(
                                    store.put_if(file(&own), Precondition::Absent),
                                )
                                .unwrap();
                                assert_eq!((r.path.as_str(), r.size), (own.as_str(), size));
                                Some(own)
                            }
                            _ => {
                                let path = format!("/race/{i:03}");
                                match pollster::block_on(
                                    store.put_if(file(&path), Precondition::Absent),
                                ) {
                                    Ok(r) => {
                                        assert_eq!(
                                            (r.path.as_str(), r.size),
                                            (path.as_str(), size)
                                        );
                                        race_wins.lock().unwrap().entry(i).or_default().push(t);
                                        Some(path)
                                    }
                                    Err(Error::Conflict { path: p, .. }) => {
                                        assert_eq!(p, path);
                                        None
                                    }
                                    Err(e) => panic!("{e}"),
                                }
                            }
                        };
                        if let Some(path) = acked_path {
                            acked[t].lock().unwrap().push(path);
                        }
                    }
                })
            })
            .collect();
        let stop = SetOnDrop(&done);
        // Follows the change feed: each window's file rows lie in it, and
        // no path comes twice (every path is written once).
        let follower = scope.spawn(|| {
            let mut seen = HashMap::<String, i64>::new();
            let mut after = 0;
            loop {
                let last_round = done.load(Ordering::Acquire);
                let mut snap = pollster::block_on(store.snapshot()).unwrap();
                let head = snap.change_seq();
                assert!(head >= after, "the feed went back from {after} to {head}");
                let window = snap.changes(after, head).unwrap();
                for f in window.files {
                    assert!(
                        f.change_seq > after && f.change_seq <= head,
                        "{} with {} in ({after}, {head}]",
                        f.virtual_path,
                        f.change_seq
                    );
                    let again = seen.insert(f.virtual_path.clone(), f.change_seq);
                    assert!(again.is_none(), "{} delivered twice", f.virtual_path);
                }
                after = head;
                if last_round {
                    return seen;
                }
            }
        });
        // Reads next to the writers: the taken files never change, the
        // count of own files never goes down.
        let reader = scope.spawn(|| {
            let mut last = 0;
            while !done.load(Ordering::Acquire) {
                let got = pollster::block_on(store.get_batch(&taken)).unwrap();
                assert!(
                    got.values()
                        .all(|f| f.as_ref().unwrap().etag.as_deref() == Some("0"))
                );
                let n = pollster::block_on(store.list("/w/")).unwrap().len();
                assert!(n >= last, "a later listing lost files: {last} then {n}");
                last = n;
            }
        });
        let snapshots = scope.spawn(|| {
            while !done.load(Ordering::Acquire) {
                let mut snap = pollster::block_on(store.snapshot()).unwrap();
                let before = snap.row_counts().unwrap();
                std::thread::sleep(std::time::Duration::from_millis(3));
                assert_eq!(
                    snap.row_counts().unwrap(),
                    before,
                    "a snapshot's counts moved"
                );
            }
        });
        for w in writers {
            w.join().unwrap();
        }
        drop(stop);
        reader.join().unwrap();
        snapshots.join().unwrap();
        follower.join().unwrap()
    });

    let acked: Vec<Vec<String>> = acked.into_iter().map(|a| a.into_inner().unwrap()).collect();
    let total: usize = acked.iter().map(Vec::len).sum();
    // Exactly one winner per raced path.
    let wins = race_wins.into_inner().unwrap();
    assert_eq!(wins.len(), OPS / 5);
    assert!(wins.values().all(|w| w.len() == 1), "{wins:?}");
    assert_eq!(
        conflicts.load(Ordering::Relaxed) as usize,
        WRITERS * OPS / 5,
        "every put_if on an existing path failed"
    );
    // The feed holds every acknowledged write once, and nothing else.
    let expected: HashSet<&String> = acked.iter().flatten().chain(&taken).collect();
    assert_eq!(followed.len(), expected.len());
    assert!(expected.iter().all(|p| followed.contains_key(*p)));
    // A thread's writes commit in its order; numbers have no gap.
    for (t, paths) in acked.iter().enumerate() {
        let seqs: Vec<i64> = paths.iter().map(|p| followed[p]).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "thread {t}'s change sequence numbers: {seqs:?}"
        );
    }
    let all: HashSet<i64> = followed.values().copied().collect();
    assert_eq!(
        all.len(),
        total + 1,
        "one number per write (the setup's batch shares one)"
    );
    let stats = pollster::block_on(store.stats()).unwrap();
    assert_eq!(stats.change_seq, 1 + total as i64);
    assert_eq!(stats.files, (TAKEN + total) as u64);
    assert_eq!(
        total,
        WRITERS * OPS * 3 / 5 + OPS / 5,
        "own puts, own conditional puts, one win per race"
    );
    integrity_ok(&store);
}

/// Compare-and-swap under group commit: eight threads increment one counter
/// file, each reading it and writing the next value with a precondition
/// (half on its version, half on its etag), retrying on `Conflict`. Writes
/// of several threads share a commit, and a precondition is checked within
/// it against the writes before it: no two increments may both succeed on
/// the same state (a lost update), so the counter ends at the number of
/// successes, its history holds each value once, in order, and the file is
/// sound. A thread told of a conflict reads the state that caused it (the
/// conflict comes after the commit of the write it lost to).
#[test]
fn conditional_puts_of_many_threads_lose_no_update() {
    const THREADS: usize = 8;
    const INCREMENTS: u64 = 20;

    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, 2);
    let path = "/counter";
    let value = |n: u64| NewFile::new(path, "local", "/d", n).etag(n.to_string());
    pollster::block_on(store.put(value(0))).unwrap();
    let conflicts = AtomicU64::new(0);

    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let (store, conflicts) = (&store, &conflicts);
            scope.spawn(move || {
                let mut done = 0;
                while done < INCREMENTS {
                    let now = pollster::block_on(store.get(path)).unwrap().unwrap();
                    let n: u64 = now.etag.as_deref().unwrap().parse().unwrap();
                    assert_eq!(now.size, n, "size and etag come from one put");
                    let expect = if t % 2 == 0 {
                        Precondition::Version(now.version)
                    } else {
                        Precondition::Etag(now.etag.clone())
                    };
                    match pollster::block_on(store.put_if(value(n + 1), expect)) {
                        Ok(r) => {
                            assert_eq!(r.version, now.version + 1, "from the state it read");
                            done += 1;
                        }
                        Err(Error::Conflict { path: p, .. }) => {
                            assert_eq!(p, path);
                            conflicts.fetch_add(1, Ordering::Relaxed);
                            // The write it lost to is committed by the time
                            // it is told: a read now sees a later state.
                            let later = pollster::block_on(store.get(path)).unwrap().unwrap();
                            assert!(
                                later.version > now.version,
                                "told of a conflict at version {}, then read version {}",
                                now.version,
                                later.version
                            );
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            });
        }
    });

    let total = THREADS as u64 * INCREMENTS;
    let end = pollster::block_on(store.get(path)).unwrap().unwrap();
    assert_eq!(end.etag, Some(total.to_string()), "no increment lost");
    assert_eq!(u64::from(end.version), total + 1);
    let history: Vec<Option<String>> = pollster::block_on(store.list_versions(path))
        .unwrap()
        .into_iter()
        .map(|v| v.etag)
        .collect();
    let mut expected: Vec<Option<String>> = (0..=total).map(|n| Some(n.to_string())).collect();
    if history.first() != expected.first() {
        expected.reverse();
    }
    assert_eq!(history, expected, "each value once, in order");
    assert!(
        conflicts.load(Ordering::Relaxed) > 0,
        "the threads raced (some precondition failed)"
    );
    integrity_ok(&store);
}
