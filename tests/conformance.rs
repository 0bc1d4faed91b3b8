//! The store's contract, one async function per case. Each takes a fresh,
//! empty store (default tenant) and panics on a violation.
//!
//! The cases cover the original Python store's test suite (the reference
//! notes, section 3) and the edges it left undefined, as decided here (see
//! the README's "Decisions").

use std::collections::BTreeSet;
use std::time::Duration;

use nexus_core::{DynStore, Error, ErrorKind, ListOptions, NewFile, Precondition, VersionSource};
use serde_json::json;

fn file(path: &str) -> NewFile {
    NewFile::new(path, "local", format!("/data{path}"), 1024)
}

async fn put_all(s: &DynStore, paths: &[&str]) {
    for p in paths {
        s.put(file(p)).await.unwrap();
    }
}

async fn listed(s: &DynStore, prefix: &str) -> Vec<String> {
    s.list(prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.path)
        .collect()
}

async fn page_paths(s: &DynStore, opts: &ListOptions) -> (Vec<String>, Option<String>) {
    let page = s.list_page(opts).await.unwrap();
    (
        page.items.into_iter().map(|r| r.path).collect(),
        page.next_cursor,
    )
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn kind<T: std::fmt::Debug>(r: Result<T, Error>) -> ErrorKind {
    r.expect_err("expected an error").kind()
}

/// `stats` sums sizes that together pass 2^63 bytes (each fits a signed
/// 64-bit integer; their sum only an unsigned one), exactly.
pub async fn stats_sum_sizes_past_2_to_the_63(s: DynStore) {
    let big = i64::MAX as u64;
    s.put(NewFile::new("/big/a", "s3", "a", big)).await.unwrap();
    s.put(NewFile::new("/big/b", "s3", "b", big)).await.unwrap();
    let stats = s.stats().await.unwrap();
    assert_eq!((stats.files, stats.total_bytes), (2, 2 * big));
}

/// Python: test_put_and_get.
pub async fn put_and_get_round_trip(s: DynStore) {
    let written = s
        .put(
            NewFile::new("/test/file.txt", "local", "/data/file.txt", 1024)
                .etag("abc123")
                .mime_type("text/plain"),
        )
        .await
        .unwrap();
    let got = s.get("/test/file.txt").await.unwrap().expect("stored");
    assert_eq!(got, written);
    assert_eq!(got.path, "/test/file.txt");
    assert_eq!(got.backend, "local");
    assert_eq!(got.physical_path, "/data/file.txt");
    assert_eq!(got.size, 1024);
    assert_eq!(got.etag.as_deref(), Some("abc123"));
    assert_eq!(got.mime_type.as_deref(), Some("text/plain"));
    assert_eq!(got.version, 1);
    assert_eq!(got.tenant, "default");
    assert_eq!(got.created_at, got.modified_at);
    assert_eq!(got.path_id.len(), 36, "a hyphenated uuid");
}

/// Python: test_get_nonexistent.
pub async fn get_missing_is_none(s: DynStore) {
    assert_eq!(s.get("/nope.txt").await.unwrap(), None);
}

/// Python: test_update_existing; created_at and identity are kept.
pub async fn update_overwrites_and_keeps_identity(s: DynStore) {
    let first = s.put(file("/f.txt").etag("h1")).await.unwrap();
    let second = s
        .put(NewFile::new("/f.txt", "s3", "bucket/f", 2048).etag("h2"))
        .await
        .unwrap();
    let got = s.get("/f.txt").await.unwrap().unwrap();
    assert_eq!(got, second);
    assert_eq!(
        (got.backend.as_str(), got.physical_path.as_str(), got.size),
        ("s3", "bucket/f", 2048)
    );
    assert_eq!(got.etag.as_deref(), Some("h2"));
    assert_eq!(got.path_id, first.path_id);
    assert_eq!(got.created_at, first.created_at);
    assert!(got.modified_at > first.modified_at);
}

/// Python: test_exists.
pub async fn exists_before_and_after(s: DynStore) {
    assert!(!s.exists("/e.txt").await.unwrap());
    s.put(file("/e.txt")).await.unwrap();
    assert!(s.exists("/e.txt").await.unwrap());
}

/// Python: test_delete; deleting a missing path is a no-op that says so.
pub async fn delete_is_soft_and_says_when_missing(s: DynStore) {
    let r = s.put(file("/d.txt")).await.unwrap();
    let deleted = s.delete("/d.txt").await.unwrap().expect("it existed");
    assert_eq!(deleted.path_id, r.path_id);
    assert!(!s.exists("/d.txt").await.unwrap());
    assert_eq!(s.get("/d.txt").await.unwrap(), None);
    assert_eq!(
        s.delete("/d.txt").await.unwrap(),
        None,
        "second delete is a no-op"
    );
    assert_eq!(s.delete("/never.txt").await.unwrap(), None);
    let rows = s
        .debug_query("SELECT COUNT(*) FROM file_paths WHERE deleted_at IS NOT NULL")
        .await
        .unwrap();
    assert_eq!(
        rows[0][0].as_deref(),
        Some("1"),
        "the record is kept, soft-deleted"
    );
}

/// Python: test_list_empty, test_list_all, test_list_with_prefix, test_list_sorted.
pub async fn list_empty_all_prefix_sorted(s: DynStore) {
    assert!(s.list("").await.unwrap().is_empty());
    put_all(
        &s,
        &["/dir1/file1.txt", "/dir1/file2.txt", "/dir2/sub/file3.txt"],
    )
    .await;
    assert_eq!(s.list("").await.unwrap().len(), 3);
    let d1 = listed(&s, "/dir1").await;
    assert_eq!(d1, ["/dir1/file1.txt", "/dir1/file2.txt"]);
    assert!(d1.iter().all(|p| p.starts_with("/dir1")));

    put_all(&s, &["/z.txt", "/a.txt", "/m.txt"]).await;
    let top: Vec<String> = listed(&s, "/")
        .await
        .into_iter()
        .filter(|p| p.matches('/').count() == 1)
        .collect();
    assert_eq!(top, ["/a.txt", "/m.txt", "/z.txt"]);

    // Byte order: upper case before lower case, '.' before '/', non-ASCII last.
    put_all(&s, &["/B", "/a", "/a/b", "/a.b", "/é", "/\u{10FFFF}"]).await;
    let all = listed(&s, "").await;
    let mut sorted = all.clone();
    sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    assert_eq!(all, sorted);
    let pos = |p: &str| all.iter().position(|x| x == p).unwrap();
    assert!(pos("/B") < pos("/a") && pos("/a") < pos("/a.b") && pos("/a.b") < pos("/a/b"));
    assert!(pos("/z.txt") < pos("/é") && pos("/é") < pos("/\u{10FFFF}"));
}

/// The prefix is a raw string: `/dir1` also matches `/dir10/...`; case matters.
pub async fn list_prefix_is_raw_and_case_sensitive(s: DynStore) {
    put_all(&s, &["/dir1/a", "/dir10/b", "/Dir1/c", "/DIR1/d"]).await;
    assert_eq!(listed(&s, "/dir1").await, ["/dir1/a", "/dir10/b"]);
    assert_eq!(listed(&s, "/dir1/").await, ["/dir1/a"]);
    assert_eq!(listed(&s, "/Dir1").await, ["/Dir1/c"]);
    assert_eq!(listed(&s, "/d").await, ["/dir1/a", "/dir10/b"]);
}

/// `%` and `_` are ordinary characters in a prefix (no LIKE semantics).
pub async fn list_prefix_percent_and_underscore_are_literal(s: DynStore) {
    put_all(&s, &["/100%/a", "/100x/b", "/a_b", "/axb", "/%", "/_"]).await;
    assert_eq!(listed(&s, "/100%").await, ["/100%/a"]);
    assert_eq!(listed(&s, "/a_").await, ["/a_b"]);
    assert_eq!(listed(&s, "/%").await, ["/%"]);
    assert_eq!(listed(&s, "/_").await, ["/_"]);
}

/// `recursive: false` lists only paths with no `/` after the prefix.
pub async fn list_non_recursive_gives_direct_children(s: DynStore) {
    put_all(
        &s,
        &[
            "/d/a", "/d/b/c", "/d/b/d/e", "/d/b.txt", "/d/e", "/d/f/g", "/dz", "/top",
        ],
    )
    .await;
    let opts = ListOptions::prefix("/d/").recursive(false);
    assert_eq!(page_paths(&s, &opts).await.0, ["/d/a", "/d/b.txt", "/d/e"]);
    let root = ListOptions::prefix("/").recursive(false);
    assert_eq!(page_paths(&s, &root).await.0, ["/dz", "/top"]);
    let raw = ListOptions::prefix("/d").recursive(false);
    assert_eq!(page_paths(&s, &raw).await.0, ["/dz"]);
    assert_eq!(s.list_directories("/d/").await.unwrap(), ["/d/b", "/d/f"]);
    assert_eq!(s.list_directories("/").await.unwrap(), ["/d"]);
    assert_eq!(s.list_directories("/d/b/").await.unwrap(), ["/d/b/d"]);
    assert!(s.list_directories("/d/a").await.unwrap().is_empty());
}

/// Python pagination tests on `/files/file000..099`.
pub async fn pagination_walks_every_file_once(s: DynStore) {
    let files: Vec<NewFile> = (0..100)
        .map(|i| file(&format!("/files/file{i:03}")))
        .collect();
    s.put_batch(&files).await.unwrap();

    let first = ListOptions::prefix("/files/").limit(10);
    let (items, cursor) = page_paths(&s, &first).await;
    assert_eq!(items.len(), 10);
    assert_eq!(items[0], "/files/file000");
    assert_eq!(items[9], "/files/file009");
    let (items2, _) = page_paths(&s, &first.clone().cursor(cursor)).await;
    assert_eq!(items2[0], "/files/file010");

    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let (items, next) =
            page_paths(&s, &ListOptions::prefix("/files/").limit(7).cursor(cursor)).await;
        seen.extend(items);
        pages += 1;
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(pages, 15);
    assert_eq!(seen.len(), 100);
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 100);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted);

    // The last page says so; an exactly full last page too.
    let (_, none) = page_paths(&s, &ListOptions::prefix("/files/").limit(100)).await;
    assert_eq!(none, None);
    // Limits are clamped to 1..=10000.
    assert_eq!(
        page_paths(&s, &ListOptions::prefix("/files/").limit(0))
            .await
            .0
            .len(),
        1
    );
    assert_eq!(
        page_paths(&s, &ListOptions::prefix("/files/").limit(1))
            .await
            .0
            .len(),
        1
    );
    assert_eq!(
        page_paths(&s, &ListOptions::prefix("/files/").limit(1_000_000))
            .await
            .0
            .len(),
        100
    );
    // Empty results.
    let (empty, next) = page_paths(&s, &ListOptions::prefix("/nothing/")).await;
    assert!(empty.is_empty() && next.is_none());
}

