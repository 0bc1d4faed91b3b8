//! The change feed of PostgreSQL (`PgStore::changes_after`): commit-safe
//! without a global lock. A transaction still running when the reader
//! looks is waited for, never skipped; concurrent writers and a polling
//! reader end with every committed row seen exactly once; rows written by
//! a sync keep their origin.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use nexus_core::{Changes, MetadataStore, NewFile, Store};
use nexus_pg::PgStore;
use serde_json::json;

use crate::common::PgFixture;

/// `nexus_put` in an open transaction: the row gets that transaction's id.
const PUT_SQL: &str = "SELECT nexus_put('default', $1, gen_random_uuid(), gen_random_uuid(), 'l', 'p', 1, \
     NULL, NULL, now(), now(), NULL, NULL, NULL)";

fn file_paths(c: &Changes) -> Vec<&str> {
    c.files.iter().map(|f| f.virtual_path.as_str()).collect()
}

/// The first transaction id not yet handed out.
fn xmax(store: &PgStore) -> i64 {
    pollster::block_on(store.debug_query("SELECT pg_snapshot_xmax(pg_current_snapshot())::text"))
        .unwrap()[0][0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

/// Reads pages from `after` until the feed has passed every transaction
/// that had started by now, and returns them merged. (The feed waits for
/// every older transaction that may write here, so one read may stop
/// short.)
async fn read_past_now(store: &PgStore, after: i64) -> Changes {
    let horizon = xmax(store);
    let mut all = Changes {
        after,
        through: after,
        ..Changes::default()
    };
    let started = std::time::Instant::now();
    while all.through < horizon - 1 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the feed did not pass {horizon} in 60 s (at {})",
            all.through
        );
        let page = store
            .changes_after(all.through, None, 1000)
            .await
            .unwrap()
            .changes;
        all.files.extend(page.files);
        all.metadata.extend(page.metadata);
        all.versions.extend(page.versions);
        all.chunks.extend(page.chunks);
        all.tombstones.extend(page.tombstones);
        all.through = page.through;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    all
}

/// The classic trap of sequences: a transaction that took its id first
/// commits after a later one. A reader bounded by the newest stamp it saw
/// would pass the first transaction's id and miss it for good; the feed
/// stops below it until it ends.
#[test]
fn a_transaction_still_running_is_waited_for_not_skipped() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let f = pollster::block_on(PgFixture::new());
    rt.block_on(async {
        let slow = nexus_tests::pg::connect(f.url()).await;
        slow.batch_execute("BEGIN").await.unwrap();
        slow.execute(PUT_SQL, &[&"/slow"]).await.unwrap();
        let slow_id: i64 = slow
            .query_one("SELECT pg_current_xact_id()::text::int8", &[])
            .await
            .unwrap()
            .get(0);

        f.store
            .put(NewFile::new("/fast", "l", "p", 1))
            .await
            .unwrap();
        let fast = f.store.get("/fast").await.unwrap().unwrap();
        let stamp: i64 = f
            .store
            .debug_query("SELECT change_seq FROM file_paths WHERE virtual_path = '/fast'")
            .await
            .unwrap()[0][0]
            .as_deref()
            .unwrap()
            .parse()
            .unwrap();
        assert!(stamp > slow_id, "the later transaction has the higher id");
        assert_eq!(fast.path, "/fast");

        let first = f.store.changes_after(0, None, 1000).await.unwrap();
        assert!(
            first.changes.through < slow_id,
            "the page stops below the running transaction {slow_id}, at {}",
            first.changes.through
        );
        assert!(
            file_paths(&first.changes).is_empty(),
            "/fast committed, but it is above a running transaction: {:?}",
            file_paths(&first.changes)
        );
        assert!(first.caught_up);

        slow.batch_execute("COMMIT").await.unwrap();
        let second = read_past_now(&f.store, first.changes.through).await;
        assert_eq!(file_paths(&second), ["/slow", "/fast"]);
        assert_eq!(second.versions.len(), 2, "and their version rows");
        let again = read_past_now(&f.store, second.through).await;
        assert!(again.is_empty(), "nothing twice: {again:?}");
    });
}

