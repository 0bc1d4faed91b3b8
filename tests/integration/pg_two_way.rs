//! Two-way sync through one PostgreSQL: push from many sources, pull,
//! and the conflict rule (nothing lost), with real stores and a real server.

use std::collections::BTreeMap;

use nexus_core::{CONFLICT_KEY, MetadataStore, NewFile, Store};
use nexus_sync::{PgUrl, Remote, Replicator, SyncOptions, pull, sync_with};
use nexus_tests::pg;
use proptest::prelude::*;
use serde_json::{Value, json};

/// What a user sees of a store: each live file (identity, content,
/// version) and its metadata.
type FileView = (String, Option<String>, u64, u32, BTreeMap<String, Value>);
type State = BTreeMap<String, FileView>;

async fn state(s: &dyn MetadataStore) -> State {
    let mut out = State::new();
    for f in s.list("/").await.unwrap() {
        let meta = s.list_metadata(&f.path).await.unwrap();
        out.insert(f.path.clone(), (f.path_id, f.etag, f.size, f.version, meta));
    }
    out
}

async fn pg_state(url: &str) -> State {
    let store = nexus_pg::PgStore::connect(url, nexus_pg::PgOptions::default())
        .await
        .unwrap();
    state(&store).await
}

fn url(u: &str) -> PgUrl {
    PgUrl::parse(u).unwrap()
}

fn remote(u: &str) -> Remote {
    url(u).into()
}

async fn push(s: &Store, u: &str) -> nexus_sync::SyncReport {
    Replicator::new(s.clone(), url(u)).sync().await.unwrap()
}

async fn both(s: &Store, u: &str) -> nexus_sync::SyncWithReport {
    sync_with(s, &remote(u), &SyncOptions::default())
        .await
        .unwrap()
}

/// `nexus verify` holds: the store and PostgreSQL have the same rows.
async fn assert_verified(s: &Store, u: &str) {
    let v = Replicator::new(s.clone(), url(u)).verify().await.unwrap();
    assert!(v.equal(), "verify: {:?}", v.differences());
}

fn file(path: &str, etag: &str) -> NewFile {
    NewFile::new(path, "local", format!("/srv{path}"), etag.len() as u64).etag(etag)
}

/// An in-memory store holding `files`, each put on its own.
async fn store_with(files: impl IntoIterator<Item = NewFile>) -> Store {
    let s = Store::memory().await.unwrap();
    for f in files {
        s.put(f).await.unwrap();
    }
    s
}

/// Every store pushes into `u` at the same time (all started before any is
/// awaited); their reports, in the stores' order.
async fn push_at_once(stores: &[Store], u: &str) -> Vec<nexus_sync::SyncReport> {
    let pushes: Vec<_> = stores
        .iter()
        .map(|s| {
            let (s, u) = (s.clone(), u.to_string());
            tokio::spawn(async move { Replicator::new(s, url(&u)).sync().await })
        })
        .collect();
    let mut reports = Vec::new();
    for p in pushes {
        reports.push(p.await.unwrap().unwrap());
    }
    reports
}

/// The case of the issue: two stores that each recorded `/shared.txt` (and
/// a file of their own) push into one database. The second is not stuck:
/// its file is kept as a conflict copy, its own file arrives, and after
/// both sync both ways all three hold the same files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sources_one_path_make_a_conflict_copy() {
    let db = pg::database("two_way_same_path").await;
    let a = Store::memory().await.unwrap();
    let b = Store::memory().await.unwrap();
    a.put(file("/shared.txt", "from-a")).await.unwrap();
    a.put(file("/a-only.txt", "a")).await.unwrap();
    b.put(file("/shared.txt", "from-b")).await.unwrap();
    b.put(file("/b-only.txt", "b")).await.unwrap();
    b.set_metadata("/shared.txt", "by", &json!("b"))
        .await
        .unwrap();

    assert!(push(&a, &db.url).await.conflicts.is_empty());
    let r = push(&b, &db.url).await;
    assert_eq!(r.conflicts.len(), 1, "{:?}", r.conflicts);
    let c = &r.conflicts[0];
    assert_eq!(c.path, "/shared.txt");
    assert!(
        c.copy.starts_with("/shared.sync-conflict-") && c.copy.ends_with(".txt"),
        "{}",
        c.copy
    );
    let b_id = b.snapshot().await.unwrap().source_id().to_string();
    assert!(c.copy.contains(&b_id[..8]), "{} names the source", c.copy);
    // Later runs are not stuck.
    b.put(file("/b-later.txt", "later")).await.unwrap();
    assert!(push(&b, &db.url).await.conflicts.is_empty());

    let pg = pg_state(&db.url).await;
    assert_eq!(
        pg["/shared.txt"].1.as_deref(),
        Some("from-a"),
        "first arrival keeps the path"
    );
    let copy = &pg[&c.copy];
    assert_eq!(copy.1.as_deref(), Some("from-b"));
    assert_eq!(copy.4["by"], json!("b"), "the copy keeps its metadata");
    assert_eq!(copy.4[CONFLICT_KEY]["path"], json!("/shared.txt"));
    assert_eq!(copy.4[CONFLICT_KEY]["source"], json!(b_id));
    for p in ["/a-only.txt", "/b-only.txt", "/b-later.txt"] {
        assert!(pg.contains_key(p), "{p} arrived");
    }

    both(&a, &db.url).await;
    both(&b, &db.url).await;
    assert_eq!(state(&a).await, pg);
    assert_eq!(state(&b).await, pg);
    assert_verified(&a, &db.url).await;
    assert_verified(&b, &db.url).await;
    // `nexus find nexus.conflict` finds the copy.
    let found = b.find_by_metadata(CONFLICT_KEY, None).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
}

/// Pull brings everything once: files, versions, metadata, deletions; the
/// store's own pushes come back recognised and are not applied again; a
/// pull with nothing new is up to date.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_brings_every_change_once() {
    let db = pg::database("two_way_pull").await;
    let a = Store::memory().await.unwrap();
    crate::pg_sync::populate(&a).await;
    push(&a, &db.url).await;

    let b = Store::memory().await.unwrap();
    let first = pull(&b, &remote(&db.url), &SyncOptions::default())
        .await
        .unwrap();
    assert!(first.rows() > 0 && first.pages >= 1, "{first:?}");
    let pg = pg_state(&db.url).await;
    assert_eq!(state(&b).await, pg);
    assert_eq!(
        state(&a.with_tenant("acme").unwrap()).await,
        state(&b.with_tenant("acme").unwrap()).await
    );
    let again = pull(&b, &remote(&db.url), &SyncOptions::default())
        .await
        .unwrap();
    // Nothing new, and nothing written for it: pages with no rows do not
    // move the stored position.
    assert_eq!((again.rows(), again.pages), (0, 0));
    assert!(again.from <= first.to);

    // A changes one file and deletes another; B gets exactly that.
    a.put(file("/a.txt", "changed")).await.unwrap();
    a.delete("/z").await.unwrap();
    push(&a, &db.url).await;
    let inc = pull(&b, &remote(&db.url), &SyncOptions::default())
        .await
        .unwrap();
    assert!(inc.files >= 1 && inc.rows() < first.rows(), "{inc:?}");
    assert_eq!(state(&b).await, pg_state(&db.url).await);
    assert_eq!(b.get("/z").await.unwrap(), None);

    // A's own changes come back recognised; nothing is pushed back by B.
    let own = pull(&a, &remote(&db.url), &SyncOptions::default())
        .await
        .unwrap();
    assert!(own.own > 0, "{own:?}");
    assert_eq!(own.rows(), 0, "{own:?}");
    let back = push(&b, &db.url).await;
    assert_eq!(back.rows(), 0, "pulled rows are not pushed back: {back:?}");
}

/// Paths change hands inside one pulled page: two files swap paths, a
/// third path is freed by a delete and taken by a new file, and a new file
/// takes a path nobody held. Files whose path is free go live in their
/// upsert, the others once the page's moves are in place; none is left
/// hidden, and the identities follow the files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_changing_hands_in_one_pulled_page() {
    let db = pg::database("two_way_hands").await;
    let a = store_with([file("/x/a", "a"), file("/x/b", "b"), file("/x/c", "c")]).await;
    push(&a, &db.url).await;
    let b = Store::memory().await.unwrap();
    pull(&b, &remote(&db.url), &SyncOptions::default())
        .await
        .unwrap();
    let before = state(&b).await;

    a.rename("/x/a", "/x/tmp").await.unwrap();
    a.rename("/x/b", "/x/a").await.unwrap();
    a.rename("/x/tmp", "/x/b").await.unwrap();
    a.delete("/x/c").await.unwrap();
    a.put(file("/x/c", "new c")).await.unwrap();
    a.put(file("/x/d", "d")).await.unwrap();
    push(&a, &db.url).await;

    let p = pull(&b, &remote(&db.url), &SyncOptions::default())
        .await
        .unwrap();
    assert_eq!(p.pages, 1, "{p:?}");
    let after = state(&b).await;
    assert_eq!(after, state(&a).await);
    assert_eq!(after, pg_state(&db.url).await);
    assert_eq!(after["/x/a"].0, before["/x/b"].0, "the files swapped paths");
    assert_eq!(after["/x/b"].0, before["/x/a"].0, "the files swapped paths");
    assert_ne!(after["/x/c"].0, before["/x/c"].0, "a new file took /x/c");
    assert_eq!(after["/x/c"].1.as_deref(), Some("new c"));
    assert_eq!(after.len(), 4);
    assert_verified(&b, &db.url).await;
}

/// Two stores set metadata of one file, one key on both sides: per key the
/// later arrival in PostgreSQL wins, and the keys only one side set stay,
/// in both stores and in PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_keys_settle_one_by_one() {
    let db = pg::database("two_way_meta_keys").await;
    let a = Store::memory().await.unwrap();
    let b = Store::memory().await.unwrap();
    a.put(file("/m.txt", "m")).await.unwrap();
    both(&a, &db.url).await;
    both(&b, &db.url).await;
    a.set_metadata("/m.txt", "shared", &json!("from a"))
        .await
        .unwrap();
    a.set_metadata("/m.txt", "only-a", &json!(1)).await.unwrap();
    b.set_metadata("/m.txt", "shared", &json!("from b"))
        .await
        .unwrap();
    b.set_metadata("/m.txt", "only-b", &json!(2)).await.unwrap();
    let first = both(&a, &db.url).await;
    let later = both(&b, &db.url).await;
    both(&a, &db.url).await;
    assert!(
        first.push.conflicts.is_empty() && later.push.conflicts.is_empty(),
        "metadata makes no conflict copy"
    );
    let expected: BTreeMap<String, Value> = [
        ("only-a".to_string(), json!(1)),
        ("only-b".to_string(), json!(2)),
        ("shared".to_string(), json!("from b")),
    ]
    .into();
    for s in [&a, &b] {
        assert_eq!(s.list_metadata("/m.txt").await.unwrap(), expected);
        assert_verified(s, &db.url).await;
    }
    assert_eq!(pg_state(&db.url).await["/m.txt"].4, expected);
}

/// A file row of the feed, live at `path` unless `deleted`.
fn feed_file(id: &str, path: &str, seq: i64) -> nexus_core::FileRow {
    nexus_core::FileRow {
        path_id: id.to_string(),
        tenant_id: "default".to_string(),
        virtual_path: path.to_string(),
        backend_id: "local".to_string(),
        physical_path: format!("/srv{path}"),
        size_bytes: 1,
        content_hash: None,
        file_type: None,
        created_at: 1,
        updated_at: seq,
        deleted_at: None,
        current_version: 1,
        change_seq: seq,
        origin: None,
    }
}

/// Pages of a feed as it can give them (rows as they are now, so a file's
/// move can come after another file took its old path): W arrives at a
/// path that H still holds here and waits, hidden; the next page moves H
/// away and brings a new file N to that path, which goes live; W keeps
/// waiting (N is PostgreSQL's, not a local change: the page is not
/// refused) until the page that moves W comes. With N before H in the
/// page, W takes the path and N waits instead. Either way all three end
/// live where the feed says.
#[tokio::test]
async fn a_file_waiting_from_an_earlier_page_and_a_new_file_at_its_path() {
    for n_first in [false, true] {
        let s = Store::memory().await.unwrap();
        let id = |c: char| format!("00000000-0000-4000-8000-00000000000{c}");
        let (h, w, n) = (id('1'), id('2'), id('3'));
        let page = |after: i64, files: Vec<nexus_core::FileRow>| nexus_core::Changes {
            after,
            through: after + 10,
            files,
            ..Default::default()
        };
        let apply = |c: nexus_core::Changes| {
            let s = s.clone();
            async move { s.apply_pull("hub", 0, &c).await }
        };
        apply(page(0, vec![feed_file(&h, "/p", 10)])).await.unwrap();
        apply(page(10, vec![feed_file(&w, "/p", 20)]))
            .await
            .unwrap();
        assert_eq!(s.get("/p").await.unwrap().unwrap().path_id, h, "W waits");

        let mut third = vec![feed_file(&h, "/q", 30), feed_file(&n, "/p", 30)];
        if n_first {
            third.reverse();
        }
        apply(page(20, third))
            .await
            .unwrap_or_else(|e| panic!("the page is refused (N first: {n_first}): {e}"));
        let at_p = s.get("/p").await.unwrap().unwrap().path_id;
        assert_eq!(at_p, if n_first { w.clone() } else { n.clone() });
        assert_eq!(s.get("/q").await.unwrap().unwrap().path_id, h);

        apply(page(30, vec![feed_file(&w, "/r", 40)]))
            .await
            .unwrap();
        let live: Vec<(String, String)> = s
            .list("/")
            .await
            .unwrap()
            .into_iter()
            .map(|f| (f.path, f.path_id))
            .collect();
        assert_eq!(
            live,
            [
                ("/p".to_string(), n.clone()),
                ("/q".to_string(), h.clone()),
                ("/r".to_string(), w.clone())
            ],
            "N first: {n_first}"
        );
    }
}