/// A garbage cursor, or one from other filters, is an `InvalidCursor`.
pub async fn pagination_rejects_bad_and_foreign_cursors(s: DynStore) {
    put_all(&s, &["/p/a", "/p/b", "/p/c"]).await;
    let (_, cursor) = page_paths(&s, &ListOptions::prefix("/p/").limit(1)).await;
    let cursor = cursor.expect("more pages");
    for garbage in ["garbage", "", "%%%", "djE6eHg6L3AvYQ"] {
        let err = s
            .list_page(&ListOptions::prefix("/p/").cursor(Some(garbage.into())))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidCursor { .. }),
            "{garbage:?}: {err}"
        );
    }
    for other in [
        ListOptions::prefix("/q/"),
        ListOptions::prefix("/p/").recursive(false),
        ListOptions::prefix("/p"),
    ] {
        let err = s
            .list_page(&other.cursor(Some(cursor.clone())))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("filters mismatch"), "{err}");
    }
    let other_tenant = s.with_tenant("other").unwrap();
    let err = other_tenant
        .list_page(&ListOptions::prefix("/p/").cursor(Some(cursor.clone())))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    // The genuine cursor still works, with any page size.
    let (rest, _) = page_paths(
        &s,
        &ListOptions::prefix("/p/").limit(50).cursor(Some(cursor)),
    )
    .await;
    assert_eq!(rest, ["/p/b", "/p/c"]);
}

