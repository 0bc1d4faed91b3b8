//! The read replica against a real streaming standby of the test cluster
//! (`pg_basebackup -R`, see `nexus_tests::pg::standby`): within the
//! staleness bound reads are served by the standby, past it by the primary,
//! and a store always reads its own writes.
//!
//! Where a read was served is made visible by pausing replay on the standby
//! (`pg_wal_replay_pause()`) and then writing on the primary: a row the
//! primary has and the standby has not replayed is seen only by reads served
//! by the primary. The replay lag the store measures (`now() -
//! pg_last_xact_replay_timestamp()`) grows whenever nothing is replayed, so
//! every phase starts from a fresh commit replayed on the standby
//! (`Standby::catch_up`) and is timed from just before it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nexus_core::{DynStore, NewFile};
use nexus_pg::{PgOptions, PgStore};

/// The staleness bound under test (`max_replica_lag`).
const MAX_LAG: Duration = Duration::from_secs(2);
const READ_YOUR_WRITES: Duration = Duration::from_millis(300);
/// Slack for a slow or busy machine in the upper bounds.
const SLACK: Duration = Duration::from_secs(3);

async fn exists(store: &DynStore, path: &str) -> bool {
    store
        .get(path)
        .await
        .unwrap_or_else(|e| panic!("get {path}: {e}"))
        .is_some()
}

async fn paths(store: &DynStore) -> Vec<String> {
    let files = store.list("").await.unwrap();
    files.into_iter().map(|f| f.path).collect()
}