/// Both stores change one file they both have: the first push keeps the
/// path, the second's version is kept in a conflict copy with its versions;
/// a delete against a change keeps the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_change_one_file() {
    let db = pg::database("two_way_same_file").await;
    let a = Store::memory().await.unwrap();
    let b = Store::memory().await.unwrap();
    a.put(file("/f.txt", "v1")).await.unwrap();
    a.put(file("/g.txt", "g1")).await.unwrap();
    both(&a, &db.url).await;
    both(&b, &db.url).await;
    assert_eq!(state(&b).await, state(&a).await);

    a.put(file("/f.txt", "a2")).await.unwrap();
    b.put(file("/f.txt", "b2")).await.unwrap();
    b.put(file("/f.txt", "b3")).await.unwrap();
    a.put(file("/g.txt", "g2")).await.unwrap();
    b.delete("/g.txt").await.unwrap();
    assert!(both(&a, &db.url).await.push.conflicts.is_empty());
    let r = both(&b, &db.url).await;
    assert_eq!(r.push.conflicts.len(), 1, "{:?}", r.push.conflicts);
    let copy = r.push.conflicts[0].copy.clone();
    both(&a, &db.url).await;

    let pg = pg_state(&db.url).await;
    assert_eq!(state(&a).await, pg);
    assert_eq!(state(&b).await, pg);
    assert_eq!(pg["/f.txt"].1.as_deref(), Some("a2"));
    assert_eq!(pg[&copy].1.as_deref(), Some("b3"));
    assert_eq!(
        pg["/g.txt"].1.as_deref(),
        Some("g2"),
        "modify wins over delete"
    );
    // B's versions went with its copy: b2 is in its history.
    let versions = b.list_versions(&copy).await.unwrap();
    assert!(
        versions.iter().any(|v| v.etag.as_deref() == Some("b2")),
        "{versions:?}"
    );
}

/// One store renames a file, the other writes a new version of it: both
/// apply, whichever reaches PostgreSQL first. The file ends at the new name
/// with the new content, no conflict copy, and every store agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_and_a_new_version_of_one_file_both_apply() {
    let db = pg::database("two_way_rename_modify").await;
    let a = Store::memory().await.unwrap();
    let b = Store::memory().await.unwrap();
    a.put(file("/d/first.txt", "f1")).await.unwrap();
    a.put(file("/d/second.txt", "s1")).await.unwrap();
    both(&a, &db.url).await;
    both(&b, &db.url).await;
    let id = |s: State, p: &str| s[p].0.clone();
    let first = id(state(&a).await, "/d/first.txt");
    let second = id(state(&a).await, "/d/second.txt");

    // The new version arrives first, then the rename.
    a.rename("/d/first.txt", "/e/first.txt").await.unwrap();
    b.put(file("/d/first.txt", "f2")).await.unwrap();
    // The rename arrives first, then the new version.
    b.rename("/d/second.txt", "/e/second.txt").await.unwrap();
    a.put(file("/d/second.txt", "s2")).await.unwrap();
    b.set_metadata("/e/second.txt", "by", &json!("b"))
        .await
        .unwrap();

    let rb = both(&b, &db.url).await;
    let ra = both(&a, &db.url).await;
    assert!(rb.push.conflicts.is_empty(), "{:?}", rb.push.conflicts);
    assert!(ra.push.conflicts.is_empty(), "{:?}", ra.push.conflicts);
    both(&b, &db.url).await;

    let pg = pg_state(&db.url).await;
    let paths: Vec<&str> = pg.keys().map(String::as_str).collect();
    assert_eq!(paths, ["/e/first.txt", "/e/second.txt"], "{pg:?}");
    assert_eq!(pg["/e/first.txt"].0, first, "the same file");
    assert_eq!(pg["/e/first.txt"].1.as_deref(), Some("f2"));
    assert_eq!(pg["/e/first.txt"].3, 2);
    assert_eq!(pg["/e/second.txt"].0, second);
    assert_eq!(pg["/e/second.txt"].1.as_deref(), Some("s2"));
    assert_eq!(pg["/e/second.txt"].4["by"], json!("b"));
    for s in [&a, &b] {
        assert_eq!(state(s).await, pg);
        assert_verified(s, &db.url).await;
    }
}

/// One store renames a file to a path where another store, which writes a
/// new version of the file, has made a new file: the new version follows
/// the file to the path its rename took first in PostgreSQL, so the
/// pusher's two files want one path. Found by `three_stores_converge`:
/// the push failed for good (both made live at once, a unique violation,
/// retried as a race). The file that held the path keeps it, the pusher's
/// new file becomes a conflict copy, and every store agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_follows_a_rename_onto_a_path_the_pusher_filled() {
    let db = pg::database("two_way_rename_onto_new").await;
    let a = Store::memory().await.unwrap();
    let b = Store::memory().await.unwrap();
    a.put(file("/p/a", "v1")).await.unwrap();
    both(&a, &db.url).await;
    both(&b, &db.url).await;
    let id = state(&a).await["/p/a"].0.clone();

    b.rename("/p/a", "/s/a").await.unwrap();
    a.put(file("/s/a", "new-at-s")).await.unwrap();
    a.put(file("/p/a", "v2")).await.unwrap();
    let new_id = state(&a).await["/s/a"].0.clone();
    push(&b, &db.url).await;
    let ra = both(&a, &db.url).await;
    both(&b, &db.url).await;

    assert_eq!(ra.push.conflicts.len(), 1, "{:?}", ra.push.conflicts);
    let c = &ra.push.conflicts[0];
    assert_eq!(
        (c.path.as_str(), c.path_id.as_str()),
        ("/s/a", new_id.as_str())
    );
    assert!(c.copy.starts_with("/s/a.sync-conflict-"), "{c:?}");
    let pg = pg_state(&db.url).await;
    assert_eq!(pg.len(), 2, "{pg:?}");
    assert_eq!(pg["/s/a"].0, id, "the renamed file keeps its new path");
    assert_eq!((pg["/s/a"].1.as_deref(), pg["/s/a"].3), (Some("v2"), 2));
    let copy = &pg[&c.copy];
    assert_eq!(
        (copy.0.as_str(), copy.1.as_deref()),
        (new_id.as_str(), Some("new-at-s"))
    );
    assert!(copy.4.contains_key(CONFLICT_KEY), "{copy:?}");
    for s in [&a, &b] {
        assert_eq!(state(s).await, pg);
        assert_verified(s, &db.url).await;
    }
}

/// A pull tells the store's subscribers (`Store::subscribe`, the browser's
/// `onChange`) what it changed: the first pull into an empty store (a
/// snapshot) and a later one (the feed), with the paths pulled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_tell_subscribers() {
    let db = pg::database("two_way_subscribers").await;
    let a = store_with([file("/first.txt", "1")]).await;
    push(&a, &db.url).await;
    let b = Store::memory().await.unwrap();
    let sub = b.subscribe().await.unwrap();
    let paths = |e: nexus_core::ChangeEvent| -> Vec<String> {
        e.paths_of("default").map(str::to_string).collect()
    };
    let r = pull(&b, &remote(&db.url), &SyncOptions::default())
        .await
        .unwrap();
    assert!(r.bulk, "{r:?}");
    let e = tokio::time::timeout(std::time::Duration::from_secs(10), sub.next())
        .await
        .expect("an event after the first pull")
        .unwrap();
    assert_eq!(paths(e), ["/first.txt"]);

    a.put(file("/second.txt", "2")).await.unwrap();
    a.rename("/first.txt", "/moved.txt").await.unwrap();
    push(&a, &db.url).await;
    // The feed may stop short of the push for a moment (a transaction
    // ending while its bound is read): pull until both files are in; the
    // events of several pulls merge while nobody takes them.
    for _ in 0..100 {
        let r = pull(&b, &remote(&db.url), &SyncOptions::default())
            .await
            .unwrap();
        assert!(!r.bulk, "{r:?}");
        if b.get("/second.txt").await.unwrap().is_some()
            && b.get("/moved.txt").await.unwrap().is_some()
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let e = tokio::time::timeout(std::time::Duration::from_secs(10), sub.next())
        .await
        .expect("an event after the feed pull")
        .unwrap();
    assert_eq!(paths(e), ["/first.txt", "/moved.txt", "/second.txt"]);
}

/// A pull does not overwrite a local change that was not pushed: it names
/// the path; `sync --with` pushes first and resolves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_keeps_unpushed_changes() {
    let db = pg::database("two_way_unpushed").await;
    let a = Store::memory().await.unwrap();
    let b = Store::memory().await.unwrap();
    a.put(file("/f.txt", "v1")).await.unwrap();
    both(&a, &db.url).await;
    both(&b, &db.url).await;
    a.put(file("/f.txt", "a2")).await.unwrap();
    push(&a, &db.url).await;
    b.put(file("/f.txt", "b2")).await.unwrap();
    let e = pull(&b, &remote(&db.url), &SyncOptions::default())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("/f.txt") && e.to_string().contains("push first"),
        "{e}"
    );
    assert_eq!(
        b.get("/f.txt").await.unwrap().unwrap().etag.as_deref(),
        Some("b2")
    );
    let r = both(&b, &db.url).await;
    assert_eq!(r.push.conflicts.len(), 1);
    both(&a, &db.url).await;
    assert_eq!(state(&a).await, state(&b).await);
}

#[derive(Debug, Clone)]
enum Op {
    Put(usize, usize),
    Delete(usize),
    Meta(usize, usize),
    Rename(usize, usize),
    /// Moves the folder /p to /s (or /s back to /p: `false`) with its files.
    RenameDir(bool),
    Sync,
    Push,
    Pull,
    /// The same push twice at once (they take turns; the second has nothing to send).
    PushTwice,
    /// Push and pull while the database keeps cutting the sync's connections.
    SyncCut(u64),
}

const PATHS: [&str; 7] = ["/p/a", "/p/b", "/q/c", "/q/d", "/r", "/s/a", "/s/b"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..PATHS.len(), 0..4usize).prop_map(|(p, e)| Op::Put(p, e)),
        1 => (0..PATHS.len()).prop_map(Op::Delete),
        2 => (0..PATHS.len(), 0..3usize).prop_map(|(p, v)| Op::Meta(p, v)),
        1 => (0..PATHS.len(), 0..PATHS.len()).prop_map(|(a, b)| Op::Rename(a, b)),
        1 => any::<bool>().prop_map(Op::RenameDir),
        2 => Just(Op::Sync),
        1 => Just(Op::Push),
        1 => Just(Op::Pull),
        1 => Just(Op::PushTwice),
        1 => (3..30u64).prop_map(Op::SyncCut),
    ]
}

/// Store `who`'s local change `op` at step `i`: a put with a new etag, a
/// deletion, metadata, a file or folder rename (skipped where it would be
/// refused: no such file, the target taken). Returns the etag a put wrote;
/// `None` for the rest. Ops that sync are not local: they panic here.
async fn change_locally(s: &Store, who: usize, i: usize, op: &Op) -> Option<String> {
    match op {
        Op::Put(p, e) => {
            let etag = format!("s{who}-e{e}-{i}");
            s.put(file(PATHS[*p], &etag)).await.unwrap();
            return Some(etag);
        }
        Op::Delete(p) => {
            s.delete(PATHS[*p]).await.unwrap();
        }
        Op::Meta(p, v) => {
            if s.get(PATHS[*p]).await.unwrap().is_some() {
                s.set_metadata(PATHS[*p], &format!("k{v}"), &json!(format!("s{who}-{i}")))
                    .await
                    .unwrap();
            }
        }
        Op::Rename(a, b) => {
            if a != b
                && s.get(PATHS[*a]).await.unwrap().is_some()
                && s.get(PATHS[*b]).await.unwrap().is_none()
            {
                s.rename(PATHS[*a], PATHS[*b]).await.unwrap();
            }
        }
        Op::RenameDir(to_s) => {
            let (from, to) = if *to_s { ("/p", "/s") } else { ("/s", "/p") };
            let has = |dir: &'static str| async move {
                !s.list(&format!("{dir}/")).await.unwrap().is_empty()
            };
            if has(from).await && !has(to).await {
                s.rename(from, to).await.unwrap();
            }
        }
        other => panic!("{other:?} is not a local change"),
    }
    None
}

/// `stores[to]` imports `stores[from]`'s changes since it last did (a
/// change file passed between devices); `learned[to][from]` is how far.
async fn learn(stores: &[Store], learned: &mut [[i64; 3]; 3], to: usize, from: usize) {
    if to == from {
        return;
    }
    let f = stores[from]
        .export_changes(learned[to][from])
        .await
        .unwrap();
    learned[to][from] = f.changes.through;
    if let Err(e) = stores[to].import_changes(&f).await {
        panic!("store {to} importing store {from}'s changes: {e:?}");
    }
}