/// Non-recursive listings page correctly across skipped subtrees.
pub async fn pagination_non_recursive_across_pages(s: DynStore) {
    let mut files = Vec::new();
    for i in 0..5 {
        files.push(file(&format!("/r/f{i}")));
        for j in 0..30 {
            files.push(file(&format!("/r/f{i}x/deep{j}")));
        }
    }
    s.put_batch(&files).await.unwrap();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let (items, next) = page_paths(
            &s,
            &ListOptions::prefix("/r/")
                .recursive(false)
                .limit(2)
                .cursor(cursor),
        )
        .await;
        seen.extend(items);
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, ["/r/f0", "/r/f1", "/r/f2", "/r/f3", "/r/f4"]);
}

/// Python: test_unique_constraint_virtual_path.
pub async fn duplicate_put_keeps_one_row(s: DynStore) {
    s.put(file("/dup.txt")).await.unwrap();
    s.put(NewFile::new("/dup.txt", "s3", "b/dup", 1))
        .await
        .unwrap();
    let all = s.list("").await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].backend, "s3");
    let rows = s
        .debug_query("SELECT COUNT(*) FROM file_paths WHERE virtual_path = '/dup.txt'")
        .await
        .unwrap();
    assert_eq!(rows[0][0].as_deref(), Some("1"));
}

/// Python: test_soft_delete_does_not_appear_in_list.
pub async fn soft_deleted_not_listed(s: DynStore) {
    s.put(file("/gone.txt")).await.unwrap();
    assert_eq!(s.list("").await.unwrap().len(), 1);
    s.delete("/gone.txt").await.unwrap();
    assert_eq!(s.list("").await.unwrap().len(), 0);
    assert_eq!(
        s.list_page(&ListOptions::default())
            .await
            .unwrap()
            .items
            .len(),
        0
    );
}

/// Re-putting a deleted path creates a new identity without the old metadata or versions.
pub async fn reput_after_delete_is_new_identity(s: DynStore) {
    let old = s.put(file("/again.txt").etag("a")).await.unwrap();
    s.put(file("/again.txt").etag("b")).await.unwrap();
    s.set_metadata("/again.txt", "k", &json!(1)).await.unwrap();
    s.delete("/again.txt").await.unwrap();
    let new = s.put(file("/again.txt").etag("c")).await.unwrap();
    assert_ne!(new.path_id, old.path_id);
    assert_eq!(new.version, 1);
    assert_eq!(s.get_metadata("/again.txt", "k").await.unwrap(), None);
    assert_eq!(s.list_versions("/again.txt").await.unwrap().len(), 1);
    assert!(new.created_at > old.created_at);
}

/// Python: test_get_file_metadata, test_update_file_metadata.
pub async fn metadata_round_trip(s: DynStore) {
    s.put(file("/m.txt")).await.unwrap();
    s.set_metadata("/m.txt", "author", &json!("John Doe"))
        .await
        .unwrap();
    s.set_metadata("/m.txt", "tags", &json!(["python", "test"]))
        .await
        .unwrap();
    s.set_metadata("/m.txt", "nested", &json!({"b": 1, "a": [null, true, 1.5]}))
        .await
        .unwrap();
    s.set_metadata("/m.txt", "null", &json!(null))
        .await
        .unwrap();
    assert_eq!(
        s.get_metadata("/m.txt", "author").await.unwrap(),
        Some(json!("John Doe"))
    );
    assert_eq!(
        s.get_metadata("/m.txt", "tags").await.unwrap(),
        Some(json!(["python", "test"]))
    );
    assert_eq!(
        s.get_metadata("/m.txt", "nested").await.unwrap(),
        Some(json!({"a": [null, true, 1.5], "b": 1}))
    );
    assert_eq!(
        s.get_metadata("/m.txt", "null").await.unwrap(),
        Some(json!(null)),
        "JSON null is a value"
    );
    assert_eq!(s.get_metadata("/m.txt", "missing").await.unwrap(), None);

    s.set_metadata("/m.txt", "version", &json!(1))
        .await
        .unwrap();
    s.set_metadata("/m.txt", "version", &json!(2))
        .await
        .unwrap();
    assert_eq!(
        s.get_metadata("/m.txt", "version").await.unwrap(),
        Some(json!(2))
    );

    let all = s.list_metadata("/m.txt").await.unwrap();
    assert_eq!(
        all.keys().map(String::as_str).collect::<Vec<_>>(),
        ["author", "nested", "null", "tags", "version"]
    );

    assert!(s.delete_metadata("/m.txt", "author").await.unwrap());
    assert!(!s.delete_metadata("/m.txt", "author").await.unwrap());
    assert_eq!(s.get_metadata("/m.txt", "author").await.unwrap(), None);
    // Setting it again removes the tombstone left for sync.
    s.set_metadata("/m.txt", "author", &json!("again"))
        .await
        .unwrap();
    let tombs = s
        .debug_query("SELECT COUNT(*) FROM tombstones WHERE table_name = 'file_metadata'")
        .await
        .unwrap();
    assert_eq!(tombs[0][0].as_deref(), Some("0"));
}