/// A transaction of another database of the cluster can never write rows
/// here, so the feed does not wait for it: a long load next door must not
/// hold back every other database's pulls until it ends. (The test above
/// shows that one of this database is waited for.)
#[test]
fn a_transaction_of_another_database_is_not_waited_for() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let f = pollster::block_on(PgFixture::new());
    rt.block_on(async {
        let other = nexus_tests::pg::database("feed_next_door").await;
        let next_door = nexus_tests::pg::connect(&other.url).await;
        next_door
            .batch_execute("BEGIN; CREATE TABLE held (x int); INSERT INTO held VALUES (1)")
            .await
            .unwrap();
        let held: i64 = next_door
            .query_one("SELECT pg_current_xact_id()::text::int8", &[])
            .await
            .unwrap()
            .get(0);

        f.store
            .put(NewFile::new("/after", "l", "p", 1))
            .await
            .unwrap();
        // Other tests' transactions may hold the feed back for a moment
        // (those of sessions that end while a page is read count as
        // running); the one held here, never.
        let started = std::time::Instant::now();
        let mut seen = Changes::default();
        while !file_paths(&seen).contains(&"/after") {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the feed waited for transaction {held} of another database: at {}",
                seen.through
            );
            let page = f
                .store
                .changes_after(seen.through, None, 1000)
                .await
                .unwrap();
            seen.files.extend(page.changes.files);
            seen.through = page.changes.through;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(seen.through > held, "past {held}: {}", seen.through);
        next_door.batch_execute("COMMIT").await.unwrap();
    });
}

/// What a reader has seen: (table, key) -> the stamps it saw for it.
#[derive(Default)]
struct Seen(BTreeMap<(String, String), Vec<i64>>);

impl Seen {
    /// The rows of a page; `continued`: the page goes on inside the
    /// transaction `c.after` (all its rows have that stamp).
    fn add(&mut self, c: &Changes, continued: bool) {
        let mut note = |table: &str, key: String, seq: i64| {
            assert!(
                (seq > c.after || continued && seq == c.after) && seq <= c.through,
                "{table} {key}: stamp {seq} outside the page ({}, {}]",
                c.after,
                c.through
            );
            self.0
                .entry((table.to_string(), key))
                .or_default()
                .push(seq);
        };
        for r in &c.files {
            note("file_paths", r.path_id.clone(), r.change_seq);
        }
        for r in &c.versions {
            note("version_history", r.version_id.clone(), r.change_seq);
        }
        for r in &c.metadata {
            note(
                "file_metadata",
                format!("{}/{}", r.path_id, r.key),
                r.change_seq,
            );
        }
        for r in &c.chunks {
            note(
                "content_chunks",
                format!("{}/{}", r.tenant_id, r.content_hash),
                r.change_seq,
            );
        }
        for r in &c.tombstones {
            note(
                "tombstones",
                format!("{}/{}/{}", r.table_name, r.key1, r.key2),
                r.change_seq,
            );
        }
    }
}

/// Eight writers (puts, batches bigger than a page, metadata, renames,
/// deletes, chunks) in two tenants and transactions held open on purpose,
/// while a reader polls the feed in small pages. At the end the reader has
/// seen every row's final state, each stamp once, and nothing twice.
#[test]
fn a_polling_reader_sees_every_committed_row_exactly_once() {
    polling_reader_sees_every_row_once(None);
}

/// The same with a reader of one tenant's feed (a sync server's pulls):
/// every row of its tenant exactly once, none of the other tenant's, the
/// transactions it waits for included.
#[test]
fn a_tenant_s_polling_reader_sees_every_row_of_its_tenant_exactly_once() {
    polling_reader_sees_every_row_once(Some("default"));
}