/// Every store imports every other's changes, twice over (what a third
/// store learned in the first round reaches the others in the second).
async fn learn_everything(stores: &[Store], learned: &mut [[i64; 3]; 3]) {
    for _ in 0..2 {
        for to in 0..3 {
            for from in 0..3 {
                learn(stores, learned, to, from).await;
            }
        }
    }
}

async fn three_memory_stores() -> [Store; 3] {
    [
        Store::memory().await.unwrap(),
        Store::memory().await.unwrap(),
        Store::memory().await.unwrap(),
    ]
}

/// Stores 0 and 1 trade change files: both export, then both import (the
/// files cross, so each store merges the two sides' changes on its own);
/// then the same one after the other (the second file carries the first
/// back).
async fn cross(stores: &[Store], learned: &mut [[i64; 3]; 3]) {
    let (a, b) = (&stores[0], &stores[1]);
    let to_b = a.export_changes(learned[1][0]).await.unwrap();
    let to_a = b.export_changes(learned[0][1]).await.unwrap();
    a.import_changes(&to_a).await.unwrap();
    b.import_changes(&to_b).await.unwrap();
    (learned[0][1], learned[1][0]) = (to_a.changes.through, to_b.changes.through);
    learn(stores, learned, 0, 1).await;
    learn(stores, learned, 1, 0).await;
}

proptest! {
    // NEXUS_CONVERGE_CASES runs more cases (the default keeps CI short).
    #![proptest_config(ProptestConfig {
        cases: std::env::var("NEXUS_CONVERGE_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(6),
        ..ProptestConfig::default()
    })]

    /// Three store files change overlapping paths offline (puts, deletes,
    /// metadata, file and folder renames), now and then import each
    /// other's change files, and sync in random orders, each
    /// sync leaving the store equal to PostgreSQL (`nexus verify`); once
    /// each has synced both ways twice with no new writes,
    /// every store and PostgreSQL hold the same files and metadata, and
    /// every etag any store wrote last at a path is current somewhere
    /// (at its path or in a conflict copy) or in a version history.
    #[test]
    fn three_stores_converge(
        ops in proptest::collection::vec((0..3usize, op()), 10..40),
        window in prop_oneof![1..4usize, Just(10_000usize)],
        learns in proptest::collection::vec((0..40usize, 0..3usize, 0..3usize), 0..6),
    ) {
        converge(&ops, window, &learns);
    }
}

/// One case of [`three_stores_converge`].
fn converge(ops: &[(usize, Op)], window: usize, learns: &[(usize, usize, usize)]) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Windows of 1-3 rows split pushes and pull pages everywhere: a
    // file's versions apart from its row, one push's rows over pages.
    let opts = SyncOptions {
        window_rows: window,
        ..SyncOptions::default()
    };
    let push = |s: &Store, u: &str| {
        let r = Replicator::new(s.clone(), url(u)).with_options(opts.clone());
        async move { r.sync().await.unwrap() }
    };
    let both = |s: &Store, u: &str| {
        let (s, u, o) = (s.clone(), remote(u), opts.clone());
        async move { sync_with(&s, &u, &o).await.unwrap() }
    };
    rt.block_on(async {
        let db = pg::database("two_way_converge").await;
        // Store files, as on devices; dropped and opened again before
        // the final syncs (the same store still, where a finished
        // sync's reader thread has not let go of its handle yet).
        let dir = tempfile::tempdir().unwrap();
        let paths = ["a.db", "b.db", "c.db"].map(|n| dir.path().join(n));
        let mut stores = Vec::new();
        for p in &paths {
            stores.push(Store::open(p).await.unwrap());
        }
        let mut written: Vec<String> = Vec::new();
        let mut learned = [[0i64; 3]; 3];
        for (i, (who, op)) in ops.iter().enumerate() {
            // Before step `at`, a store imports another's changes since
            // it last did (a change file passed between devices).
            for &(at, to, from) in learns {
                if at == i {
                    learn(&stores, &mut learned, to, from).await;
                }
            }
            let s = &stores[*who];
            match op {
                Op::Put(..) | Op::Delete(_) | Op::Meta(..) | Op::Rename(..) | Op::RenameDir(_) => {
                    written.extend(change_locally(s, *who, i, op).await);
                }
                Op::Sync => {
                    // Nothing else runs meanwhile: after it, the store
                    // and PostgreSQL hold the same rows.
                    both(s, &db.url).await;
                    assert_verified(s, &db.url).await;
                }
                Op::Push => { push(s, &db.url).await; }
                Op::Pull => {
                    // Refused when this store has an unpushed change to a row it would overwrite.
                    if let Err(e) = pull(s, &remote(&db.url), &opts).await {
                        assert!(e.to_string().contains("push first"), "{e}");
                    }
                }
                Op::PushTwice => {
                    let (x, y) = tokio::join!(push(s, &db.url), push(s, &db.url));
                    assert!(x.rows() == 0 || y.rows() == 0, "applied once: {x:?} {y:?}");
                }
                Op::SyncCut(every_ms) => {
                    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let killer = {
                        let (stop, u) = (stop.clone(), db.url.clone());
                        let every = *every_ms;
                        tokio::spawn(async move {
                            let admin = pg::connect(&u).await;
                            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                                tokio::time::sleep(std::time::Duration::from_millis(every)).await;
                                let _ = admin.query(
                                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                                     WHERE datname = current_database() AND application_name = 'nexus-sync'",
                                    &[],
                                ).await;
                            }
                        })
                    };
                    let options = SyncOptions { max_attempts: 2, backoff: std::time::Duration::from_millis(5), ..opts.clone() };
                    // Either way (done, or given up after the retries), nothing is lost or doubled.
                    let cut = sync_with(s, &remote(&db.url), &options).await;
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    killer.await.unwrap();
                    // A first pull into an empty store that the cuts left
                    // unfinished refuses local writes until it is done
                    // (`PullUnfinished`): as its user would, pull again.
                    if cut.is_err()
                        && let Err(e) = pull(s, &remote(&db.url), &opts).await
                    {
                        assert!(e.to_string().contains("push first"), "{e}");
                    }
                }
            }
        }
        stores.clear();
        for p in &paths {
            stores.push(Store::open(p).await.unwrap());
        }
        for _ in 0..2 {
            for s in &stores {
                both(s, &db.url).await;
            }
        }
        let pg = pg_state(&db.url).await;
        for (i, s) in stores.iter().enumerate() {
            assert_eq!(state(s).await, pg, "store {i} differs from PostgreSQL");
            assert_verified(s, &db.url).await;
        }
        pg::assert_no_write_lost(&db.url, &written).await;
    });
}

#[derive(Debug, Clone)]
enum Exchange {
    /// A source's local change (a put, deletion, metadata, rename).
    Local(usize, Op),
    /// A source's changes since its last shipment, as one change file,
    /// applied to the embedded hub and to PostgreSQL.
    Ship(usize),
    /// A source imports another source's changes since it last did.
    Learn(usize, usize),
}

fn exchange() -> impl Strategy<Value = Exchange> {
    prop_oneof![
        4 => (0..3usize, 0..PATHS.len(), 0..4usize).prop_map(|(s, p, e)| Exchange::Local(s, Op::Put(p, e))),
        1 => (0..3usize, 0..PATHS.len()).prop_map(|(s, p)| Exchange::Local(s, Op::Delete(p))),
        2 => (0..3usize, 0..PATHS.len(), 0..3usize).prop_map(|(s, p, k)| Exchange::Local(s, Op::Meta(p, k))),
        1 => (0..3usize, 0..PATHS.len(), 0..PATHS.len()).prop_map(|(s, a, b)| Exchange::Local(s, Op::Rename(a, b))),
        3 => (0..3usize).prop_map(Exchange::Ship),
        2 => (0..3usize, 0..3usize).prop_map(|(s, t)| Exchange::Learn(s, t)),
    ]
}

/// A state, sorted, with copy names without their attempt number (two
/// copies of one path made in the same second are numbered in the order
/// each side meets them).
fn comparable(s: State) -> Vec<(String, FileView)> {
    let mut out: Vec<_> = s
        .into_iter()
        .map(|(path, (id, etag, size, version, meta))| {
            let mut path = path;
            if let Some(c) = meta.get(CONFLICT_KEY) {
                let prefix: String = c["source"]
                    .as_str()
                    .unwrap_or_default()
                    .chars()
                    .take(nexus_core::SOURCE_PREFIX_CHARS)
                    .collect();
                if let Some(at) = path.rfind(&format!("-{prefix}-")) {
                    path.truncate(at + prefix.len() + 1);
                }
            }
            (path, (id, etag, size, version, meta))
        })
        .collect();
    out.sort_by_cached_key(|e| format!("{e:?}"));
    out
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("NEXUS_PARITY_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(6),
        ..ProptestConfig::default()
    })]

    /// One apply rule on both sides: three sources change overlapping paths
    /// and exchange change files among themselves; each shipment of a
    /// source's changes goes to an embedded store (the hub, `import-changes`)
    /// and to PostgreSQL (`sync --from-changes`). After every shipment both
    /// hold the same files, versions and metadata, conflict copies included.
    #[test]
    fn change_files_apply_alike_to_an_embedded_store_and_postgres(
        steps in proptest::collection::vec(exchange(), 10..40),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let db = pg::database("change_files_parity").await;
            let mut sources = Vec::new();
            for _ in 0..3 {
                sources.push(Store::memory().await.unwrap());
            }
            let hub = Store::memory().await.unwrap();
            let mut shipped = [0i64; 3];
            let mut learned = [[0i64; 3]; 3];
            for (i, step) in steps.iter().enumerate() {
                match *step {
                    Exchange::Local(s, ref op) => {
                        change_locally(&sources[s], s, i, op).await;
                    }
                    Exchange::Learn(s, t) => learn(&sources, &mut learned, s, t).await,
                    Exchange::Ship(s) => {
                        let f = sources[s].export_changes(shipped[s]).await.unwrap();
                        let here = hub.import_changes(&f).await;
                        let there = nexus_sync::apply_change_file(&url(&db.url), f.clone(), &SyncOptions::default()).await;
                        // A whole change file always settles: neither side refuses it.
                        match (&here, &there) {
                            (Ok(_), Ok(_)) => shipped[s] = f.changes.through,
                            _ => panic!("step {i}: the hub answered {here:?}, PostgreSQL {there:?}"),
                        }
                        let (h, p) = (comparable(state(&hub).await), comparable(pg_state(&db.url).await));
                        assert_eq!(h, p, "step {i} ({step:?}): the hub and PostgreSQL differ");
                    }
                }
            }
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("NEXUS_GOSSIP_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(20),
        ..ProptestConfig::default()
    })]

    /// Change files alone, no PostgreSQL: three stores change overlapping
    /// paths and now and then import each other's changes, until every
    /// store has imported every other's changes twice with no new writes.
    /// No write is lost in any store, and each can write every file again.
    /// All hold the same files and metadata, conflict copies included (a
    /// file moved to its copy's path is stamped as a change of the store
    /// that moved it, which the others then take; of a file both stores
    /// gave new versions, the side made first stays in the file, and the
    /// other goes to a copy whose id every store derives alike).
    #[test]
    fn change_files_alone_converge(
        steps in proptest::collection::vec(exchange(), 10..40),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut stores = Vec::new();
            for _ in 0..3 {
                stores.push(Store::memory().await.unwrap());
            }
            let mut learned = [[0i64; 3]; 3];
            let mut written = Vec::new();
            for (i, step) in steps.iter().enumerate() {
                match *step {
                    Exchange::Local(s, ref op) => {
                        written.extend(change_locally(&stores[s], s, i, op).await);
                    }
                    Exchange::Learn(s, t) => learn(&stores, &mut learned, s, t).await,
                    Exchange::Ship(s) => learn(&stores, &mut learned, (s + 1) % 3, s).await,
                }
            }
            learn_everything(&stores, &mut learned).await;
            let mut states = Vec::new();
            for s in &stores {
                states.push(comparable(state(s).await));
            }
            for (i, st) in states.iter().enumerate().skip(1) {
                assert_eq!(st, &states[0], "store {i} differs from store 0");
            }
            for (i, s) in stores.iter().enumerate() {
                for f in s.list("/").await.unwrap() {
                    if let Err(e) = s.put(file(&f.path, "again")).await {
                        panic!("store {i} writing {} again: {e:?}", f.path);
                    }
                }
                let versions: std::collections::HashSet<String> = s
                    .debug_query("SELECT content_hash FROM version_history WHERE content_hash IS NOT NULL")
                    .await
                    .unwrap()
                    .into_iter()
                    .filter_map(|r| r.into_iter().next().flatten())
                    .collect();
                for e in &written {
                    assert!(versions.contains(e), "{e} was lost");
                }
            }
        });
    }
}

/// All of `s`'s changes as one change file, applied to the embedded `hub`
/// and to PostgreSQL at `u`; both must take it.
async fn ship(s: &Store, hub: &Store, u: &str) {
    let f = s.export_changes(0).await.unwrap();
    hub.import_changes(&f).await.unwrap();
    nexus_sync::apply_change_file(&url(u), f, &SyncOptions::default())
        .await
        .unwrap();
}