/// Many metadata entries in one transaction; one bad entry writes none.
pub async fn metadata_batch_is_all_or_nothing(s: DynStore) {
    put_all(&s, &["/a", "/b"]).await;
    let entries = vec![
        ("/a".to_string(), "k".to_string(), json!(1)),
        ("/b".to_string(), "k".to_string(), json!({"x": [true]})),
        ("/a".to_string(), "k".to_string(), json!(2)),
    ];
    s.set_metadata_batch(&entries).await.unwrap();
    assert_eq!(
        s.get_metadata("/a", "k").await.unwrap(),
        Some(json!(2)),
        "later entries win"
    );
    assert_eq!(
        s.get_metadata("/b", "k").await.unwrap(),
        Some(json!({"x": [true]}))
    );
    let with_missing = vec![
        ("/a".to_string(), "new".to_string(), json!(1)),
        ("/missing".to_string(), "new".to_string(), json!(1)),
    ];
    assert!(matches!(
        s.set_metadata_batch(&with_missing).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(
        s.get_metadata("/a", "new").await.unwrap(),
        None,
        "nothing of the failed batch was written"
    );
    let invalid = vec![("/a".to_string(), String::new(), json!(1))];
    assert_eq!(
        kind(s.set_metadata_batch(&invalid).await),
        ErrorKind::InvalidInput
    );
}

/// Metadata of a missing file: `NotFound` for set, get and delete.
pub async fn metadata_on_missing_file(s: DynStore) {
    let err = s
        .set_metadata("/missing.txt", "k", &json!(1))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { path } if path == "/missing.txt"),
        "{err}"
    );
    assert!(err.to_string().contains("/missing.txt"));
    assert_eq!(
        kind(s.get_metadata("/missing.txt", "k").await),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(s.delete_metadata("/missing.txt", "k").await),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(s.set_metadata("/x", "", &json!(1)).await),
        ErrorKind::InvalidInput
    );
}

/// Find paths by key, and by key = value (canonical JSON equality).
pub async fn metadata_find_by_key_and_value(s: DynStore) {
    put_all(&s, &["/a", "/b", "/c", "/d"]).await;
    s.set_metadata("/a", "status", &json!("ready"))
        .await
        .unwrap();
    s.set_metadata("/b", "status", &json!("blocked"))
        .await
        .unwrap();
    s.set_metadata("/c", "status", &json!({"y": 1, "x": 2}))
        .await
        .unwrap();
    s.set_metadata("/d", "status", &json!("ready"))
        .await
        .unwrap();
    s.delete("/d").await.unwrap();
    let all: Vec<String> = s
        .find_by_metadata("status", None)
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.0)
        .collect();
    assert_eq!(all, ["/a", "/b", "/c"]);
    let ready = s
        .find_by_metadata("status", Some(&json!("ready")))
        .await
        .unwrap();
    assert_eq!(ready, [("/a".to_string(), json!("ready"))]);
    let obj = s
        .find_by_metadata("status", Some(&json!({"x": 2, "y": 1})))
        .await
        .unwrap();
    assert_eq!(obj.len(), 1, "key order does not matter");
    assert!(
        s.find_by_metadata("nothing", None)
            .await
            .unwrap()
            .is_empty()
    );
}

/// New files start at version 1; only a new etag makes a new version.
pub async fn versions_new_file_and_updates(s: DynStore) {
    let r = s.put(file("/v.txt").etag("h1")).await.unwrap();
    assert_eq!(r.version, 1);
    assert_eq!(
        s.put(file("/v.txt").etag("h1")).await.unwrap().version,
        1,
        "same etag, same version"
    );
    assert_eq!(s.put(file("/v.txt").etag("h2")).await.unwrap().version, 2);
    assert_eq!(
        s.put(file("/v.txt")).await.unwrap().version,
        3,
        "dropping the etag is a change"
    );
    let no_etag = s.put(file("/n.txt")).await.unwrap();
    assert_eq!(no_etag.version, 1);
    let versions = s.list_versions("/n.txt").await.unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(versions[0].source, VersionSource::Original);
}

/// Python: list_versions [4,3,2,1], get_version, rollback, version_diff.
pub async fn versions_list_get_rollback_diff(s: DynStore) {
    for (i, h) in ["hash1", "hash2", "hash3", "hash4"].iter().enumerate() {
        s.put(
            NewFile::new(
                "/doc.txt",
                "local",
                format!("/p{i}"),
                1000 + 1024 * i as u64,
            )
            .etag(*h),
        )
        .await
        .unwrap();
    }
    let versions = s.list_versions("/doc.txt").await.unwrap();
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [4, 3, 2, 1]
    );
    assert_eq!(versions[3].etag.as_deref(), Some("hash1"));
    assert_eq!(versions[0].parent_version, Some(3));
    assert_eq!(versions[3].parent_version, None);
    assert_eq!(versions[3].source, VersionSource::Original);
    assert_eq!(versions[0].source, VersionSource::Update);

    let v1 = s.get_version("/doc.txt", 1).await.unwrap().unwrap();
    assert_eq!(
        (v1.etag.as_deref(), v1.size, v1.physical_path.as_str()),
        (Some("hash1"), 1000, "/p0")
    );
    let v2 = s.get_version("/doc.txt", 2).await.unwrap().unwrap();
    assert_eq!((v2.etag.as_deref(), v2.size), (Some("hash2"), 2024));
    assert_eq!(s.get_version("/doc.txt", 999).await.unwrap(), None);

    let rolled = s.rollback("/doc.txt", 1).await.unwrap();
    assert_eq!(rolled.version, 5);
    assert_eq!(rolled.etag.as_deref(), Some("hash1"));
    assert_eq!((rolled.size, rolled.physical_path.as_str()), (1000, "/p0"));
    assert_eq!(s.get("/doc.txt").await.unwrap().unwrap(), rolled);
    let v5 = s.get_version("/doc.txt", 5).await.unwrap().unwrap();
    assert_eq!(v5.source, VersionSource::Rollback);
    assert!(
        v5.change_reason
            .as_deref()
            .unwrap()
            .contains("Rollback to version 1")
    );
    assert_eq!(v5.parent_version, Some(4));

    let diff = s.diff_versions("/doc.txt", 1, 2).await.unwrap();
    assert_eq!(diff.size_delta, 1024);
    assert!(diff.content_changed);
    assert_eq!(diff.v1.etag.as_deref(), Some("hash1"));
    assert_eq!(diff.v2.etag.as_deref(), Some("hash2"));
    let same = s.diff_versions("/doc.txt", 1, 5).await.unwrap();
    assert!(!same.content_changed);
    assert_eq!(same.size_delta, 0);
}