#[test]
fn reads_go_to_the_standby_within_the_staleness_bound() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut standby = match nexus_tests::pg::standby().await {
            Ok(s) => s,
            Err(why) => {
                eprintln!("skipped reads_go_to_the_standby_within_the_staleness_bound: {why}");
                return;
            }
        };
        let db = nexus_tests::pg::database("replica").await;
        let options = PgOptions {
            read_replica_url: Some(standby.url(db.name())),
            read_your_writes: READ_YOUR_WRITES,
            max_replica_lag: MAX_LAG,
            ..PgOptions::default()
        };
        // The store under test; connecting migrates the primary.
        let store: DynStore = Arc::new(PgStore::connect(&db.url, options).await.unwrap());
        // Another application server writing to the same primary.
        let other: DynStore = Arc::new(
            PgStore::connect(&db.url, PgOptions::default())
                .await
                .unwrap(),
        );
        // The standby read directly: what it has replayed (read-only, so no
        // migration; nothing is read before the schema has been replayed).
        let replayed: DynStore = Arc::new(
            PgStore::connect(
                &standby.url(db.name()),
                PgOptions {
                    migrate: false,
                    ..PgOptions::default()
                },
            )
            .await
            .unwrap(),
        );
        other
            .put(NewFile::new("/replayed", "l", "p", 1))
            .await
            .unwrap();
        let fresh_from = Instant::now();
        standby.catch_up().await;
        standby.pause_replay().await;
        assert!(exists(&replayed, "/replayed").await);

        // Within the bound: the store reads the standby.
        assert!(
            exists(&store, "/replayed").await,
            "a row written by another server, once replayed, is read through the store"
        );
        other
            .put(NewFile::new("/unreplayed", "l", "p", 1))
            .await
            .unwrap();
        assert!(
            exists(&other, "/unreplayed").await,
            "committed on the primary"
        );
        assert!(
            !exists(&store, "/unreplayed").await,
            "{:?} after the last replayed commit (bound {MAX_LAG:?}) the store reads the \
             standby, which has not replayed /unreplayed",
            fresh_from.elapsed()
        );
        assert_eq!(paths(&store).await, ["/replayed"], "listing too");

        // Past the bound (replay still paused): reads go to the primary.
        let switched = loop {
            if exists(&store, "/unreplayed").await {
                break fresh_from.elapsed();
            }
            assert!(
                fresh_from.elapsed() < MAX_LAG + SLACK,
                "replay paused for {:?} (bound {MAX_LAG:?}) and reads still go to the standby",
                fresh_from.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(
            switched > MAX_LAG,
            "reads left the standby {switched:?} after its last replayed commit, within the \
             bound ({MAX_LAG:?})"
        );
        assert!(
            !exists(&replayed, "/unreplayed").await,
            "still not replayed: the read came from the primary"
        );
        assert_eq!(
            paths(&store).await,
            ["/replayed", "/unreplayed"],
            "listing too"
        );
        eprintln!(
            "replica reads stopped {switched:?} after the last replayed commit (bound {MAX_LAG:?})"
        );

        // Read-your-writes: the store's own write is read back from the
        // primary at once, although the standby is fresh (and paused), and
        // for as long as a standby within the bound might lack it: the
        // window is at least the bound.
        standby.resume_replay().await;
        standby.catch_up().await;
        standby.pause_replay().await;
        other
            .put(NewFile::new("/unreplayed-2", "l", "p", 1))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await; // the store checks the lag again
        assert!(
            !exists(&store, "/unreplayed-2").await,
            "fresh standby, no own write yet: reads are served by it"
        );
        store.put(NewFile::new("/own", "l", "p", 1)).await.unwrap();
        let own_at = Instant::now();
        assert!(exists(&store, "/own").await, "read-your-writes");
        assert!(
            exists(&store, "/unreplayed-2").await,
            "within the read-your-writes window every read goes to the primary"
        );
        assert!(
            !exists(&replayed, "/own").await,
            "the standby has not replayed /own: the reads above came from the primary"
        );
        tokio::time::sleep(READ_YOUR_WRITES + Duration::from_millis(50)).await;
        if own_at.elapsed() < MAX_LAG {
            assert!(
                exists(&store, "/own").await,
                "{:?} after the write, past read_your_writes ({READ_YOUR_WRITES:?}) but within \
                 the bound ({MAX_LAG:?}): still read from the primary",
                own_at.elapsed()
            );
        }

        // Past the read-your-writes window of /own.
        tokio::time::sleep(MAX_LAG.saturating_sub(own_at.elapsed())).await;

        // Replay resumed: the standby catches up and reads return to it
        // once the store checks its lag again.
        standby.resume_replay().await;
        let fresh_from = Instant::now();
        standby.catch_up().await;
        assert!(exists(&replayed, "/unreplayed").await);
        assert!(exists(&replayed, "/own").await);
        assert!(exists(&replayed, "/unreplayed-2").await);
        standby.pause_replay().await;
        other
            .put(NewFile::new("/later", "l", "p", 1))
            .await
            .unwrap();
        let back = loop {
            if !exists(&store, "/later").await {
                break fresh_from.elapsed();
            }
            assert!(
                fresh_from.elapsed() < MAX_LAG,
                "the standby caught up {:?} ago and reads have not returned to it",
                fresh_from.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(exists(&other, "/later").await);
        eprintln!("reads were back on the standby {back:?} after it caught up");
        standby.resume_replay().await;
        standby.catch_up().await;
        assert!(exists(&replayed, "/later").await, "replayed at last");
    });
}

/// A write that takes longer than the read-your-writes window (here: it
/// waits for locks held by another session) is read back by its writer:
/// the window runs from the write's end, not from its start.
#[test]
fn a_slow_write_is_read_back_by_its_writer() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut standby = match nexus_tests::pg::standby().await {
            Ok(s) => s,
            Err(why) => {
                eprintln!("skipped a_slow_write_is_read_back_by_its_writer: {why}");
                return;
            }
        };
        let db = nexus_tests::pg::database("replica_slow").await;
        let options = PgOptions {
            read_replica_url: Some(standby.url(db.name())),
            read_your_writes: READ_YOUR_WRITES,
            max_replica_lag: MAX_LAG,
            ..PgOptions::default()
        };
        let store: DynStore = Arc::new(PgStore::connect(&db.url, options).await.unwrap());
        standby.catch_up().await;
        standby.pause_replay().await;
        assert!(!exists(&store, "/slow").await);
        let blocker = nexus_tests::pg::connect(&db.url).await;
        let tables: String = blocker
            .query_one(
                "SELECT string_agg(format('%I', tablename), ', ') FROM pg_tables \
                 WHERE schemaname = 'public'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        blocker
            .batch_execute(&format!("BEGIN; LOCK TABLE {tables} IN EXCLUSIVE MODE"))
            .await
            .unwrap();
        let started = Instant::now();
        let (put, ()) = tokio::join!(store.put(NewFile::new("/slow", "l", "p", 1)), async {
            tokio::time::sleep(READ_YOUR_WRITES * 2).await;
            blocker.batch_execute("COMMIT").await.unwrap();
        });
        put.unwrap();
        let took = started.elapsed();
        assert!(
            exists(&store, "/slow").await,
            "a put that took {took:?} is not read back at once by its writer"
        );
    });
}