/// A change file that moves a version to a conflict copy and puts its own
/// version in that number's place. B and A both make version 2 of one
/// file; A imports B's changes first (B's file becomes a copy in A, with
/// B's version 2), while the hub and PostgreSQL take B's changes as they
/// are. When A's changes arrive, B's version 2 goes to A's copy and A's
/// takes its number: both sides end as A has it, the file with A's
/// version and the copy with B's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_file_moves_a_version_and_takes_its_number() {
    let db = pg::database("change_files_version_moves").await;
    let (a, b, hub) = (
        Store::memory().await.unwrap(),
        Store::memory().await.unwrap(),
        Store::memory().await.unwrap(),
    );
    b.put(file("/f", "v1")).await.unwrap();
    let learned = b.export_changes(0).await.unwrap();
    a.import_changes(&learned).await.unwrap();
    a.put(file("/f", "from-a")).await.unwrap();
    b.put(file("/f", "from-b")).await.unwrap();
    let f = b.export_changes(learned.changes.through).await.unwrap();
    let r = a.import_changes(&f).await.unwrap();
    assert_eq!(r.conflicts.len(), 1, "{r:?}");
    ship(&b, &hub, &db.url).await;
    ship(&a, &hub, &db.url).await;

    let (h, p) = (state(&hub).await, pg_state(&db.url).await);
    let mine = state(&a).await;
    assert_eq!(comparable(h.clone()), comparable(p.clone()));
    assert_eq!(
        comparable(h),
        comparable(mine.clone()),
        "the hub holds what A holds"
    );
    assert_eq!(p["/f"].1.as_deref(), Some("from-a"), "{p:?}");
    let copy = p.keys().find(|k| k.contains(".sync-conflict-")).unwrap();
    assert_eq!(p[copy].1.as_deref(), Some("from-b"), "{p:?}");
    assert_eq!(p.len(), 2, "{p:?}");
}

/// A version that reaches the hub twice, at two files: C's version 2 of a
/// file first comes with A's changes (A learned it from C, and it clashes
/// with B's version 2 there: a conflict copy), then with C's own. The hub
/// and PostgreSQL keep it in the copy (C's row of the file, whose content
/// that is, stays out) instead of refusing C's changes (it was a Conflict
/// on one side and a unique violation on the other; found by the parity
/// test once stores traded change files more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_already_in_a_copy_stays_there() {
    let db = pg::database("change_files_known_in_copy").await;
    let (a, b, c, hub) = (
        Store::memory().await.unwrap(),
        Store::memory().await.unwrap(),
        Store::memory().await.unwrap(),
        Store::memory().await.unwrap(),
    );
    a.put(file("/f", "v1")).await.unwrap();
    let first = a.export_changes(0).await.unwrap();
    b.import_changes(&first).await.unwrap();
    c.import_changes(&first).await.unwrap();
    // B's version is made first: it keeps the file wherever the two meet.
    b.put(file("/f", "from-b")).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    c.put(file("/f", "from-c")).await.unwrap();
    ship(&b, &hub, &db.url).await;
    let from_c = c.export_changes(0).await.unwrap();
    a.import_changes(&from_c).await.unwrap();
    ship(&a, &hub, &db.url).await;
    ship(&c, &hub, &db.url).await;

    let (h, p) = (state(&hub).await, pg_state(&db.url).await);
    assert_eq!(comparable(h), comparable(p.clone()));
    assert_eq!(p.len(), 2, "{p:?}");
    assert_eq!(p["/f"].1.as_deref(), Some("from-b"), "{p:?}");
    let copy = p.keys().find(|k| k.contains(".sync-conflict-")).unwrap();
    assert_eq!(p[copy].1.as_deref(), Some("from-c"), "{p:?}");
}

/// A deletion by a store that had every version of a file, against a
/// rename of it that the deleter had not seen: the deletion stands in both
/// stores (each imports the other's changes), and the hub and PostgreSQL
/// then take both stores' changes alike. Before, the store that deleted took the
/// renamed row back live, naming version 1 as current beside its version
/// 2, and its next put of the file failed on the unique (file, version
/// number); found by the parity property test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_after_every_version_wins_over_an_unseen_rename() {
    let db = pg::database("change_files_delete_rename").await;
    let (a, b, hub) = (
        Store::memory().await.unwrap(),
        Store::memory().await.unwrap(),
        Store::memory().await.unwrap(),
    );
    a.put(file("/f", "v1")).await.unwrap();
    b.import_changes(&a.export_changes(0).await.unwrap())
        .await
        .unwrap();
    a.put(file("/f", "v2")).await.unwrap();
    a.delete("/f").await.unwrap();
    b.rename("/f", "/g").await.unwrap();
    let (from_a, from_b) = (
        a.export_changes(0).await.unwrap(),
        b.export_changes(0).await.unwrap(),
    );
    a.import_changes(&from_b).await.unwrap();
    b.import_changes(&from_a).await.unwrap();
    ship(&b, &hub, &db.url).await;
    ship(&a, &hub, &db.url).await;
    for s in [&a, &b, &hub] {
        assert!(state(s).await.is_empty(), "{:?}", state(s).await);
        s.put(file("/g", "again")).await.unwrap();
    }
    assert!(pg_state(&db.url).await.is_empty());
}

/// Two stores that each made their own file at one path, and whose change
/// files cross, keep the same file there: the one made first (a change
/// file says nothing of which reached the other first), and the other as a
/// conflict copy beside it. Each names its copy after the source of the
/// change file it imported (so the two names differ after the first
/// exchange); both move and mark are stamped just after the file's row, by
/// no clock, so after the second exchange both keep the same copy, by its
/// name and by its mark. Before, each kept its own file at the path and
/// then took the other's move of it: both files ended as copies and the
/// path empty. PostgreSQL applying the same change files, in either order,
/// keeps the same file at each path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossing_change_files_keep_the_file_made_first_at_its_path() {
    let (a, b) = (
        Store::memory().await.unwrap(),
        Store::memory().await.unwrap(),
    );
    a.put(file("/a.txt", "from-a")).await.unwrap();
    b.put(file("/a.txt", "from-b")).await.unwrap();
    b.put(file("/b.txt", "from-b")).await.unwrap();
    a.put(file("/b.txt", "from-a")).await.unwrap();
    let (to_b, to_a) = (
        a.export_changes(0).await.unwrap(),
        b.export_changes(0).await.unwrap(),
    );
    let prefix =
        |who: &str| -> String { who.chars().take(nexus_core::SOURCE_PREFIX_CHARS).collect() };
    let (pa, pb) = (prefix(&to_b.source_id), prefix(&to_a.source_id));
    let settled = |s: &State| {
        assert_eq!(s["/a.txt"].1.as_deref(), Some("from-a"), "{s:?}");
        assert_eq!(s["/b.txt"].1.as_deref(), Some("from-b"), "{s:?}");
        let copies: Vec<(&str, &Value, Option<&str>)> = s
            .iter()
            .filter(|(p, _)| p.contains(".sync-conflict-"))
            .map(|(p, v)| (p.as_str(), &v.4[CONFLICT_KEY], v.1.as_deref()))
            .collect();
        assert_eq!(copies.len(), 2, "{s:?}");
        for (copy, mark, content) in copies {
            let (stem, lost) = match mark["path"].as_str() {
                Some("/a.txt") => ("/a.sync-conflict-", "from-b"),
                _ => ("/b.sync-conflict-", "from-a"),
            };
            assert!(copy.starts_with(stem), "{copy}");
            assert_eq!(content, Some(lost), "{s:?}");
            // The copy's name and its mark name the same source.
            let named = prefix(mark["source"].as_str().unwrap());
            assert!(named == pa || named == pb, "{mark}");
            assert!(copy.ends_with(&format!("-{named}.txt")), "{copy} {mark}");
        }
    };
    let ra = a.import_changes(&to_a).await.unwrap();
    let rb = b.import_changes(&to_b).await.unwrap();
    assert_eq!((ra.conflicts.len(), rb.conflicts.len()), (2, 2));
    settled(&state(&a).await);
    settled(&state(&b).await);
    // Exchanging what each did: both keep the same.
    let (again_b, again_a) = (
        a.export_changes(to_b.changes.through).await.unwrap(),
        b.export_changes(to_a.changes.through).await.unwrap(),
    );
    a.import_changes(&again_a).await.unwrap();
    b.import_changes(&again_b).await.unwrap();
    let sa = state(&a).await;
    settled(&sa);
    assert_eq!(
        sa,
        state(&b).await,
        "the two stores differ after two exchanges"
    );
    let stores = [a.clone(), b.clone()];
    let mut learned = [[0i64; 3]; 3];
    (learned[0][1], learned[1][0]) = (again_a.changes.through, again_b.changes.through);
    cross(&stores, &mut learned).await;
    assert_eq!(state(&a).await, sa);
    assert_eq!(state(&b).await, sa);
    // PostgreSQL, either order.
    for (first, second) in [(&to_a, &to_b), (&to_b, &to_a)] {
        let db = pg::database("crossing_path_conflict").await;
        for f in [first, second] {
            nexus_sync::apply_change_file(&url(&db.url), f.clone(), &SyncOptions::default())
                .await
                .unwrap();
        }
        settled(&pg_state(&db.url).await);
    }
}

/// Two stores that both gave a file new versions, and whose change files
/// cross, keep the same side in the file: the one whose first new version
/// was made first (a change file says nothing of which reached the other
/// first), and the other side's versions in one conflict copy, with the
/// same id in both (derived from the file and the losing side's first new
/// version), its metadata and its mark. Before, each store kept its own
/// side in the file and the other's in a copy with a new id of its own, so
/// the two never agreed. PostgreSQL applying the same change files, in
/// either order, keeps the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossing_change_files_keep_the_side_made_first_in_a_file_both_changed() {
    let (a, b) = (
        Store::memory().await.unwrap(),
        Store::memory().await.unwrap(),
    );
    let stores = [a.clone(), b.clone()];
    let mut learned = [[0i64; 3]; 3];
    a.put(file("/f.txt", "v1")).await.unwrap();
    let base = a.export_changes(0).await.unwrap();
    b.import_changes(&base).await.unwrap();
    a.put(file("/f.txt", "from-a")).await.unwrap();
    a.set_metadata("/f.txt", "side", &json!("a")).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    b.put(file("/f.txt", "from-b")).await.unwrap();
    b.set_metadata("/f.txt", "side", &json!("b")).await.unwrap();
    b.put(file("/f.txt", "from-b2")).await.unwrap();
    let (to_b, to_a) = (
        a.export_changes(base.changes.through).await.unwrap(),
        b.export_changes(0).await.unwrap(),
    );
    let settled = |s: &State| {
        assert_eq!(s["/f.txt"].1.as_deref(), Some("from-a"), "{s:?}");
        let copies: Vec<(&String, &FileView)> = s
            .iter()
            .filter(|(p, _)| p.starts_with("/f.sync-conflict-") && p.ends_with(".txt"))
            .collect();
        assert_eq!(copies.len(), 1, "{s:?}");
        let (_, (id, etag, _, version, meta)) = copies[0];
        assert_eq!((etag.as_deref(), *version), (Some("from-b2"), 3), "{s:?}");
        assert_eq!(meta[CONFLICT_KEY]["path"], "/f.txt");
        assert_eq!(meta[CONFLICT_KEY]["reason"], "content");
        assert_eq!(meta["side"], "b", "{s:?}");
        id.clone()
    };
    let ra = a.import_changes(&to_a).await.unwrap();
    let rb = b.import_changes(&to_b).await.unwrap();
    assert_eq!((ra.conflicts.len(), rb.conflicts.len()), (1, 1));
    (learned[0][1], learned[1][0]) = (to_a.changes.through, to_b.changes.through);
    let (sa, sb) = (state(&a).await, state(&b).await);
    let copy = settled(&sa);
    assert_eq!(settled(&sb), copy, "the two stores made different copies");
    assert_eq!(sa["/f.txt"].0, sb["/f.txt"].0);
    // Exchanging what each did: both hold the same, and stay so.
    cross(&stores, &mut learned).await;
    let sa = state(&a).await;
    settled(&sa);
    assert_eq!(
        sa,
        state(&b).await,
        "the two stores differ after two exchanges"
    );
    cross(&stores, &mut learned).await;
    assert_eq!(state(&a).await, sa);
    assert_eq!(state(&b).await, sa);
    // No version is lost, and the copy holds B's two.
    for s in [&a, &b] {
        let rows = s
            .debug_query(&format!(
                "SELECT content_hash FROM version_history WHERE path_id = '{copy}' ORDER BY version_number"
            ))
            .await
            .unwrap();
        let held: Vec<Option<String>> = rows.into_iter().map(|r| r[0].clone()).collect();
        assert_eq!(
            held,
            [Some("from-b".to_string()), Some("from-b2".to_string())]
        );
        s.put(file("/f.txt", "again")).await.unwrap();
    }
    // PostgreSQL, either order: the same file in the path, the same copy.
    for (first, second) in [(&to_a, &to_b), (&to_b, &to_a)] {
        let db = pg::database("crossing_content_conflict").await;
        for f in [&base, first, second] {
            nexus_sync::apply_change_file(&url(&db.url), f.clone(), &SyncOptions::default())
                .await
                .unwrap();
        }
        let sp = pg_state(&db.url).await;
        assert_eq!(settled(&sp), copy);
    }
}