/// Versions of missing files and missing versions are typed errors.
pub async fn versions_errors(s: DynStore) {
    assert_eq!(kind(s.list_versions("/missing").await), ErrorKind::NotFound);
    assert_eq!(
        kind(s.get_version("/missing", 1).await),
        ErrorKind::NotFound
    );
    assert!(matches!(
        s.rollback("/missing", 1).await,
        Err(Error::NotFound { .. })
    ));
    s.put(file("/x").etag("1")).await.unwrap();
    let err = s.rollback("/x", 7).await.unwrap_err();
    assert!(
        matches!(err, Error::VersionNotFound { version: 7, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("version 7 not found"));
    assert!(matches!(
        s.diff_versions("/x", 1, 9).await,
        Err(Error::VersionNotFound { version: 9, .. })
    ));
    assert_eq!(
        s.get("/x").await.unwrap().unwrap().version,
        1,
        "failed rollback changed nothing"
    );
}

/// Optimistic concurrency: a put that holds only if the caller's view is current.
pub async fn conditional_put(s: DynStore) {
    let created = s
        .put_if(file("/c.txt").etag("e1"), Precondition::Absent)
        .await
        .unwrap();
    assert_eq!(created.version, 1);
    let err = s
        .put_if(file("/c.txt").etag("e9"), Precondition::Absent)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Conflict { expected, actual, .. } if expected == "absent" && actual == "version 1"),
        "{err}"
    );

    let v2 = s
        .put_if(file("/c.txt").etag("e2"), Precondition::Version(1))
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    let stale = s
        .put_if(file("/c.txt").etag("e3"), Precondition::Version(1))
        .await
        .unwrap_err();
    assert_eq!(stale.kind(), ErrorKind::Conflict);
    assert!(
        stale
            .to_string()
            .contains("expected version 1, found version 2"),
        "{stale}"
    );

    let err = s
        .put_if(file("/c.txt"), Precondition::Etag(Some("e1".into())))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("found etag \"e2\""), "{err}");
    s.put_if(
        file("/c.txt").etag("e3"),
        Precondition::Etag(Some("e2".into())),
    )
    .await
    .unwrap();
    assert!(matches!(
        s.put_if(file("/nope"), Precondition::Version(1)).await,
        Err(Error::Conflict { actual, .. }) if actual == "absent"
    ));
    let now = s.get("/c.txt").await.unwrap().unwrap();
    assert_eq!(
        (now.version, now.etag.as_deref()),
        (3, Some("e3")),
        "failed puts wrote nothing"
    );
}

/// Python batch tests: get_batch, delete_batch, put_batch, empty inputs.
pub async fn batches(s: DynStore) {
    let files: Vec<NewFile> = (0..5).map(|i| file(&format!("/b/{i}"))).collect();
    let written = s.put_batch(&files).await.unwrap();
    assert_eq!(written.len(), 5);
    let mut paths: Vec<String> = (0..5).map(|i| format!("/b/{i}")).collect();
    paths.push("/b/missing".into());
    let got = s.get_batch(&paths).await.unwrap();
    assert_eq!(got.len(), 6);
    assert!(got["/b/missing"].is_none());
    assert_eq!(got["/b/3"].as_ref().unwrap().path, "/b/3");
    assert!(s.get_batch(&[]).await.unwrap().is_empty());

    assert_eq!(
        s.delete_batch(&strings(&["/b/0", "/b/1", "/b/2", "/b/nothing"]))
            .await
            .unwrap(),
        3
    );
    assert_eq!(listed(&s, "/b/").await, ["/b/3", "/b/4"]);
    assert_eq!(s.delete_batch(&[]).await.unwrap(), 0);
    assert!(s.put_batch(&[]).await.unwrap().is_empty());

    // Mixed create and update in one batch.
    let mixed = vec![file("/b/3").etag("new"), file("/b/5")];
    let out = s.put_batch(&mixed).await.unwrap();
    assert_eq!(out[0].version, 2);
    assert_eq!(out[1].version, 1);
}

/// One invalid entry rejects the whole batch before anything is written.
pub async fn put_batch_is_all_or_nothing(s: DynStore) {
    let bad = vec![file("/ok/1"), file("/ok/2"), file("relative/3")];
    let err = s.put_batch(&bad).await.unwrap_err();
    assert!(
        matches!(&err, Error::InvalidPath { path, .. } if path == "relative/3"),
        "{err}"
    );
    assert!(s.list("").await.unwrap().is_empty());
}

/// Python: test_rename_path; identity, metadata and versions follow.
pub async fn rename_file_keeps_identity_metadata_versions(s: DynStore) {
    let before = s.put(file("/old.txt").etag("h1")).await.unwrap();
    s.put(file("/old.txt").etag("h2")).await.unwrap();
    s.set_metadata("/old.txt", "k", &json!("v")).await.unwrap();
    assert_eq!(s.rename("/old.txt", "/new/name.txt").await.unwrap(), 1);
    assert!(!s.exists("/old.txt").await.unwrap());
    let after = s.get("/new/name.txt").await.unwrap().unwrap();
    assert_eq!(after.path_id, before.path_id);
    assert_eq!(after.physical_path, before.physical_path);
    assert_eq!(after.etag.as_deref(), Some("h2"));
    assert_eq!(after.created_at, before.created_at);
    assert_eq!(
        s.get_metadata("/new/name.txt", "k").await.unwrap(),
        Some(json!("v"))
    );
    assert_eq!(s.list_versions("/new/name.txt").await.unwrap().len(), 2);
}

/// Renaming a directory moves everything below it; siblings stay.
pub async fn rename_directory_moves_children(s: DynStore) {
    put_all(
        &s,
        &[
            "/src/a",
            "/src/sub/b",
            "/src/sub/c/d",
            "/src2/x",
            "/src.txt",
        ],
    )
    .await;
    s.set_metadata("/src/sub/b", "k", &json!(1)).await.unwrap();
    assert_eq!(s.rename("/src", "/dst/moved").await.unwrap(), 3);
    assert!(listed(&s, "/src/").await.is_empty());
    assert_eq!(
        listed(&s, "/dst/").await,
        ["/dst/moved/a", "/dst/moved/sub/b", "/dst/moved/sub/c/d"]
    );
    assert_eq!(listed(&s, "/src2/").await, ["/src2/x"]);
    assert!(s.exists("/src.txt").await.unwrap());
    assert_eq!(
        s.get_metadata("/dst/moved/sub/b", "k").await.unwrap(),
        Some(json!(1))
    );
}