/// The writers' tenants: writer `t` writes in this one.
fn writer_tenant(t: usize) -> &'static str {
    if t.is_multiple_of(2) {
        "default"
    } else {
        "other"
    }
}

fn polling_reader_sees_every_row_once(tenant: Option<&str>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let f = pollster::block_on(PgFixture::new());
    let store = f.store.clone();
    let mut seen = Seen::default();
    let mut pages = 0;
    let mut parts = 0;
    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..8)
            .map(|t| {
                let s = store.with_tenant(writer_tenant(t)).unwrap();
                scope.spawn(move || {
                    pollster::block_on(async {
                        for i in 0..40 {
                            let path = format!("/w{t}/f{i}");
                            s.put(NewFile::new(&path, "l", "p", i).etag(format!("e{i}")))
                                .await
                                .unwrap();
                            match i % 8 {
                                1 => s.set_metadata(&path, "k", &json!(i)).await.unwrap(),
                                2 => drop(s.delete(&format!("/w{t}/f{}", i - 2)).await.unwrap()),
                                3 => {
                                    assert_eq!(
                                        s.rename(&path, &format!("/w{t}/moved{i}")).await.unwrap(),
                                        1
                                    )
                                }
                                4 => {
                                    let batch: Vec<NewFile> = (0..12)
                                        .map(|j| {
                                            NewFile::new(format!("/w{t}/b{i}-{j}"), "l", "p", j)
                                        })
                                        .collect();
                                    s.put_batch(&batch).await.unwrap();
                                }
                                5 => drop(
                                    s.add_chunk_ref(&format!("h{t}-{i}"), 5, "s").await.unwrap(),
                                ),
                                6 => drop(
                                    s.delete_metadata(&format!("/w{t}/f{}", i - 5), "k")
                                        .await
                                        .unwrap(),
                                ),
                                _ => {}
                            }
                        }
                    })
                })
            })
            .collect();
        // Transactions that take their id early and commit late.
        let holder = scope.spawn(|| {
            rt.block_on(async {
                let c = nexus_tests::pg::connect(f.url()).await;
                for n in 0..6 {
                    c.batch_execute("BEGIN").await.unwrap();
                    c.execute(PUT_SQL, &[&format!("/held/{n}")]).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    c.batch_execute("COMMIT").await.unwrap();
                }
            })
        });
        let mut after = 0;
        let mut within: Option<nexus_core::SnapshotCursor> = None;
        // Once every writer is done: the first id not yet handed out then.
        let mut horizon = None;
        loop {
            // Pages of 7 rows: a batch of 12 files (24 rows) comes in parts.
            let page =
                pollster::block_on(store.tenant_changes_after(tenant, after, within.as_ref(), 7))
                    .unwrap();
            assert_eq!(page.changes.after, after);
            assert!(
                page.changes.through >= after,
                "the position never goes back"
            );
            seen.add(&page.changes, within.is_some());
            parts += usize::from(page.within.is_some());
            after = page.changes.through;
            within = page.within;
            pages += 1;
            if within.is_none() && horizon.is_some_and(|h| after >= h - 1) {
                break;
            }
            if horizon.is_none() && writers.iter().all(|w| w.is_finished()) && holder.is_finished()
            {
                horizon = Some(xmax(&store));
            }
            std::thread::sleep(Duration::from_millis(3));
        }
    });

    // The final state of every table (of the tenant), read directly.
    let of_tenant = |mine: &str| match tenant {
        Some(t) => mine.replace("$t", &format!("'{t}'")),
        None => "true".to_string(),
    };
    let files_of = "path_id IN (SELECT path_id FROM file_paths WHERE tenant_id = $t)";
    let finals = pollster::block_on(async {
        let mut all = BTreeMap::new();
        for (table, key, mine) in [
            ("file_paths", "path_id::text", "tenant_id = $t"),
            ("version_history", "version_id::text", files_of),
            ("file_metadata", "path_id::text || '/' || key", files_of),
            (
                "content_chunks",
                "tenant_id || '/' || content_hash",
                "tenant_id = $t",
            ),
            (
                "tombstones",
                "table_name || '/' || key1 || '/' || key2",
                "(table_name = 'content_chunks' AND key1 = $t) OR (table_name = 'file_metadata' \
                 AND key1 IN (SELECT path_id::text FROM file_paths WHERE tenant_id = $t))",
            ),
        ] {
            let mine = of_tenant(mine);
            for row in f
                .store
                .debug_query(&format!(
                    "SELECT {key}, change_seq::text FROM {table} WHERE {mine}"
                ))
                .await
                .unwrap()
            {
                all.insert(
                    (table.to_string(), row[0].clone().unwrap()),
                    row[1].as_deref().unwrap().parse::<i64>().unwrap(),
                );
            }
        }
        all
    });
    let held: BTreeSet<_> = finals.keys().filter(|(t, _)| t == "file_paths").collect();
    let writers = (0..8)
        .filter(|&t| tenant.is_none_or(|x| writer_tenant(t) == x))
        .count();
    assert!(
        held.len() > writers * 40,
        "writers wrote ({} files)",
        held.len()
    );
    assert!(
        pages > 10,
        "the reader polled while writers wrote ({pages} pages)"
    );
    assert!(parts > 0, "batches larger than a page came in parts");
    for (key, stamp) in &finals {
        let stamps = seen
            .0
            .get(key)
            .unwrap_or_else(|| panic!("{key:?} (stamp {stamp}) never reached the reader"));
        assert_eq!(
            stamps.last(),
            Some(stamp),
            "{key:?}: the reader's last version is the final one"
        );
        let distinct: BTreeSet<_> = stamps.iter().collect();
        assert_eq!(
            distinct.len(),
            stamps.len(),
            "{key:?} seen twice at one stamp: {stamps:?}"
        );
    }
    let gone: Vec<_> = seen.0.keys().filter(|k| !finals.contains_key(*k)).collect();
    // Metadata and chunks removed for good leave tombstones; nothing else disappears.
    for (table, key) in &gone {
        assert!(
            table == "file_metadata" || table == "content_chunks",
            "{table} {key} was delivered but is not in the table"
        );
    }
}