/// A change file that carries a conflict copy its writer made (of versions
/// of a file this store made) takes every version it carries out of the
/// file here, not only the ones whose number clashes: C keeps its own
/// version of a file and puts B's two into a copy; B, importing that, moves
/// both to the copy, and its file row, which named the second, takes C's
/// version. Before, B kept its row at its second version, which had left
/// the file, and never agreed with C (found by `change_files_alone_converge`
/// once it compared content copies).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_arrives_takes_every_version_it_carries_out_of_the_file_here() {
    let stores = three_memory_stores().await;
    let (b, c) = (&stores[1], &stores[2]);
    let mut learned = [[0i64; 3]; 3];
    stores[0].put(file("/f.txt", "v1")).await.unwrap();
    learn(&stores, &mut learned, 1, 0).await;
    learn(&stores, &mut learned, 2, 1).await;
    c.put(file("/f.txt", "from-c")).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    b.put(file("/f.txt", "from-b")).await.unwrap();
    b.put(file("/f.txt", "from-b3")).await.unwrap();
    learn(&stores, &mut learned, 2, 1).await;
    learn(&stores, &mut learned, 1, 2).await;
    let (sb, sc) = (state(b).await, state(c).await);
    assert_eq!(sb["/f.txt"].1.as_deref(), Some("from-c"), "{sb:?}");
    assert_eq!(sb, sc, "b and c differ");
    let copy = sb
        .iter()
        .find(|(p, _)| p.starts_with("/f.sync-conflict-"))
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no copy: {sb:?}"));
    assert_eq!((copy.1.as_deref(), copy.3), (Some("from-b3"), 3));
    b.put(file("/f.txt", "again")).await.unwrap();
}

/// A new version made on the losing side of a content conflict, before
/// that side heard of the conflict, follows its parent into the conflict
/// copy at a store that made the copy already: C meets A's and B's new
/// versions of one file (A's made first: B's go to the copy), then B, still
/// unaware, gives the file two more. Every store ends with A's version in
/// the file and B's three in the copy, and all agree; PostgreSQL
/// applying C's change files does as C. Before, B's third version landed
/// in the file, on top of A's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_made_after_a_content_conflict_follows_its_side_into_the_copy() {
    let stores = three_memory_stores().await;
    let (a, b, c) = (&stores[0], &stores[1], &stores[2]);
    let mut learned = [[0i64; 3]; 3];
    // PostgreSQL applies every change file C imports, in the same order.
    let db = pg::database("follow_the_parent").await;
    let to_c = async |learned: &mut [[i64; 3]; 3], from: usize| {
        let f = stores[from].export_changes(learned[2][from]).await.unwrap();
        learned[2][from] = f.changes.through;
        c.import_changes(&f).await.unwrap();
        nexus_sync::apply_change_file(&url(&db.url), f, &SyncOptions::default())
            .await
            .unwrap();
    };
    a.put(file("/f.txt", "v1")).await.unwrap();
    learn(&stores, &mut learned, 1, 0).await;
    to_c(&mut learned, 0).await;
    a.put(file("/f.txt", "from-a")).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    b.put(file("/f.txt", "from-b")).await.unwrap();
    to_c(&mut learned, 0).await;
    to_c(&mut learned, 1).await;
    b.put(file("/f.txt", "from-b3")).await.unwrap();
    to_c(&mut learned, 1).await;
    // (Its parent's number is past the file's versions here.)
    b.put(file("/f.txt", "from-b4")).await.unwrap();
    to_c(&mut learned, 1).await;
    assert_eq!(
        comparable(pg_state(&db.url).await),
        comparable(state(c).await),
        "PostgreSQL and C differ"
    );
    let settled = |s: &State, who: &str| {
        assert_eq!(s["/f.txt"].1.as_deref(), Some("from-a"), "{who}: {s:?}");
        let copies: Vec<&FileView> = s
            .iter()
            .filter(|(p, _)| p.starts_with("/f.sync-conflict-"))
            .map(|(_, v)| v)
            .collect();
        assert_eq!(copies.len(), 1, "{who}: {s:?}");
        assert_eq!(
            (copies[0].1.as_deref(), copies[0].3),
            (Some("from-b4"), 4),
            "{who}: {s:?}"
        );
    };
    settled(&state(c).await, "c");
    learn_everything(&stores, &mut learned).await;
    let sa = state(a).await;
    settled(&sa, "a");
    assert_eq!(state(b).await, sa, "b differs from a");
    assert_eq!(state(c).await, sa, "c differs from a");
    for s in &stores {
        s.put(file("/f.txt", "again")).await.unwrap();
    }
}

/// The same, but the store that made the copy gave it a version of its own
/// meanwhile, at the number the arriving version would take there: the
/// arriving version stays in its file (by that file's rule) rather than
/// clash in the copy, and the import is not refused; nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_does_not_follow_into_a_copy_that_took_its_number() {
    let stores = three_memory_stores().await;
    let (a, b, c) = (&stores[0], &stores[1], &stores[2]);
    let mut learned = [[0i64; 3]; 3];
    a.put(file("/f.txt", "v1")).await.unwrap();
    learn(&stores, &mut learned, 1, 0).await;
    learn(&stores, &mut learned, 2, 0).await;
    a.put(file("/f.txt", "from-a")).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    b.put(file("/f.txt", "from-b")).await.unwrap();
    learn(&stores, &mut learned, 2, 0).await;
    learn(&stores, &mut learned, 2, 1).await;
    let copy = state(c)
        .await
        .into_keys()
        .find(|p| p.starts_with("/f.sync-conflict-"))
        .expect("a copy");
    c.put(file(&copy, "c-on-the-copy")).await.unwrap();
    b.put(file("/f.txt", "from-b3")).await.unwrap();
    learn(&stores, &mut learned, 2, 1).await;
    learn_everything(&stores, &mut learned).await;
    let s0 = state(a).await;
    assert_eq!(state(b).await, s0, "b differs from a");
    assert_eq!(state(c).await, s0, "c differs from a");
    for s in &stores {
        let hashes: Vec<String> = s
            .debug_query("SELECT content_hash FROM version_history WHERE content_hash IS NOT NULL")
            .await
            .unwrap()
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .collect();
        for e in ["from-a", "from-b", "from-b3", "c-on-the-copy"] {
            assert!(hashes.iter().any(|h| h == e), "{e} was lost: {hashes:?}");
        }
        for f in s.list("/").await.unwrap() {
            s.put(file(&f.path, "again")).await.unwrap();
        }
    }
}

/// Two stores that pass change files back and forth settle each file and
/// each metadata key that both changed to the same state, whatever the
/// order of the imports: the later change wins where versions cannot tell
/// (a deletion against a rename, two renames, two values or a value
/// against a removal of one key). Before, each import took the arriving
/// row, so the two stores traded their states at every exchange and never
/// agreed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_files_passed_back_and_forth_agree() {
    let (a, b) = (
        Store::memory().await.unwrap(),
        Store::memory().await.unwrap(),
    );
    let stores = [a.clone(), b.clone()];
    let mut learned = [[0i64; 3]; 3];
    let trade = async |learned: &mut [[i64; 3]; 3]| cross(&stores, learned).await;
    // Three more exchanges: after each, both hold the same, with live
    // files at `paths`; the state after the last.
    let settled = async |learned: &mut [[i64; 3]; 3], paths: &[&str]| {
        let mut last = State::new();
        for round in 0..3 {
            trade(learned).await;
            let (sa, sb) = (state(&a).await, state(&b).await);
            assert_eq!(sa, sb, "after exchange {round}");
            let got: Vec<&str> = sa.keys().map(String::as_str).collect();
            assert_eq!(got, paths, "after exchange {round}");
            last = sa;
        }
        last
    };
    for p in ["/del", "/two", "/meta", "/unset"] {
        a.put(file(p, "v1")).await.unwrap();
    }
    a.set_metadata("/unset", "k", &json!("old")).await.unwrap();
    trade(&mut learned).await;
    assert_eq!(state(&a).await, state(&b).await);
    // Each store changes each file in its own way; B's changes are the later ones.
    a.delete("/del").await.unwrap();
    a.rename("/two", "/two-a").await.unwrap();
    a.set_metadata("/meta", "k", &json!("from a"))
        .await
        .unwrap();
    a.delete_metadata("/unset", "k").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    b.rename("/del", "/del-b").await.unwrap();
    b.rename("/two", "/two-b").await.unwrap();
    b.set_metadata("/meta", "k", &json!("from b"))
        .await
        .unwrap();
    b.set_metadata("/unset", "k", &json!("from b"))
        .await
        .unwrap();
    let sa = settled(&mut learned, &["/del-b", "/meta", "/two-b", "/unset"]).await;
    assert_eq!(sa["/meta"].4["k"], json!("from b"));
    assert_eq!(sa["/unset"].4["k"], json!("from b"));
    // The other way round: A's changes are the later ones.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    b.delete("/del-b").await.unwrap();
    b.set_metadata("/meta", "k", &json!("b again"))
        .await
        .unwrap();
    b.delete_metadata("/unset", "k").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    a.rename("/del-b", "/del-a").await.unwrap();
    a.set_metadata("/meta", "k", &json!("a again"))
        .await
        .unwrap();
    a.set_metadata("/unset", "k", &json!("a again"))
        .await
        .unwrap();
    let sa = settled(&mut learned, &["/del-a", "/meta", "/two-b", "/unset"]).await;
    assert_eq!(sa["/meta"].4["k"], json!("a again"));
    assert_eq!(sa["/unset"].4["k"], json!("a again"));
    // And a deletion that comes later than a rename stands.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    b.rename("/del-a", "/del-b2").await.unwrap();
    b.delete_metadata("/meta", "k").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    a.delete("/del-a").await.unwrap();
    a.set_metadata("/unset", "k2", &json!(1)).await.unwrap();
    let sa = settled(&mut learned, &["/meta", "/two-b", "/unset"]).await;
    assert!(!sa["/meta"].4.contains_key("k"));
    // A file whose modification time is an hour ahead (a scan of a file
    // from the future), with a key that A set while its clock ran an hour
    // ahead: B's rename and B's removal of the key, made after it learned
    // them, are later changes all the same (each change is stamped after
    // the state it changes), and stand in both stores.
    let ahead = nexus_core::Timestamp::from_micros(
        nexus_core::Timestamp::now().as_micros() + 3_600_000_000,
    );
    a.put(file("/ahead", "v1").modified_at(ahead))
        .await
        .unwrap();
    a.set_metadata("/ahead", "k", &json!("a")).await.unwrap();
    a.debug_query(
        "UPDATE file_metadata SET updated_at = updated_at + 3600000000 WHERE value = '\"a\"'",
    )
    .await
    .unwrap();
    trade(&mut learned).await;
    b.rename("/ahead", "/ahead-b").await.unwrap();
    b.delete_metadata("/ahead-b", "k").await.unwrap();
    let sa = settled(&mut learned, &["/ahead-b", "/meta", "/two-b", "/unset"]).await;
    assert!(!sa["/ahead-b"].4.contains_key("k"), "{sa:?}");
}

/// A rename meets a new version of the file made elsewhere, through change
/// files alone: whichever came first, the rename follows the file, and both
/// stores end with the new version at the new path. The store that merges
/// the two (the new version at the renamed path) stamps the merged row
/// after both, so that the other store takes it; before, the merged row
/// kept one side's time and the two rows of one version were told apart
/// by their paths, so a rename to a path that sorts first was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_follows_a_new_version_made_elsewhere() {
    let (a, b) = (
        Store::memory().await.unwrap(),
        Store::memory().await.unwrap(),
    );
    let stores = [a.clone(), b.clone()];
    let mut learned = [[0i64; 3]; 3];
    let trade = async |learned: &mut [[i64; 3]; 3]| cross(&stores, learned).await;
    let settled = async |learned: &mut [[i64; 3]; 3], path: &str, etag: &str| {
        for round in 0..3 {
            trade(learned).await;
            let (sa, sb) = (state(&a).await, state(&b).await);
            assert_eq!(sa, sb, "after exchange {round}");
            let got: Vec<(&str, Option<&str>)> = sa
                .iter()
                .map(|(p, f)| (p.as_str(), f.1.as_deref()))
                .collect();
            assert_eq!(got, [(path, Some(etag))], "after exchange {round}");
        }
    };
    // The rename first, then the new version.
    a.put(file("/m/f", "v1")).await.unwrap();
    trade(&mut learned).await;
    b.rename("/m/f", "/a").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    a.put(file("/m/f", "v2")).await.unwrap();
    settled(&mut learned, "/a", "v2").await;
    // The new version first, then the rename.
    a.put(file("/a", "v3")).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    b.rename("/a", "/0").await.unwrap();
    settled(&mut learned, "/0", "v3").await;
}