/// Python: "Source path not found", "Destination path already exists".
pub async fn rename_errors(s: DynStore) {
    put_all(&s, &["/a", "/b", "/dir/x", "/other/y"]).await;
    assert!(
        matches!(s.rename("/missing", "/z").await, Err(Error::NotFound { path }) if path == "/missing")
    );
    assert!(
        matches!(s.rename("/a", "/b").await, Err(Error::AlreadyExists { path }) if path == "/b")
    );
    assert!(
        matches!(
            s.rename("/a", "/other").await,
            Err(Error::AlreadyExists { .. })
        ),
        "non-empty directory"
    );
    assert!(matches!(
        s.rename("/dir", "/dir/inner").await,
        Err(Error::InvalidPath { .. })
    ));
    assert_eq!(s.rename("/a", "/a").await.unwrap(), 0);
    assert_eq!(
        listed(&s, "").await,
        ["/a", "/b", "/dir/x", "/other/y"],
        "nothing moved"
    );
}

/// Python: test_is_implicit_directory.
pub async fn implicit_directories(s: DynStore) {
    assert!(!s.is_directory("/").await.unwrap());
    put_all(&s, &["/dir/sub/file.txt"]).await;
    assert!(s.is_directory("/").await.unwrap());
    assert!(s.is_directory("/dir").await.unwrap());
    assert!(s.is_directory("/dir/sub").await.unwrap());
    assert!(!s.is_directory("/dir/sub/file.txt").await.unwrap());
    assert!(!s.is_directory("/di").await.unwrap());
    assert!(!s.is_directory("/missing").await.unwrap());
    s.delete("/dir/sub/file.txt").await.unwrap();
    assert!(!s.is_directory("/dir").await.unwrap());
}

/// Chunks: add and release references; unreferenced chunks past their
/// protection are GC candidates; removal leaves a tombstone.
pub async fn chunks_reference_counting_and_gc(s: DynStore) {
    assert_eq!(
        s.add_chunk_ref("h1", 10, "/cas/h1")
            .await
            .unwrap()
            .ref_count,
        1
    );
    assert_eq!(
        s.add_chunk_ref("h1", 10, "/cas/h1")
            .await
            .unwrap()
            .ref_count,
        2
    );
    assert_eq!(
        s.release_chunk_ref("h1", Duration::ZERO)
            .await
            .unwrap()
            .ref_count,
        1
    );
    assert!(s.gc_candidates(10).await.unwrap().is_empty());
    let released = s.release_chunk_ref("h1", Duration::ZERO).await.unwrap();
    assert_eq!(released.ref_count, 0);
    assert!(released.protected_until.is_some());
    assert_eq!(
        kind(s.release_chunk_ref("h1", Duration::ZERO).await),
        ErrorKind::InvalidInput
    );

    s.add_chunk_ref("h2", 20, "/cas/h2").await.unwrap();
    s.release_chunk_ref("h2", Duration::from_secs(3600))
        .await
        .unwrap();
    let candidates: Vec<String> = s
        .gc_candidates(10)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.content_hash)
        .collect();
    assert_eq!(candidates, ["h1"], "h2 is still protected");
    assert!(
        !s.remove_chunk("h2").await.unwrap(),
        "protected chunks are not removed"
    );

    // A new reference revives a candidate.
    s.add_chunk_ref("h1", 10, "/cas/h1").await.unwrap();
    assert!(s.gc_candidates(10).await.unwrap().is_empty());
    s.release_chunk_ref("h1", Duration::ZERO).await.unwrap();
    assert!(s.remove_chunk("h1").await.unwrap());
    assert_eq!(s.get_chunk("h1").await.unwrap(), None);
    assert!(matches!(
        s.release_chunk_ref("h1", Duration::ZERO).await,
        Err(Error::ChunkNotFound { content_hash }) if content_hash == "h1"
    ));
    let tombs = s
        .debug_query("SELECT key2 FROM tombstones WHERE table_name = 'content_chunks'")
        .await
        .unwrap();
    assert_eq!(tombs, [[Some("h1".to_string())]]);
}