/// A tenant's page is bounded by its own rows, not by every tenant's
/// changes since its position: with another tenant's 60 transactions around
/// its one, a page of 10 rows holds its file and reaches the end of the
/// feed at once (a reader that scanned every tenant's changes needed seven
/// pages, most of them empty).
#[test]
fn a_tenant_s_page_is_not_filled_by_other_tenants_changes() {
    pollster::block_on(async {
        let f = PgFixture::new().await;
        let a = f.store.with_tenant("a").unwrap();
        let b = f.store.with_tenant("b").unwrap();
        for i in 0..30 {
            b.put(NewFile::new(format!("/b{i}"), "l", "p", 1))
                .await
                .unwrap();
        }
        a.put(NewFile::new("/mine", "l", "p", 1)).await.unwrap();
        a.set_metadata("/mine", "k", &json!(1)).await.unwrap();
        for i in 30..60 {
            b.put(NewFile::new(format!("/b{i}"), "l", "p", 1))
                .await
                .unwrap();
        }
        let page = f
            .store
            .tenant_changes_after(Some("a"), 0, None, 10)
            .await
            .unwrap();
        assert_eq!(file_paths(&page.changes), ["/mine"]);
        assert_eq!(page.changes.versions.len(), 1);
        assert_eq!(page.changes.metadata.len(), 1);
        assert!(page.caught_up, "one page reaches the end: {page:?}");
        assert!(page.within.is_none());
        // Nothing after it for this tenant; the other's feed has its own.
        let next = f
            .store
            .tenant_changes_after(Some("a"), page.changes.through, None, 10)
            .await
            .unwrap();
        assert!(next.changes.files.is_empty() && next.caught_up);
        let mut theirs = 0;
        for (p, _) in feed_pages(&f.store, Some("b"), 10).await {
            assert!(!file_paths(&p.changes).contains(&"/mine"));
            theirs += p.changes.files.len();
        }
        assert_eq!(theirs, 60);
    });
}