/// A file whose `nexus.conflict` key was once removed by a store whose
/// clock ran an hour ahead, then made a conflict copy (two files at one
/// path): the copy's key is stamped after that removal, by an embedded
/// store's import and by PostgreSQL's apply of a push alike, so that the
/// removal, which arrives with the file, does not take the key away again
/// there or in any store that learns both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_copy_is_marked_over_a_removal_stamped_ahead() {
    let db = pg::database("copy_key_over_removal").await;
    let (a, b, c) = (
        Store::memory().await.unwrap(),
        Store::memory().await.unwrap(),
        Store::memory().await.unwrap(),
    );
    // B's file is made first: it keeps the path wherever the two meet.
    b.put(file("/p.txt", "from-b")).await.unwrap();
    a.put(file("/p.txt", "from-a")).await.unwrap();
    a.set_metadata("/p.txt", CONFLICT_KEY, &json!("resolved by hand"))
        .await
        .unwrap();
    a.delete_metadata("/p.txt", CONFLICT_KEY).await.unwrap();
    let moved = a
        .debug_query(
            "UPDATE tombstones SET deleted_at = deleted_at + 3600000000 WHERE table_name = 'file_metadata' RETURNING key2",
        )
        .await
        .unwrap();
    assert_eq!(moved.len(), 1, "one removal, now an hour ahead");
    let (from_a, from_b) = (
        a.export_changes(0).await.unwrap(),
        b.export_changes(0).await.unwrap(),
    );
    let marked = |s: &State| {
        let copies: Vec<&String> = s.keys().filter(|p| p.contains(".sync-conflict-")).collect();
        assert_eq!(copies.len(), 1, "{s:?}");
        let copy = &s[copies[0]];
        assert_eq!(
            copy.1.as_deref(),
            Some("from-a"),
            "A's file lost the path: {s:?}"
        );
        assert_eq!(copy.4[CONFLICT_KEY]["path"], json!("/p.txt"), "{s:?}");
        assert_eq!(s["/p.txt"].1.as_deref(), Some("from-b"), "{s:?}");
    };
    // An embedded store that learned B's file first.
    c.import_changes(&from_b).await.unwrap();
    let r = c.import_changes(&from_a).await.unwrap();
    assert_eq!(r.conflicts.len(), 1, "{:?}", r.conflicts);
    marked(&state(&c).await);
    // A store that had A's file and its removal learns the copy from C.
    let d = Store::memory().await.unwrap();
    d.import_changes(&from_a).await.unwrap();
    d.import_changes(&c.export_changes(0).await.unwrap())
        .await
        .unwrap();
    marked(&state(&d).await);
    // PostgreSQL, B's push first.
    push(&b, &db.url).await;
    let r = push(&a, &db.url).await;
    assert_eq!(r.conflicts.len(), 1, "{:?}", r.conflicts);
    marked(&pg_state(&db.url).await);
    // Every store then learns everything: the key stays everywhere.
    for s in [&a, &b, &a, &b] {
        both(s, &db.url).await;
    }
    let p = pg_state(&db.url).await;
    marked(&p);
    for s in [&a, &b] {
        assert_eq!(state(s).await, p);
        assert_verified(s, &db.url).await;
    }
    for from in [&a, &b] {
        c.import_changes(&from.export_changes(0).await.unwrap())
            .await
            .unwrap();
    }
    marked(&state(&c).await);
}

/// A conflict copy whose name a live file already holds takes the next
/// free one (`-1` before the extension), in an embedded store's import and
/// in PostgreSQL's apply of a push alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_whose_name_is_taken_takes_the_next() {
    let db = pg::database("copy_name_taken").await;
    let (a, b, c) = (
        Store::memory().await.unwrap(),
        Store::memory().await.unwrap(),
        Store::memory().await.unwrap(),
    );
    // B's file is made first: it keeps the path wherever the two meet.
    b.put(file("/n.txt", "from-b")).await.unwrap();
    a.put(file("/n.txt", "from-a")).await.unwrap();
    let from_a = a.export_changes(0).await.unwrap();
    let at = nexus_core::Timestamp::from_micros(from_a.changes.files[0].updated_at);
    let name = |attempt| nexus_core::conflict_path("/n.txt", at, &from_a.source_id, attempt);
    b.put(file(&name(0), "squatter")).await.unwrap();
    c.import_changes(&b.export_changes(0).await.unwrap())
        .await
        .unwrap();
    let r = c.import_changes(&from_a).await.unwrap();
    assert_eq!(r.conflicts.len(), 1, "{:?}", r.conflicts);
    assert_eq!(r.conflicts[0].copy, name(1));
    push(&b, &db.url).await;
    let r = push(&a, &db.url).await;
    assert_eq!(r.conflicts.len(), 1, "{:?}", r.conflicts);
    assert_eq!(r.conflicts[0].copy, name(1));
    let (p, sc) = (pg_state(&db.url).await, state(&c).await);
    for s in [&p, &sc] {
        assert_eq!(s[&name(0)].1.as_deref(), Some("squatter"), "{s:?}");
        assert_eq!(s[&name(1)].1.as_deref(), Some("from-a"), "{s:?}");
        assert_eq!(s["/n.txt"].1.as_deref(), Some("from-b"), "{s:?}");
    }
}

/// The same through pushes: B pushes; A learns B's changes from a change
/// file (not from PostgreSQL), which makes B's version 2 a copy in A, and
/// pushes. A carries PostgreSQL's current version of the file to its copy:
/// it had seen it, so A's row of the file applies (two rows at version 2
/// would otherwise keep B's, whose version 2 then is A's), and every store
/// ends as A had it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_moves_a_version_and_takes_its_number() {
    let db = pg::database("push_version_moves").await;
    let (a, b) = (
        Store::memory().await.unwrap(),
        Store::memory().await.unwrap(),
    );
    b.put(file("/f", "v1")).await.unwrap();
    let learned = b.export_changes(0).await.unwrap();
    a.import_changes(&learned).await.unwrap();
    a.put(file("/f", "from-a")).await.unwrap();
    b.put(file("/f", "from-b")).await.unwrap();
    let f = b.export_changes(learned.changes.through).await.unwrap();
    assert_eq!(a.import_changes(&f).await.unwrap().conflicts.len(), 1);
    push(&b, &db.url).await;
    let ra = push(&a, &db.url).await;
    assert!(ra.conflicts.is_empty(), "{:?}", ra.conflicts);
    let p = pg_state(&db.url).await;
    assert_eq!(comparable(p.clone()), comparable(state(&a).await));
    assert_eq!(p["/f"].1.as_deref(), Some("from-a"), "{p:?}");
    for s in [&b, &a, &b] {
        both(s, &db.url).await;
    }
    let p = pg_state(&db.url).await;
    for s in [&a, &b] {
        assert_eq!(state(s).await, p);
        assert_verified(s, &db.url).await;
    }
}

/// A store that pulls and also trades change files: PostgreSQL made B's
/// file a conflict copy, and B's pull moved it there (the pull wrote the
/// file's row; B's version of it is B's own). B's change file then carries
/// that file row with the version, so a store that never pulled can place
/// it (it was a foreign-key failure of the engine, found by
/// `three_stores_converge` once stores traded change files too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_file_brings_the_pulled_rows_its_rows_need() {
    let db = pg::database("change_files_pulled_parents").await;
    let (a, b, c) = (
        Store::memory().await.unwrap(),
        Store::memory().await.unwrap(),
        Store::memory().await.unwrap(),
    );
    a.put(file("/f", "from-a")).await.unwrap();
    push(&a, &db.url).await;
    b.put(file("/f", "from-b")).await.unwrap();
    b.put(file("/f", "from-b-2")).await.unwrap();
    let r = both(&b, &db.url).await;
    assert_eq!(r.push.conflicts.len(), 1, "{:?}", r.push.conflicts);
    let copy = r.push.conflicts[0].copy.clone();

    let f = b.export_changes(0).await.unwrap();
    assert!(
        f.changes.files.iter().all(|r| r.virtual_path == copy),
        "only the file B's versions need: {:?}",
        f.changes.files
    );
    let report = c.import_changes(&f).await.unwrap();
    assert!(report.conflicts.is_empty(), "{report:?}");
    let here = state(&c).await;
    assert_eq!(here.keys().collect::<Vec<_>>(), [&copy]);
    assert_eq!(
        (here[&copy].1.as_deref(), here[&copy].3),
        (Some("from-b-2"), 2)
    );
    assert_eq!(c.list_versions(&copy).await.unwrap().len(), 2);
}

/// A version whose parent a later transaction wrote again: A learned B's
/// version 1 of `/f` from a change file, made versions 2 and 3 and pushed
/// all three; B's push of version 1 then stamped it again, after its
/// children. A store that pulls in small pages gets version 2 in a page
/// before version 1's: the page brings the parent's row along (the pull
/// failed on the engine's foreign key; found by `three_stores_converge`
/// once stores traded change files).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_brings_a_parent_version_a_later_push_wrote_again() {
    let db = pg::database("pull_parent_versions").await;
    let (a, b) = (
        Store::memory().await.unwrap(),
        Store::memory().await.unwrap(),
    );
    // Stores that pulled before (later pulls read the feed), one per page
    // size (the four rows of A's push need two pages or more).
    let mut pullers = Vec::new();
    for rows in 1..=3 {
        let c = store_with([file(&format!("/c{rows}"), "c")]).await;
        both(&c, &db.url).await;
        pullers.push((rows, c));
    }
    b.put(file("/f", "v1")).await.unwrap();
    a.import_changes(&b.export_changes(0).await.unwrap())
        .await
        .unwrap();
    a.put(file("/f", "v2")).await.unwrap();
    a.put(file("/f", "v3")).await.unwrap();
    push(&a, &db.url).await;
    push(&b, &db.url).await;
    let client = pg::connect(&db.url).await;
    let order: Vec<i32> = client
        .query(
            "SELECT version_number FROM version_history ORDER BY change_seq, version_number",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        order.last(),
        Some(&1),
        "B's push wrote version 1 again last"
    );

    let p = pg_state(&db.url).await;
    for (rows, c) in pullers {
        let small = SyncOptions {
            window_rows: rows,
            ..SyncOptions::default()
        };
        let r = pull(&c, &remote(&db.url), &small).await.unwrap();
        assert!(r.pages >= 2, "{rows} rows a page: {r:?}");
        assert_eq!(c.list_versions("/f").await.unwrap().len(), 3);
        assert_eq!(state(&c).await, p, "{rows} rows a page");
        assert_verified(&c, &db.url).await;
    }
}

/// A pull counts each changed row once. A file renamed after its first
/// version was pushed has its row stamped by the rename: a store that
/// pulls in small pages gets the version in a page before the row's, and
/// that page brings the file's row along (its version refers to it); the
/// row's own page brings it again. The report counted it twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_counts_a_row_brought_along_once() {
    let db = pg::database("pull_counts_once").await;
    // A store that pulled before (its next pull reads the feed).
    let c = store_with([file("/c", "c")]).await;
    both(&c, &db.url).await;
    let a = Store::memory().await.unwrap();
    a.put(file("/f", "v1")).await.unwrap();
    push(&a, &db.url).await;
    assert_eq!(a.rename("/f", "/g").await.unwrap(), 1);
    push(&a, &db.url).await;
    let small = SyncOptions {
        window_rows: 1,
        ..SyncOptions::default()
    };
    let r = pull(&c, &remote(&db.url), &small).await.unwrap();
    assert!(r.pages >= 2, "{r:?}");
    assert_eq!((r.files, r.versions, r.own), (1, 1, 0), "{r:?}");
    assert_eq!(c.get("/g").await.unwrap().unwrap().size, 2);
    assert!(c.get("/f").await.unwrap().is_none());
    assert_verified(&c, &db.url).await;
}