/// No call crosses tenants.
pub async fn tenants_are_isolated(s: DynStore) {
    let a = s.with_tenant("acme").unwrap();
    let b = s.with_tenant("globex").unwrap();
    let ra = a.put(file("/shared.txt").etag("a1")).await.unwrap();
    a.put(file("/dir/only-a")).await.unwrap();
    a.set_metadata("/shared.txt", "owner", &json!("acme"))
        .await
        .unwrap();
    a.add_chunk_ref("h", 1, "/cas/h").await.unwrap();
    assert_eq!(ra.tenant, "acme");

    assert_eq!(b.get("/shared.txt").await.unwrap(), None);
    assert!(!b.exists("/shared.txt").await.unwrap());
    assert!(b.list("").await.unwrap().is_empty());
    assert!(
        b.list_page(&ListOptions::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(!b.is_directory("/dir").await.unwrap());
    assert_eq!(b.delete("/shared.txt").await.unwrap(), None);
    assert_eq!(b.delete_batch(&strings(&["/shared.txt"])).await.unwrap(), 0);
    assert!(b.get_batch(&strings(&["/shared.txt"])).await.unwrap()["/shared.txt"].is_none());
    assert_eq!(
        kind(b.get_metadata("/shared.txt", "owner").await),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(b.set_metadata("/shared.txt", "owner", &json!("b")).await),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(b.delete_metadata("/shared.txt", "owner").await),
        ErrorKind::NotFound
    );
    assert!(b.find_by_metadata("owner", None).await.unwrap().is_empty());
    assert_eq!(
        kind(b.list_versions("/shared.txt").await),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(b.rollback("/shared.txt", 1).await),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(b.rename("/shared.txt", "/stolen").await),
        ErrorKind::NotFound
    );
    assert_eq!(kind(b.rename("/dir", "/stolen").await), ErrorKind::NotFound);
    assert_eq!(b.get_chunk("h").await.unwrap(), None);
    assert_eq!(
        kind(b.release_chunk_ref("h", Duration::ZERO).await),
        ErrorKind::NotFound
    );
    assert_eq!(b.stats().await.unwrap().files, 0);
    assert_eq!(
        kind(
            b.put_if(file("/shared.txt"), Precondition::Version(1))
                .await
        ),
        ErrorKind::Conflict
    );

    // The same path in another tenant is another file.
    let rb = b.put(file("/shared.txt").etag("b1")).await.unwrap();
    assert_ne!(rb.path_id, ra.path_id);
    assert_eq!(
        a.get("/shared.txt").await.unwrap().unwrap().etag.as_deref(),
        Some("a1")
    );
    assert_eq!(
        a.get_metadata("/shared.txt", "owner").await.unwrap(),
        Some(json!("acme"))
    );
    assert_eq!(a.stats().await.unwrap().files, 2);
    assert_eq!(
        s.stats().await.unwrap().files,
        0,
        "the default tenant saw none of it"
    );
    assert!(s.with_tenant("").is_err());
    assert!(s.with_tenant("a\0b").is_err());
}

/// Invalid input is a typed error naming the value, and nothing is written.
pub async fn validation_rejects_before_writing(s: DynStore) {
    let bad_paths = [
        "", "no-slash", "/", "/a//b", "/a/", "/a/./b", "/a/../b", "/nul\0",
    ];
    for p in bad_paths {
        let err = s.put(file("/x").clone_with_path(p)).await.unwrap_err();
        assert!(matches!(&err, Error::InvalidPath { .. }), "{p:?}: {err}");
        assert_eq!(kind(s.get(p).await), ErrorKind::InvalidInput, "{p:?}");
        assert_eq!(kind(s.delete(p).await), ErrorKind::InvalidInput, "{p:?}");
        assert_eq!(
            kind(s.set_metadata(p, "k", &json!(1)).await),
            ErrorKind::InvalidInput,
            "{p:?}"
        );
    }
    let long = format!("/{}", "x".repeat(4096));
    assert!(
        s.put(file(&long))
            .await
            .unwrap_err()
            .to_string()
            .contains("4096")
    );
    let too_big = s
        .put(NewFile::new("/big", "local", "/p", u64::MAX))
        .await
        .unwrap_err();
    assert!(
        matches!(&too_big, Error::InvalidArgument { name: "size", .. }),
        "{too_big}"
    );
    let no_backend = s.put(NewFile::new("/nb", "", "/p", 1)).await.unwrap_err();
    assert!(no_backend.to_string().contains("backend"), "{no_backend}");
    let no_phys = s
        .put(NewFile::new("/np", "local", "", 1))
        .await
        .unwrap_err();
    assert!(no_phys.to_string().contains("physical_path"), "{no_phys}");
    assert_eq!(kind(s.rename("/a", "b").await), ErrorKind::InvalidInput);
    assert_eq!(kind(s.list("no-slash").await), ErrorKind::InvalidInput);
    assert!(s.list("").await.unwrap().is_empty());
    assert_eq!(
        s.stats().await.unwrap().change_seq,
        0,
        "no write transaction ran"
    );
}

trait WithPath {
    fn clone_with_path(&self, path: &str) -> NewFile;
}
impl WithPath for NewFile {
    fn clone_with_path(&self, path: &str) -> NewFile {
        NewFile {
            path: path.to_string(),
            ..self.clone()
        }
    }
}

/// Python test_timestamp_behavior: created once, modified on every write, not on read.
pub async fn timestamps_created_kept_modified_advances(s: DynStore) {
    let a = s.put(file("/t")).await.unwrap();
    let mut last = a.modified_at;
    for _ in 0..5 {
        let r = s.put(file("/t")).await.unwrap();
        assert!(r.modified_at > last, "every write advances modified_at");
        assert_eq!(r.created_at, a.created_at);
        last = r.modified_at;
    }
    let read = s.get("/t").await.unwrap().unwrap();
    s.list("").await.unwrap();
    s.exists("/t").await.unwrap();
    assert_eq!(
        s.get("/t").await.unwrap().unwrap(),
        read,
        "reads change nothing"
    );
    assert!(read.modified_at.to_string().ends_with('Z'));
    assert_eq!(
        read.modified_at.to_string().len(),
        "2026-11-24T21:05:14.123456Z".len()
    );
    // Caller-supplied times are kept to the microsecond.
    let t = nexus_core::Timestamp::parse("2001-02-03T04:05:06.789012Z").unwrap();
    let r = s
        .put(file("/given").created_at(t).modified_at(t))
        .await
        .unwrap();
    assert_eq!(s.get("/given").await.unwrap().unwrap().modified_at, t);
    assert_eq!(r.created_at.to_string(), "2001-02-03T04:05:06.789012Z");
}

/// Strings that look like SQL, and unicode, are stored and found literally.
pub async fn sql_lookalikes_and_unicode_stored_literally(s: DynStore) {
    let evil = "/x'; DROP TABLE file_paths; --";
    let uni = "/ünïcödé/日本語/emoji-😀/ملف.txt";
    put_all(&s, &[evil, uni, "/a\"b", "/semi;colon"]).await;
    s.set_metadata(
        evil,
        "'; DELETE FROM file_metadata; --",
        &json!("\" OR 1=1 --"),
    )
    .await
    .unwrap();
    assert!(s.exists(evil).await.unwrap());
    assert_eq!(s.get(uni).await.unwrap().unwrap().path, uni);
    assert_eq!(listed(&s, "/ünïcödé/").await, [uni]);
    assert_eq!(
        s.get_metadata(evil, "'; DELETE FROM file_metadata; --")
            .await
            .unwrap(),
        Some(json!("\" OR 1=1 --"))
    );
    assert_eq!(s.list("").await.unwrap().len(), 4);
}

/// Every committed write advances the change sequence; reads do not.
pub async fn every_write_advances_change_seq(s: DynStore) {
    let seq = |s: DynStore| async move { s.stats().await.unwrap().change_seq };
    let mut last = seq(s.clone()).await;
    let steps: Vec<&str> = vec!["put", "meta", "rename", "delete"];
    for step in steps {
        match step {
            "put" => drop(s.put(file("/c")).await.unwrap()),
            "meta" => s.set_metadata("/c", "k", &json!(1)).await.unwrap(),
            "rename" => drop(s.rename("/c", "/d").await.unwrap()),
            _ => drop(s.delete("/d").await.unwrap()),
        }
        let now = seq(s.clone()).await;
        assert!(now > last, "{step} advanced the sequence");
        last = now;
    }
    s.get("/d").await.unwrap();
    s.list("").await.unwrap();
    assert_eq!(seq(s.clone()).await, last);
    let rows = s
        .debug_query("SELECT change_seq FROM file_paths WHERE virtual_path = '/d'")
        .await
        .unwrap();
    assert_eq!(
        rows[0][0].as_deref(),
        Some(last.to_string().as_str()),
        "the delete stamped its row"
    );
}

/// Every change is stamped after the state it changes, even when that
/// state's time is ahead of the clock (a file's modification time in the
/// future; a key set by a store whose clock ran ahead): a rename, a
/// deletion, a metadata value and a removal each get a time later than what
/// they changed, so that the rule "the later change wins" (change files)
/// never ranks a change below what it changed. Times are compared in SQL
/// that both dialects read alike.
pub async fn a_change_is_stamped_after_what_it_changes(s: DynStore) {
    let ahead = nexus_core::Timestamp::parse("2999-01-01T00:00:00Z").unwrap();
    s.put(file("/ahead").modified_at(ahead)).await.unwrap();
    let later_than_the_file = |sql: &'static str| {
        let s = s.clone();
        async move {
            let rows = s.debug_query(sql).await.unwrap();
            assert_eq!(rows[0][0].as_deref(), Some("1"), "{sql}");
        }
    };
    // The key's value at the file's time (ahead), as if set by a store
    // whose clock ran ahead.
    let key_at_the_files_time = "UPDATE file_metadata SET updated_at = \
        (SELECT updated_at FROM file_paths WHERE virtual_path = '/ahead') WHERE key = 'stamp'";
    let value_later = "SELECT count(*) FROM file_metadata m, file_paths f \
        WHERE m.key = 'stamp' AND m.path_id = f.path_id AND m.updated_at > f.updated_at";
    s.set_metadata("/ahead", "stamp", &json!(1)).await.unwrap();
    s.debug_query(key_at_the_files_time).await.unwrap();
    s.set_metadata("/ahead", "stamp", &json!(2)).await.unwrap();
    later_than_the_file(value_later).await;
    s.debug_query(key_at_the_files_time).await.unwrap();
    assert!(s.delete_metadata("/ahead", "stamp").await.unwrap());
    later_than_the_file(
        "SELECT count(*) FROM tombstones t, file_paths f WHERE t.table_name = 'file_metadata' \
         AND t.key2 = 'stamp' AND f.virtual_path = '/ahead' AND t.deleted_at > f.updated_at",
    )
    .await;
    // Set again after its removal (itself after the file's time).
    s.set_metadata("/ahead", "stamp", &json!(3)).await.unwrap();
    later_than_the_file(value_later).await;
    assert_eq!(s.rename("/ahead", "/moved").await.unwrap(), 1);
    let moved = s.get("/moved").await.unwrap().unwrap();
    assert!(moved.modified_at > ahead, "{moved:?}");
    assert_eq!(s.rename("/moved", "/dir/moved").await.unwrap(), 1);
    assert_eq!(s.rename("/dir", "/dir2").await.unwrap(), 1);
    let again = s.get("/dir2/moved").await.unwrap().unwrap();
    assert!(again.modified_at > moved.modified_at, "{again:?}");
    s.delete("/dir2/moved").await.unwrap().unwrap();
    later_than_the_file(
        "SELECT count(*) FROM file_paths WHERE virtual_path = '/dir2/moved' \
         AND deleted_at > updated_at",
    )
    .await;
    s.put(file("/b").modified_at(ahead)).await.unwrap();
    assert_eq!(s.delete_batch(&["/b".to_string()]).await.unwrap(), 1);
    later_than_the_file(
        "SELECT count(*) FROM file_paths WHERE virtual_path = '/b' AND deleted_at > updated_at",
    )
    .await;
}

/// Many writers and readers on one store at once (threads on native
/// targets; overlapping futures in a browser, which has one thread): every
/// call succeeds, counts add up, and concurrent first puts of one path leave
/// one live row.
pub async fn many_tasks_at_once(s: DynStore) {
    const THREADS: usize = 8;
    const PER: usize = 50;
    async fn task(s: DynStore, t: usize) {
        for i in 0..PER {
            s.put(file(&format!("/t{t}/f{i}"))).await.unwrap();
            s.put(file("/contended").etag(format!("{t}-{i}")))
                .await
                .unwrap();
            assert!(s.get(&format!("/t{t}/f{i}")).await.unwrap().is_some());
            s.list_page(&ListOptions::prefix(format!("/t{t}/")).limit(5))
                .await
                .unwrap();
        }
    }
    #[cfg(not(target_family = "wasm"))]
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let s = s.clone();
            scope.spawn(move || pollster::block_on(task(s, t)));
        }
    });
    #[cfg(target_family = "wasm")]
    futures_util::future::join_all((0..THREADS).map(|t| task(s.clone(), t))).await;
    assert_eq!(s.stats().await.unwrap().files as usize, THREADS * PER + 1);
    let live = s
        .debug_query("SELECT COUNT(*) FROM file_paths WHERE virtual_path = '/contended' AND deleted_at IS NULL")
        .await
        .unwrap();
    assert_eq!(live[0][0].as_deref(), Some("1"));
    assert_eq!(
        s.get("/contended").await.unwrap().unwrap().version as usize,
        THREADS * PER,
        "every put with a new etag made exactly one version"
    );
}