/// A tenant's transactions whose rows were all written again later still
/// count as transactions of its feed (their entries stay) but hold no rows:
/// a page made of them alone ends at the last it listed, and the file
/// written after them still comes.
#[test]
fn a_tenant_s_feed_passes_transactions_whose_rows_were_written_again() {
    pollster::block_on(async {
        let f = PgFixture::new().await;
        let a = f.store.with_tenant("a").unwrap();
        a.put(NewFile::new("/k.txt", "l", "p", 1)).await.unwrap();
        for i in 0..12 {
            a.set_metadata("/k.txt", "k", &json!(i)).await.unwrap();
        }
        a.put(NewFile::new("/last.txt", "l", "p", 1)).await.unwrap();
        let pages = feed_pages(&f.store, Some("a"), 3).await;
        let mut files = Vec::new();
        let mut values = Vec::new();
        for (p, _) in &pages {
            files.extend(p.changes.files.iter().map(|r| r.virtual_path.clone()));
            values.extend(p.changes.metadata.iter().map(|m| m.value.clone()));
        }
        assert!(pages.len() < 50, "the feed does not end");
        files.sort();
        assert_eq!(files, ["/k.txt", "/last.txt"]);
        assert_eq!(values, ["11"], "the key's last value, once");
        assert!(
            pages.len() > 2,
            "pages of 3 rows over 14 transactions: {}",
            pages.len()
        );
    });
}

/// The pages of the feed of one tenant or (`None`) all, from the start to
/// its end, of `max_rows` rows, each with whether it went on inside the
/// transaction the previous page ended in.
async fn feed_pages(
    store: &PgStore,
    tenant: Option<&str>,
    max_rows: usize,
) -> Vec<(nexus_pg::FeedPage, bool)> {
    let mut pages: Vec<(nexus_pg::FeedPage, bool)> = Vec::new();
    loop {
        let (after, within) = match pages.last() {
            Some((p, _)) => (p.changes.through, p.within.clone()),
            None => (0, None),
        };
        let page = store
            .tenant_changes_after(tenant, after, within.as_ref(), max_rows)
            .await
            .unwrap();
        assert!(
            page.changes.through >= after,
            "the position never goes back"
        );
        let end = page.caught_up && page.within.is_none();
        pages.push((page, within.is_some()));
        assert!(pages.len() < 1000, "the feed does not end");
        if end {
            return pages;
        }
    }
}

/// Every row of the feed ([`feed_pages`]), keyed by table and key, with its
/// last stamp.
async fn feed_rows(
    store: &PgStore,
    tenant: Option<&str>,
    max_rows: usize,
) -> BTreeMap<(String, String), i64> {
    let mut seen = Seen::default();
    for (page, continued) in feed_pages(store, tenant, max_rows).await {
        seen.add(&page.changes, continued);
    }
    seen.0
        .into_iter()
        .map(|(k, stamps)| (k, *stamps.last().unwrap()))
        .collect()
}

/// The tenant a row of the feed belongs to by the feed's rule, given each
/// file's tenant and each version's file; `None`: no tenant's (another
/// table's removal).
fn tenant_of(
    (table, key): &(String, String),
    files: &BTreeMap<String, String>,
    version_files: &BTreeMap<String, String>,
) -> Option<String> {
    let mut parts = key.splitn(3, '/');
    let (first, second) = (parts.next().unwrap(), parts.next());
    match table.as_str() {
        "file_paths" | "file_metadata" => files.get(first).cloned(),
        "version_history" => files.get(&version_files[key]).cloned(),
        "content_chunks" => Some(first.to_string()),
        _ => match (first, second) {
            ("content_chunks", Some(tenant)) => Some(tenant.to_string()),
            ("file_metadata", Some(id)) => files.get(id).cloned(),
            _ => None,
        },
    }
}