/// A first pull (the snapshot, loaded in key order) of a conflict copy
/// whose version's parent is in the file it was copied from, when the
/// copy's id sorts before the original's: the copy's version arrives
/// first (the load checked foreign keys row by row and failed; the
/// snapshot is whole only at its end). PostgreSQL names copies with random
/// ids, and files with time-ordered ones, so the copy's sorts first about
/// once in a few hundred copies; here one copy is given a low id directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_pull_takes_copies_before_their_originals() {
    let db = pg::database("bulk_pull_copies").await;
    let paths: Vec<String> = (0..3).map(|i| format!("/f{i}")).collect();
    let a = store_with(paths.iter().map(|p| file(p, "v1"))).await;
    push(&a, &db.url).await;
    let b = Store::memory().await.unwrap();
    both(&b, &db.url).await;
    for p in &paths {
        a.put(file(p, "from-a")).await.unwrap();
        b.put(file(p, "from-b")).await.unwrap();
    }
    push(&a, &db.url).await;
    let r = push(&b, &db.url).await;
    assert_eq!(r.conflicts.len(), paths.len(), "{:?}", r.conflicts);
    let mut client = pg::connect(&db.url).await;
    let tx = client.transaction().await.unwrap();
    // Foreign keys and the feed's stamps are triggers, not run here.
    tx.batch_execute("SET LOCAL session_replication_role = replica")
        .await
        .unwrap();
    let low = "00000000-0000-4000-8000-000000000001";
    let id: String = tx
        .query_one(
            "SELECT path_id::text FROM file_paths WHERE virtual_path = $1",
            &[&r.conflicts[1].copy],
        )
        .await
        .unwrap()
        .get(0);
    for table in ["file_paths", "version_history", "file_metadata"] {
        tx.execute(
            &format!("UPDATE {table} SET path_id = $1::text::uuid WHERE path_id = $2::text::uuid"),
            &[&low, &id],
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let first: i64 = client
        .query_one(
            "SELECT count(*) FROM version_history v JOIN version_history p \
             ON p.version_id = v.parent_version_id WHERE p.path_id > v.path_id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // At least: another copy's random id sorts before its original's
    // about once in 160.
    assert!(first >= 1, "the copy's version sorts before its parent");

    for rows in [3, 10_000] {
        let options = SyncOptions {
            window_rows: rows,
            ..SyncOptions::default()
        };
        let c = Store::memory().await.unwrap();
        let r = pull(&c, &remote(&db.url), &options).await.unwrap();
        assert!(r.bulk, "{r:?}");
        assert_eq!(state(&c).await, pg_state(&db.url).await);
        assert_verified(&c, &db.url).await;
        for p in &paths {
            assert_eq!(c.list_versions(p).await.unwrap().len(), 2);
        }
    }
}

/// The first pull into an empty file store is one snapshot in one
/// transaction, with the secondary indexes built at the end: the file has
/// every index a fresh store has, passes SQLite's integrity check, and a
/// pull cut mid-way (its connection terminated again and again) is retried
/// and leaves the full copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_pull_into_a_file() {
    let db = pg::database("two_way_bulk").await;
    let a = Store::memory().await.unwrap();
    crate::pg_sync::populate(&a).await;
    for i in 0..3000 {
        a.put(file(&format!("/many/{i:05}"), &format!("e{i}")))
            .await
            .unwrap();
    }
    push(&a, &db.url).await;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    let b = Store::open(&path).await.unwrap();
    // Cut the pull's connections while it reads.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = {
        let (stop, u) = (stop.clone(), db.url.clone());
        tokio::spawn(async move {
            let admin = pg::connect(&u).await;
            let mut cuts = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && cuts < 2 {
                let n = admin
                    .query(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE datname = current_database() AND application_name = 'nexus-sync' \
                         AND state = 'idle in transaction'",
                        &[],
                    )
                    .await
                    .map(|r| r.len())
                    .unwrap_or(0);
                cuts += n;
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        })
    };
    let options = SyncOptions {
        window_rows: 100,
        max_attempts: 10,
        backoff: std::time::Duration::from_millis(10),
        ..SyncOptions::default()
    };
    let r = pull(&b, &remote(&db.url), &options).await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    killer.await.unwrap();
    assert!(r.bulk, "{r:?}");
    assert!(r.attempts > 1, "the pull was cut and retried: {r:?}");
    assert_eq!(state(&b).await, pg_state(&db.url).await);
    assert_verified(&b, &db.url).await;
    drop(b);

    assert_indexes_like_a_fresh_store(&path).await;
    // Reads and writes work on the rebuilt indexes.
    let b = Store::open(&path).await.unwrap();
    assert!(b.get("/many/01234").await.unwrap().is_some());
    b.put(file("/many/new", "n")).await.unwrap();
    assert_eq!(b.list("/many/").await.unwrap().len(), 3001);
}

/// The store file at `path` passes SQLite's integrity check and has every
/// index a fresh store has.
async fn assert_indexes_like_a_fresh_store(path: &std::path::Path) {
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh.db");
    drop(Store::open(&fresh).await.unwrap());
    let indexes = |p: &std::path::Path| -> Vec<(String, String)> {
        let c = rusqlite::Connection::open(p).unwrap();
        let ok: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        let mut st = c
            .prepare("SELECT name, sql FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL ORDER BY name")
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    let have = indexes(path);
    assert!(have.len() >= 8, "{have:?}");
    assert_eq!(have, indexes(&fresh));
}

/// A first pull cut after some chunks (its load dropped, as when the
/// process dies) keeps what it committed: the store holds part of the
/// database and refuses writes, naming the database. The next pull resumes
/// after the last row committed, from a new snapshot taken after the
/// database changed (a loaded file updated, one not yet loaded removed, one
/// added), and ends with exactly the database's state and every index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_first_pull_resumes_where_it_stopped() {
    let db = pg::database("two_way_resume").await;
    let a = Store::memory().await.unwrap();
    for i in 0..300 {
        let path = format!("/r/{i:03}");
        a.put(file(&path, &format!("e{i}"))).await.unwrap();
        a.set_metadata(&path, "n", &json!(i)).await.unwrap();
    }
    push(&a, &db.url).await;
    let hub = pg::store_id(&db.url).await;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    let b = Store::open(&path).await.unwrap();
    // The load of the first three chunks of 40 files commits; the fourth
    // fails.
    assert_eq!(cut_first_pull(&b, &hub, &db.url, 3).await, 120);
    let loaded = b.list("/r/").await.unwrap();
    assert_eq!(loaded.len(), 120, "three chunks of files committed");
    let err = b.put(file("/local", "x")).await.unwrap_err();
    assert!(
        matches!(&err, nexus_core::Error::PullUnfinished { hub_id } if *hub_id == hub),
        "{err}"
    );
    assert!(err.to_string().contains(&hub), "{err}");
    assert!(b.get("/local").await.unwrap().is_none());

    // The database changes before the pull resumes: a file already loaded
    // is updated, one not loaded yet is removed, one is added.
    let first = &loaded[0].path;
    let last = (0..300)
        .map(|i| format!("/r/{i:03}"))
        .rev()
        .find(|p| !loaded.iter().any(|f| &f.path == p))
        .unwrap();
    let c = Store::memory().await.unwrap();
    both(&c, &db.url).await;
    c.put(file(first, "changed")).await.unwrap();
    c.set_metadata(first, "n", &json!("changed")).await.unwrap();
    c.delete(&last).await.unwrap();
    c.put(file("/r/new", "new")).await.unwrap();
    push(&c, &db.url).await;

    drop(b);
    let b = Store::open(&path).await.unwrap();
    let r = pull(&b, &remote(&db.url), &SyncOptions::default())
        .await
        .unwrap();
    assert!(r.bulk && r.resumed, "{r:?}");
    assert!(r.files < 300, "only the rest was loaded: {r:?}");
    let want = pg_state(&db.url).await;
    assert_eq!(want.len(), 300);
    assert_eq!(want[first].1.as_deref(), Some("changed"));
    assert!(!want.contains_key(&last));
    assert_eq!(state(&b).await, want);
    assert_verified(&b, &db.url).await;
    drop(b);
    assert_indexes_like_a_fresh_store(&path).await;
    let b = Store::open(&path).await.unwrap();
    b.put(file("/local", "x")).await.unwrap();
    let again = pull(&b, &remote(&db.url), &SyncOptions::default())
        .await
        .unwrap();
    assert!(!again.bulk, "{again:?}");
}

/// Begins `store`'s first pull from the database at `url` (whose id is
/// `hub`) and cuts it after `chunks` chunks of 40 rows committed (the next
/// fails, as a lost connection would); returns the rows loaded.
async fn cut_first_pull(store: &Store, hub: &str, url: &str, chunks: usize) -> u64 {
    let mut bulk = store.begin_bulk_pull(hub).await.unwrap().unwrap();
    let mut client = pg::connect(url).await;
    let mut loaded = 0;
    let cut = nexus_pg::read_snapshot(&mut client, 40, None, |c| {
        if loaded == chunks {
            return Err(nexus_core::Error::Unsupported {
                feature: "test",
                reason: "cut".into(),
            });
        }
        loaded += 1;
        bulk.load(&c)
    })
    .await;
    assert!(cut.is_err(), "cut after {chunks} chunks");
    bulk.rows()
}

/// A first pull cut after some chunks can only be finished from the
/// database it came from. A pull from another database (the store pointed
/// elsewhere, or its server now in front of another database) discards it
/// (nothing of the store's own is in it: it began on an empty store, which
/// refused other writes since) and loads that database instead: the store
/// ends with exactly its state and every index, and works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_first_pull_is_discarded_by_a_pull_from_another_database() {
    let (db_a, db_b) = (
        pg::database("two_way_discard_a").await,
        pg::database("two_way_discard_b").await,
    );
    let a = Store::memory().await.unwrap();
    for i in 0..200 {
        let path = format!("/a/{i:03}");
        a.put(file(&path, "a")).await.unwrap();
        a.set_metadata(&path, "n", &json!(i)).await.unwrap();
    }
    push(&a, &db_a.url).await;
    let other = Store::memory().await.unwrap();
    for i in 0..30 {
        other.put(file(&format!("/b/{i}"), "b")).await.unwrap();
    }
    push(&other, &db_b.url).await;
    let (hub_a, hub_b) = (pg::store_id(&db_a.url).await, pg::store_id(&db_b.url).await);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.db");
    let b = Store::open(&path).await.unwrap();
    cut_first_pull(&b, &hub_a, &db_a.url, 2).await;
    assert_eq!(b.list("/a/").await.unwrap().len(), 80);
    assert!(matches!(
        b.put(file("/local", "x")).await.unwrap_err(),
        nexus_core::Error::PullUnfinished { hub_id } if hub_id == hub_a
    ));

    let sub = b.subscribe().await.unwrap();
    let r = pull(&b, &remote(&db_b.url), &SyncOptions::default())
        .await
        .unwrap();
    assert!(r.bulk && !r.resumed, "{r:?}");
    assert_eq!(r.discarded.as_deref(), Some(hub_a.as_str()), "{r:?}");
    assert_eq!(r.hub_id, hub_b);
    assert!(b.list("/a/").await.unwrap().is_empty(), "nothing of A left");
    // A's paths went without a row saying so: subscribers are told that
    // everything may have changed.
    let e = tokio::time::timeout(std::time::Duration::from_secs(10), sub.next())
        .await
        .expect("an event after the pull")
        .unwrap();
    assert!(e.truncated, "{e:?}");
    assert_eq!(state(&b).await, pg_state(&db_b.url).await);
    assert_verified(&b, &db_b.url).await;
    let again = pull(&b, &remote(&db_b.url), &SyncOptions::default())
        .await
        .unwrap();
    assert!(again.discarded.is_none() && !again.bulk, "{again:?}");
    drop(b);
    assert_indexes_like_a_fresh_store(&path).await;
    let b = Store::open(&path).await.unwrap();
    b.put(file("/local", "x")).await.unwrap();
    push(&b, &db_b.url).await;
    assert_eq!(state(&b).await, pg_state(&db_b.url).await);
    drop(b);

    // A discard cut part-way (here: the process died after it marked the
    // load and emptied the removals, chunks and metadata, as rusqlite
    // leaves the file) holds A's files without their metadata: a pull from
    // A itself must not resume it, but discard it and load A afresh.
    let path = dir.path().join("c.db");
    let c = Store::open(&path).await.unwrap();
    cut_first_pull(&c, &hub_a, &db_a.url, 11).await;
    drop(c);
    {
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch(
            "UPDATE nexus_bulk_pull SET position = -1; DELETE FROM tombstones; \
             DELETE FROM content_chunks; DELETE FROM file_metadata;",
        )
        .unwrap();
    }
    let c = Store::open(&path).await.unwrap();
    let r = pull(&c, &remote(&db_a.url), &SyncOptions::default())
        .await
        .unwrap();
    assert!(r.bulk && !r.resumed, "{r:?}");
    assert_eq!(r.discarded.as_deref(), Some(hub_a.as_str()), "{r:?}");
    assert_eq!(state(&c).await, pg_state(&db_a.url).await);
    assert_verified(&c, &db_a.url).await;
    drop(c);
    assert_indexes_like_a_fresh_store(&path).await;
}

/// A feed page of the database's change feed, read directly, that fails
/// after `left` pages (a cut connection, at a chosen point).
struct CutFeed {
    client: tokio_postgres::Client,
    cache: nexus_postgres::StatementCache,
    left: usize,
}

impl nexus_core::Feed for CutFeed {
    type Error = nexus_core::Error;

    async fn page(
        &mut self,
        after: i64,
        within: Option<&nexus_core::SnapshotCursor>,
        max_rows: usize,
    ) -> Result<(nexus_core::FeedPage, i64), nexus_core::Error> {
        if self.left == 0 {
            return Err(nexus_core::Error::Unsupported {
                feature: "test",
                reason: "cut".into(),
            });
        }
        self.left -= 1;
        let page =
            nexus_pg::read_page(&mut self.client, &self.cache, after, within, max_rows).await?;
        Ok((page, 0))
    }
}

/// One transaction larger than a page (a push of 60 files and their
/// metadata: 180 rows) reaches a store that already pulled, in pages of 7
/// rows: the position stays inside the transaction between pages, a pull
/// cut there resumes inside it, and the store ends with the database's
/// state. The same through a sync server's `/v1/pull`, whose answers time
/// out when one holds a transaction of a million rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_larger_than_a_page_comes_in_parts() {
    let db = pg::database("two_way_parts").await;
    let b = store_with([file("/b", "b")]).await;
    both(&b, &db.url).await;
    let a = Store::memory().await.unwrap();
    for i in 0..60 {
        let path = format!("/big/{i:02}");
        a.put(file(&path, &format!("e{i}"))).await.unwrap();
        a.set_metadata(&path, "n", &json!(i)).await.unwrap();
    }
    push(&a, &db.url).await;
    let client = pg::connect(&db.url).await;
    let transactions: i64 = client
        .query_one(
            "SELECT count(DISTINCT change_seq) FROM file_paths WHERE virtual_path LIKE '/big/%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(transactions, 1, "the push is one transaction");
    let hub: String = client
        .query_one("SELECT store_id FROM nexus_state WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    let stamp: i64 = client
        .query_one("SELECT max(change_seq) FROM file_paths", &[])
        .await
        .unwrap()
        .get(0);

    // Three pages of 7 rows, then the connection is cut.
    let mut feed = CutFeed {
        client: pg::connect(&db.url).await,
        cache: Default::default(),
        left: 3,
    };
    let mut report = nexus_core::PullReport {
        from: b.pull_position(&hub).await.unwrap(),
        hub_id: hub.clone(),
        ..Default::default()
    };
    report.to = report.from;
    let cut = b.apply_feed(&mut feed, &mut report, 7, |_| {}).await;
    assert!(cut.is_err(), "{cut:?}");
    assert_eq!(report.pages, 3, "{report:?}");
    assert_eq!(b.pull_position(&hub).await.unwrap(), stamp);
    let within = b.pull_within(&hub).await.unwrap();
    assert!(within.is_some(), "the position is inside the transaction");
    let part = b.list("/big/").await.unwrap().len();
    assert!(part > 0 && part < 60, "part of the push arrived: {part}");

    let small = SyncOptions {
        window_rows: 7,
        ..SyncOptions::default()
    };
    let r = pull(&b, &remote(&db.url), &small).await.unwrap();
    assert_eq!(r.from, stamp, "{r:?}");
    assert_eq!(r.files, 60 - part as u64, "only the rest: {r:?}");
    assert!(r.pages > 5, "{r:?}");
    assert_eq!(b.pull_within(&hub).await.unwrap(), None);
    let want = pg_state(&db.url).await;
    assert_eq!(want.len(), 61);
    assert_eq!(state(&b).await, want);
    let again = pull(&b, &remote(&db.url), &small).await.unwrap();
    assert_eq!(again.rows(), 0, "nothing twice: {again:?}");

    // Through a sync server, into another store that already pulled.
    let server = nexus_tests::serve::TestServer::start(&db.url).await;
    let c = store_with([file("/c", "c")]).await;
    let via = server.remote("default");
    sync_with(&c, &via, &small).await.unwrap();
    assert_eq!(state(&c).await, pg_state(&db.url).await);
    let d = store_with([file("/d", "d")]).await;
    sync_with(&d, &via, &small).await.unwrap();
    let more = store_with((0..40).map(|i| file(&format!("/more/{i:02}"), "m"))).await;
    push(&more, &db.url).await;
    let r = sync_with(&d, &via, &small).await.unwrap();
    assert!(r.pull.pages > 5 && r.pull.files >= 40, "{:?}", r.pull);
    assert_eq!(state(&d).await, pg_state(&db.url).await);
}

/// Ten stores push at once into one database, with paths in common: every
/// push lands (a race for a path is retried and then resolved by the rule),
/// each shared path has one file and a conflict copy per other store, and
/// after each pulls, all hold the same files.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_sources_push_at_once() {
    let db = pg::database("two_way_ten").await;
    let mut stores = Vec::new();
    for i in 0..10 {
        let own = (0..20).map(|k| file(&format!("/own/{i}/{k}"), &format!("o{i}-{k}")));
        let shared = (0..5).map(|k| file(&format!("/shared/{k}"), &format!("s{i}-{k}")));
        stores.push(store_with(own.chain(shared)).await);
    }
    let conflicts: usize = push_at_once(&stores, &db.url)
        .await
        .iter()
        .map(|r| r.conflicts.len())
        .sum();
    assert_eq!(conflicts, 9 * 5, "one copy per shared path per later store");
    let pg = pg_state(&db.url).await;
    assert_eq!(
        pg.len(),
        10 * 20 + 5 + 9 * 5,
        "{:?}",
        pg.keys().collect::<Vec<_>>()
    );
    // Then all ten, now incremental, race for one new path.
    for (i, s) in stores.iter().enumerate() {
        s.put(file("/race", &format!("r{i}"))).await.unwrap();
    }
    let copies: usize = push_at_once(&stores, &db.url)
        .await
        .iter()
        .map(|r| r.conflicts.len())
        .sum();
    assert_eq!(copies, 9, "one store keeps /race, nine copies");
    let pg = pg_state(&db.url).await;
    for s in &stores {
        both(s, &db.url).await;
    }
    for s in &stores {
        assert_eq!(state(s).await, pg);
        assert_verified(s, &db.url).await;
    }
}

/// Many stores' first pushes at once into an empty database: one bulk-loads,
/// the others do not wait for its lock while holding locks the load needs
/// (which deadlocked), they are raced and retried as incremental pushes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_first_pushes_into_an_empty_database() {
    let db = pg::database("two_way_first_pushes").await;
    let mut stores = Vec::new();
    for i in 0..32 {
        stores.push(
            store_with((0..2).map(|k| file(&format!("/first/{i}/{k}"), &format!("f{i}-{k}"))))
                .await,
        );
    }
    for report in push_at_once(&stores, &db.url).await {
        assert_eq!(report.rows(), 4, "{report:?}");
    }
    assert_eq!(pg_state(&db.url).await.len(), 64);
    // The statistics of the pushes' sessions are flushed within a second.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let deadlocks: i64 = pg::connect(&db.url)
        .await
        .query_one(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(deadlocks, 0, "the first pushes deadlocked");
}

/// Windows and pages of one row split what belongs together: a file's
/// versions from its row in a push, a file's row from its versions in a
/// pull (the file renamed later), a conflict's two pushes over two pull
/// pages. Every push and pull still goes through, and all converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_row_windows_split_files_from_their_versions() {
    let db = pg::database("two_way_one_row").await;
    let one = SyncOptions {
        window_rows: 1,
        ..SyncOptions::default()
    };
    let push1 = |s: &Store| {
        let r = Replicator::new(s.clone(), url(&db.url)).with_options(one.clone());
        async move { r.sync().await.unwrap() }
    };
    let a = Store::memory().await.unwrap();
    let b = Store::memory().await.unwrap();
    a.put(file("/f", "v1")).await.unwrap();
    a.set_metadata("/f", "k", &json!(1)).await.unwrap();
    push1(&a).await;
    sync_with(&b, &remote(&db.url), &one).await.unwrap();

    // B makes v2 and pushes; A makes its own v2, then other rows, then
    // renames /f: A's version and A's file row land in different windows.
    b.put(file("/f", "b2")).await.unwrap();
    push1(&b).await;
    a.put(file("/f", "a2")).await.unwrap();
    for i in 0..4 {
        a.put(file(&format!("/other/{i}"), "o")).await.unwrap();
    }
    a.rename("/f", "/f-renamed").await.unwrap();
    let r = push1(&a).await;
    assert_eq!(r.conflicts.len(), 1, "{:?}", r.conflicts);

    // A store that already has a file of its own (so no snapshot) pulls
    // from the start one row at a time: /f's versions and metadata come in
    // pages before its current row.
    let c = Store::memory().await.unwrap();
    c.put(file("/c-own", "c")).await.unwrap();
    sync_with(&c, &remote(&db.url), &one).await.unwrap();

    for s in [&a, &b, &c, &a, &b, &c] {
        sync_with(s, &remote(&db.url), &one).await.unwrap();
    }
    let pg = pg_state(&db.url).await;
    for s in [&a, &b, &c] {
        assert_eq!(state(s).await, pg);
        assert_verified(s, &db.url).await;
    }
    assert_eq!(pg["/f"].1.as_deref(), Some("b2"), "{pg:?}");
    assert!(pg.values().any(|f| f.1.as_deref() == Some("a2")), "{pg:?}");
}

/// Two stores that each met the same conflict (A and B both made version 2
/// of one file), in different orders: A holds its own version and imports
/// B's, C learns B's first and A's after. Both keep A's version (made
/// first) in the file and B's in the same copy (one id, derived from the
/// file and B's version), so when A imports C's changes, nothing moves.
/// (Before, each kept the side it held first, in opposite arrangements;
/// the import of C's changes first failed for good, a version clash, then
/// kept A's arrangement with both sides twice over the stores.) PostgreSQL
/// and the hub decide the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_keeps_the_conflict_copy_it_made_itself() {
    let db = pg::database("change_files_own_copies").await;
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(Store::memory().await.unwrap());
    }
    let (a, b, c, hub) = (&stores[0], &stores[1], &stores[2], &stores[3]);
    b.put(file("/f", "v1")).await.unwrap();
    a.import_changes(&b.export_changes(0).await.unwrap())
        .await
        .unwrap();
    c.import_changes(&b.export_changes(0).await.unwrap())
        .await
        .unwrap();
    a.put(file("/f", "from-a")).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    b.put(file("/f", "from-b")).await.unwrap();
    let (from_a, from_b) = (
        a.export_changes(0).await.unwrap(),
        b.export_changes(0).await.unwrap(),
    );
    c.import_changes(&from_b).await.unwrap();
    let r = c.import_changes(&from_a).await.unwrap();
    assert_eq!(r.conflicts.len(), 1, "C copies A's file: {r:?}");
    let r = a.import_changes(&from_b).await.unwrap();
    assert_eq!(r.conflicts.len(), 1, "A copies B's file: {r:?}");
    let before = state(a).await;
    let copy_id = |s: &State| {
        let copies: Vec<&String> = s
            .values()
            .map(|f| &f.0)
            .filter(|id| **id != s["/f"].0)
            .collect();
        assert_eq!(copies.len(), 1, "{s:?}");
        copies[0].clone()
    };
    assert_eq!(copy_id(&before), copy_id(&state(c).await), "one copy");
    let from_c = c.export_changes(0).await.unwrap();
    a.import_changes(&from_c).await.unwrap();
    // (The copy's name may change: each store named it after the source it
    // met the conflict through, and both keep the greater name.)
    let arrangement = |s: State| -> Vec<(String, Option<String>, u32)> {
        s.into_values().map(|f| (f.0, f.1, f.3)).collect()
    };
    assert_eq!(
        arrangement(state(a).await),
        arrangement(before.clone()),
        "A keeps its arrangement"
    );
    assert_eq!(before["/f"].1.as_deref(), Some("from-a"));
    ship(c, hub, &db.url).await;
    ship(a, hub, &db.url).await;
    let (h, p) = (state(hub).await, pg_state(&db.url).await);
    assert_eq!(comparable(h.clone()), comparable(p));
    assert_eq!(
        h["/f"].1.as_deref(),
        Some("from-a"),
        "the hub keeps A's: {h:?}"
    );
    for s in [a, c, hub] {
        let etags: Vec<_> = state(s).await.into_values().map(|f| f.1).collect();
        assert_eq!(etags.len(), 2, "{etags:?}");
        assert!(etags.contains(&Some("from-a".into())) && etags.contains(&Some("from-b".into())));
        s.put(file("/f", "again")).await.unwrap();
    }
}

/// Two stores meet one content conflict each its own way round: C learns
/// B's version 2 of a file, then A's (a copy of A's, in C); PostgreSQL
/// gets A's first (a copy of B's, there). C's push then brings its copy,
/// whose version PostgreSQL holds in the file itself: the copy lands as a
/// deletion, as PostgreSQL's change, so that C drops it on its pull.
/// Before, PostgreSQL left C's copy out and C kept it for good, a file no
/// other store had (found by `three_stores_converge`).
#[test]
fn three_stores_converge_when_a_conflict_was_met_both_ways_round() {
    // Whole pushes, and pushes in windows of one and of two rows.
    for window in [10_000, 1, 2] {
        converge(
            &[
                (1, Op::Put(5, 2)),
                (1, Op::Put(5, 0)),
                (2, Op::Put(5, 0)),
                (1, Op::Sync),
                (2, Op::Push),
                // No such file: a step before which C learns A's changes.
                (0, Op::Delete(3)),
            ],
            window,
            &[(1, 2, 1), (3, 0, 2), (5, 0, 1)],
        );
    }
}

/// A version that a store keeps in a conflict copy stays there when it
/// arrives again in its first file from a store that does not know of the
/// copy (the shrunk case of `change_files_alone_converge` that found it):
/// store 2's second version lost to store 0's and went to a copy; store 2,
/// not knowing, wrote a third on top of it; store 1, which had both
/// versions in the copy already, then learned store 2's rows again. The
/// third version stayed in the copy, under the second, and every store can
/// still write the file (before: it went back to the file, which then held
/// a version 3 past its current version 2, and the next write failed on
/// the unique version number).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_kept_in_a_copy_stays_there_when_it_arrives_again() {
    let stores = vec![
        Store::memory().await.unwrap(),
        Store::memory().await.unwrap(),
        Store::memory().await.unwrap(),
    ];
    let mut learned = [[0i64; 3]; 3];
    let put = async |s: usize, i: usize| {
        change_locally(&stores[s], s, i, &Op::Put(2, 0))
            .await
            .unwrap()
    };
    put(1, 0).await;
    learn(&stores, &mut learned, 0, 1).await;
    learn(&stores, &mut learned, 2, 0).await;
    put(0, 3).await;
    let second = put(2, 4).await;
    learn(&stores, &mut learned, 1, 2).await;
    learn(&stores, &mut learned, 0, 2).await;
    let third = put(2, 7).await;
    learn_everything(&stores, &mut learned).await;
    for (i, s) in stores.iter().enumerate() {
        let copy = s
            .list("/q/")
            .await
            .unwrap()
            .into_iter()
            .find(|f| f.path != "/q/c")
            .expect("a conflict copy");
        let lines = s
            .debug_query(&format!(
                "SELECT v.version_number, v.content_hash FROM version_history v \
                 JOIN file_paths f ON f.path_id = v.path_id WHERE f.virtual_path = '{}' \
                 ORDER BY v.version_number",
                copy.path
            ))
            .await
            .unwrap();
        let n = |k: i64, etag: &str| vec![Some(k.to_string()), Some(etag.to_string())];
        assert_eq!(lines, vec![n(2, &second), n(3, &third)], "store {i}");
        s.put(file("/q/c", "again")).await.unwrap();
        s.put(file(&copy.path, "again")).await.unwrap();
    }
}