/// A bulk load into an empty database (the triggers off while it copies,
/// its entries noted at once after) and an incremental run after it: each
/// tenant's feed holds exactly the rows of the whole feed that are its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_load_and_later_runs_reach_every_tenant_s_feed() {
    let db = nexus_tests::pg::database("feed_tenants_bulk").await;
    let f = crate::common::Fixture::file().await;
    crate::pg_sync::populate(&f).await;
    let r =
        nexus_sync::Replicator::new(f.store.clone(), nexus_sync::PgUrl::parse(&db.url).unwrap());
    assert_eq!(r.sync().await.unwrap().mode, nexus_sync::SyncMode::Full);
    let store = PgStore::connect(&db.url, nexus_pg::PgOptions::default())
        .await
        .unwrap();
    let check = async |round: &str| {
        let all = feed_rows(&store, None, 1000).await;
        // Each file's tenant, and each version's file, from the database.
        let mut files = BTreeMap::new();
        for row in store
            .debug_query("SELECT path_id::text, tenant_id FROM file_paths")
            .await
            .unwrap()
        {
            files.insert(row[0].clone().unwrap(), row[1].clone().unwrap());
        }
        let mut version_files = BTreeMap::new();
        for row in store
            .debug_query("SELECT version_id::text, path_id::text FROM version_history")
            .await
            .unwrap()
        {
            version_files.insert(row[0].clone().unwrap(), row[1].clone().unwrap());
        }
        let mut want: BTreeMap<String, BTreeMap<(String, String), i64>> = BTreeMap::new();
        for (key, stamp) in &all {
            let owner = tenant_of(key, &files, &version_files);
            if let Some(t) = owner {
                want.entry(t).or_default().insert(key.clone(), *stamp);
            }
        }
        assert_eq!(want.len(), 2, "{round}: two tenants wrote: {want:?}");
        for (tenant, rows) in &want {
            // Pages of 3 rows: lists cut at their limit, transactions in parts.
            let got = feed_rows(&store, Some(tenant), 3).await;
            assert_eq!(&got, rows, "{round}: the feed of {tenant}");
        }
    };
    check("after the bulk load").await;
    let acme = f.with_tenant("acme").unwrap();
    acme.set_metadata("/a.txt", "later", &json!(1))
        .await
        .unwrap();
    f.put(NewFile::new("/later.txt", "l", "p", 1))
        .await
        .unwrap();
    f.add_chunk_ref("c9", 1, "/cas/c9").await.unwrap();
    assert_eq!(
        r.sync().await.unwrap().mode,
        nexus_sync::SyncMode::Incremental
    );
    check("after an incremental run").await;
}

/// Rows that came from another store keep its id and sequence number; rows
/// written here have none.
#[test]
fn synced_rows_keep_their_origin() {
    let f = pollster::block_on(PgFixture::new());
    let dir = tempfile::tempdir().unwrap();
    let source = pollster::block_on(Store::open(dir.path().join("a.db"))).unwrap();
    pollster::block_on(async {
        source
            .put(NewFile::new("/from-a", "l", "p", 1))
            .await
            .unwrap();
        source
            .set_metadata("/from-a", "k", &json!("v"))
            .await
            .unwrap();
    });
    let source_seq = pollster::block_on(source.stats()).unwrap().change_seq;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = rt
        .block_on(
            nexus_sync::Replicator::new(source.clone(), nexus_sync::PgUrl::parse(f.url()).unwrap())
                .sync(),
        )
        .unwrap();
    let store: &PgStore = &f.store;
    pollster::block_on(store.put(NewFile::new("/local", "l", "p", 1))).unwrap();
    let before_local_edit = rt.block_on(read_past_now(store, 0));
    let synced_version = before_local_edit
        .versions
        .iter()
        .find(|v| v.origin.is_some())
        .expect("the synced version row has an origin")
        .clone();
    let changes = rt.block_on(read_past_now(store, 0));
    let by_path: BTreeMap<_, _> = changes
        .files
        .iter()
        .map(|r| (r.virtual_path.as_str(), r.origin.clone()))
        .collect();
    let origin = by_path["/from-a"]
        .clone()
        .expect("a synced row has an origin");
    assert_eq!(origin.source_id, report.source_id);
    assert!(origin.seq >= 1 && origin.seq <= source_seq, "{origin:?}");
    assert_eq!(by_path["/local"], None, "written here");
    let meta = &changes.metadata[0];
    // A local put with the same etag updates the version row in place: it
    // is a local change now, so its origin is cleared.
    let file = pollster::block_on(store.get("/from-a")).unwrap().unwrap();
    let mut same = NewFile::new("/from-a", "l", "moved", 1);
    same.etag = file.etag.clone();
    pollster::block_on(store.put(same)).unwrap();
    let later = rt.block_on(read_past_now(store, changes.through));
    let version = later
        .versions
        .iter()
        .find(|v| v.version_id == synced_version.version_id)
        .expect("the version row changed");
    assert_eq!(version.physical_path, "moved");
    assert_eq!(version.origin, None, "a local change has no origin");
    assert_eq!(meta.value, "\"v\"", "values as canonical JSON text");
    assert_eq!(
        meta.origin.as_ref().map(|o| o.source_id.as_str()),
        Some(report.source_id.as_str())
    );
}

/// A page's bound is made durable before the page is handed out by a
/// commit of the reader's own that takes a new transaction id and writes
/// a record (a transactional `pg_logical_emit_message`: a commit that
/// wrote nothing else would not be flushed), as is a snapshot's position:
/// when that fails, neither the page nor the position is handed out (the
/// snapshot's rows may have reached its sink), and the connection is left
/// out of the failed transaction (a pooled connection goes on serving).
/// Seen through a probe in the reader's search path in place of
/// `pg_logical_emit_message`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_whose_bound_cannot_be_made_durable_is_not_handed_out() {
    let db = nexus_tests::pg::database("feed_durable").await;
    let store = PgStore::connect(&db.url, nexus_pg::PgOptions::default())
        .await
        .unwrap();
    store
        .put(NewFile::new("/durable", "l", "p", 1))
        .await
        .unwrap();
    let mut reader = nexus_tests::pg::connect(&db.url).await;
    reader
        .batch_execute(
            "CREATE SCHEMA probe; \
             CREATE FUNCTION probe.pg_logical_emit_message(boolean, text, text) RETURNS pg_lsn \
             LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'the reader wrote a record'; END $$; \
             SET search_path = probe, pg_catalog, public",
        )
        .await
        .unwrap();
    let cache = nexus_postgres::StatementCache::default();
    for _ in 0..2 {
        // A page (its own transaction takes the id) and a snapshot read (a
        // transaction after it does).
        let page = nexus_pg::read_page(&mut reader, &cache, 0, None, 100).await;
        let mut chunks = 0;
        let snapshot = nexus_pg::read_snapshot(&mut reader, 100, None, |_| {
            chunks += 1;
            Ok(())
        })
        .await;
        assert!(chunks > 0, "the snapshot was read");
        for e in [page.unwrap_err(), snapshot.unwrap_err()] {
            assert!(
                e.to_string().contains("making the feed's position durable"),
                "{e}"
            );
        }
    }
    // Out of the failed transaction: a session setting takes.
    reader
        .batch_execute("SET search_path = public")
        .await
        .unwrap();
    let page = nexus_pg::read_page(&mut reader, &cache, 0, None, 100)
        .await
        .unwrap();
    assert_eq!(file_paths(&page.changes), vec!["/durable"]);
}
