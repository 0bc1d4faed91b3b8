//! Change files: the format, export from a store, import into another
//! embedded store, and application to a real PostgreSQL.

use std::time::Duration;

use nexus_core::{ChangeFile, Error, ErrorKind, NewFile, Store};
use nexus_sync::{PgUrl, Replicator, SyncMode, SyncOptions, apply_change_file};
use nexus_tests::pg::{self, connect};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::pg_sync::populate;

async fn head(s: &Store) -> i64 {
    s.stats().await.unwrap().change_seq
}

/// Every row of every replicated table, all tenants, by primary key, every
/// column but `change_seq`.
async fn rows(s: &Store) -> Vec<Vec<Vec<Option<String>>>> {
    let mut out = Vec::new();
    for sql in [
        "SELECT path_id, tenant_id, virtual_path, backend_id, physical_path, size_bytes, content_hash, file_type, \
         created_at, updated_at, deleted_at, current_version FROM file_paths ORDER BY path_id",
        "SELECT version_id, path_id, version_number, backend_id, physical_path, content_hash, size_bytes, mime_type, \
         parent_version_id, source_type, change_reason, created_by, created_at FROM version_history ORDER BY version_id",
        "SELECT path_id, key, value, created_at, updated_at FROM file_metadata ORDER BY path_id, key",
        "SELECT tenant_id, content_hash, size_bytes, storage_path, ref_count, created_at, last_accessed_at, \
         protected_until FROM content_chunks ORDER BY tenant_id, content_hash",
        "SELECT table_name, key1, key2, deleted_at FROM tombstones ORDER BY table_name, key1, key2",
    ] {
        out.push(s.debug_query(sql).await.unwrap());
    }
    out
}

/// What the public API shows, per tenant: files, metadata, versions, chunks.
async fn records(s: &Store) -> Vec<Value> {
    let mut out = Vec::new();
    for tenant in ["default", "acme"] {
        let t = s.with_tenant(tenant).unwrap();
        for r in t.list("").await.unwrap() {
            let got = t.get(&r.path).await.unwrap().unwrap();
            assert_eq!(got, r);
            out.push(json!({
                "record": r,
                "metadata": t.list_metadata(&r.path).await.unwrap(),
                "versions": t.list_versions(&r.path).await.unwrap(),
            }));
        }
        for hash in ["c1", "c2", "c3"] {
            out.push(json!({"chunk": hash, "is": t.get_chunk(hash).await.unwrap()}));
        }
    }
    out
}

async fn assert_same(a: &Store, b: &Store) {
    assert_eq!(records(a).await, records(b).await);
    assert_eq!(rows(a).await, rows(b).await);
}

fn reason(bytes: &[u8]) -> String {
    match ChangeFile::decode(bytes) {
        Err(Error::InvalidChangeFile { reason }) => reason,
        other => panic!("expected InvalidChangeFile, got {other:?}"),
    }
}

/// A valid encoded file with one row of each table, as JSON to edit.
async fn sample() -> Value {
    let s = Store::memory().await.unwrap();
    s.put(NewFile::new("/a", "local", "/p", 3)).await.unwrap();
    s.set_metadata("/a", "k", &json!(1)).await.unwrap();
    s.set_metadata("/a", "gone", &json!(1)).await.unwrap();
    s.delete_metadata("/a", "gone").await.unwrap();
    s.add_chunk_ref("h", 1, "/cas/h").await.unwrap();
    serde_json::from_slice(&s.export_changes(0).await.unwrap().encode()).unwrap()
}

fn edited(doc: &Value, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut d = doc.clone();
    edit(&mut d);
    serde_json::to_vec(&d).unwrap()
}

#[test]
fn encode_decode_round_trip() {
    pollster::block_on(async {
        let f = Store::memory().await.unwrap();
        populate(&f).await;
        let file = f.export_changes(0).await.unwrap();
        assert_eq!(file.changes.after, 0);
        assert_eq!(file.changes.through, head(&f).await);
        assert!(!file.changes.files.is_empty() && !file.changes.tombstones.is_empty());
        let bytes = file.encode();
        let doc: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(doc["format"], "nexus-changes");
        assert_eq!(doc["version"], 1);
        assert_eq!(doc["source_id"], f.snapshot().await.unwrap().source_id());
        assert_eq!(ChangeFile::decode(&bytes).unwrap(), file);
        // Incremental and empty files too.
        let mid = f.export_changes(head(&f).await - 3).await.unwrap();
        assert_eq!(ChangeFile::decode(&mid.encode()).unwrap(), mid);
        let none = f.export_changes(head(&f).await).await.unwrap();
        assert!(none.changes.is_empty());
        assert_eq!(ChangeFile::decode(&none.encode()).unwrap(), none);
        // Export refuses a point outside the store's history.
        for bad in [-1, head(&f).await + 1] {
            let e = f.export_changes(bad).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
            assert!(e.to_string().contains("change sequence"), "{e}");
        }
    });
}

#[test]
fn decode_errors_name_what_is_wrong() {
    pollster::block_on(async {
        let doc = sample().await;
        assert!(ChangeFile::decode(&serde_json::to_vec(&doc).unwrap()).is_ok());
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                b"".to_vec(),
                "not valid JSON: EOF while parsing a value at line 1 column 0",
            ),
            (
                b"{\"format\": \"nexus-changes\",\n  \"version\" 1}".to_vec(),
                "at line 2 column",
            ),
            (vec![0xff, 0xfe], "not valid JSON"),
            (b"42".to_vec(), "not a change file: expected a JSON object"),
            (b"{}".to_vec(), "not a change file: no \"format\" field"),
            (
                edited(&doc, |d| d["format"] = json!("nexus-snapshot")),
                "\"format\" is \"nexus-snapshot\"",
            ),
            (
                edited(&doc, |d| d["format"] = json!(7)),
                "\"format\" is a number",
            ),
            (
                edited(&doc, |d| d["version"] = json!(2)),
                "unsupported version 2 (this build reads version 1)",
            ),
            (
                edited(&doc, |d| d["version"] = json!("1")),
                "unsupported version \"1\"",
            ),
            (
                edited(&doc, |d| {
                    d.as_object_mut().unwrap().remove("version");
                }),
                "no \"version\" field",
            ),
            (
                edited(&doc, |d| {
                    d.as_object_mut().unwrap().remove("source_id");
                }),
                "missing field `source_id`",
            ),
            (
                edited(&doc, |d| d["extra"] = json!(1)),
                "unknown field `extra`",
            ),
            (
                edited(&doc, |d| d["files"][0]["size_bytes"] = json!("big")),
                "invalid type: string \"big\"",
            ),
            (
                edited(&doc, |d| d["files"][0]["colour"] = json!(1)),
                "unknown field `colour`",
            ),
            (
                edited(&doc, |d| {
                    d["after"] = json!(9);
                    d["through"] = json!(2);
                }),
                "after = 9 is greater than through = 2",
            ),
            (
                edited(&doc, |d| d["after"] = json!(-1)),
                "after = -1 is negative",
            ),
            (
                edited(&doc, |d| d["files"][0]["change_seq"] = json!(99)),
                "files[0] (\"/a\", tenant \"default\"): change_seq 99 is outside (0, ",
            ),
            (
                edited(&doc, |d| d["metadata"][0]["change_seq"] = json!(0)),
                "metadata[0]",
            ),
            (
                edited(&doc, |d| d["tombstones"][0]["change_seq"] = json!(0)),
                "tombstones[0]",
            ),
            (
                edited(&doc, |d| d["files"][0]["size_bytes"] = json!(-5)),
                "size_bytes = -5 is negative",
            ),
            (
                edited(&doc, |d| d["versions"][0]["size_bytes"] = json!(-1)),
                "versions[0]",
            ),
            (
                edited(&doc, |d| d["chunks"][0]["ref_count"] = json!(-1)),
                "ref_count = -1 is negative",
            ),
            (
                edited(&doc, |d| d["files"][0]["tenant_id"] = json!("")),
                "invalid tenant \"\": must not be empty",
            ),
            (
                edited(&doc, |d| {
                    d["chunks"][0]["tenant_id"] = json!("x".repeat(300))
                }),
                "must be at most 255 bytes",
            ),
            (
                edited(&doc, |d| d["files"][0]["virtual_path"] = json!("a/b")),
                "invalid path \"a/b\"",
            ),
            (
                edited(&doc, |d| d["files"][0]["virtual_path"] = json!("/a/../b")),
                "'.' or '..'",
            ),
            (
                edited(&doc, |d| d["metadata"][0]["value"] = json!("{oops")),
                "value is not JSON",
            ),
            (
                edited(&doc, |d| {
                    d["tombstones"][0]["table_name"] = json!("file_paths")
                }),
                "is not file_metadata",
            ),
            (
                edited(&doc, |d| d["versions"][0]["source_type"] = json!("magic")),
                "source_type \"magic\"",
            ),
            (
                edited(&doc, |d| {
                    let f = d["files"][0].clone();
                    d["files"].as_array_mut().unwrap().push(f);
                }),
                "appears twice",
            ),
            (
                edited(&doc, |d| {
                    let mut f = d["files"][0].clone();
                    f["path_id"] = json!("another");
                    d["files"].as_array_mut().unwrap().push(f);
                }),
                "two live files at this path",
            ),
            (edited(&doc, |d| d["source_id"] = json!("")), "source_id"),
        ];
        for (bytes, needle) in cases {
            let r = reason(&bytes);
            assert!(r.contains(needle), "expected {needle:?} in {r:?}");
        }
    });
}

/// A valid file, then arbitrary edits of it: decode never panics, and
/// fails only with `InvalidChangeFile`.
fn mutate(doc: &Value, path: &[usize], replacement: &Value) -> Value {
    fn walk(v: &mut Value, path: &[usize], replacement: &Value) {
        let Some((&i, rest)) = path.split_first() else {
            *v = replacement.clone();
            return;
        };
        match v {
            Value::Object(m) if !m.is_empty() => {
                let key = m.keys().nth(i % m.len()).unwrap().clone();
                walk(m.get_mut(&key).unwrap(), rest, replacement)
            }
            Value::Array(a) if !a.is_empty() => {
                let n = a.len();
                walk(&mut a[i % n], rest, replacement)
            }
            other => *other = replacement.clone(),
        }
    }
    let mut d = doc.clone();
    walk(&mut d, path, replacement);
    d
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn decode_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        match ChangeFile::decode(&bytes) {
            Ok(_) | Err(Error::InvalidChangeFile { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    #[test]
    fn decode_never_panics_on_edited_files(
        path in prop::collection::vec(0usize..16, 0..4),
        replacement in prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
            Just(json!([])),
            Just(json!({})),
            Just(json!(i64::MIN)),
            Just(json!(u64::MAX)),
            Just(json!(1.5)),
        ],
        cut in any::<prop::sample::Index>(),
    ) {
        static DOC: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
        let doc = DOC.get_or_init(|| pollster::block_on(sample()));
        let bytes = serde_json::to_vec(&mutate(doc, &path, &replacement)).unwrap();
        for b in [&bytes[..], &bytes[..cut.index(bytes.len() + 1)]] {
            match ChangeFile::decode(b) {
                Ok(f) => prop_assert!(f.validate().is_ok()),
                Err(Error::InvalidChangeFile { .. }) => {}
                Err(e) => panic!("unexpected error {e}"),
            }
        }
    }
}

#[test]
fn export_then_import_gives_identical_records() {
    pollster::block_on(async {
        let a = Store::memory().await.unwrap();
        populate(&a).await;
        let b = Store::memory().await.unwrap();
        let file = ChangeFile::decode(&a.export_changes(0).await.unwrap().encode()).unwrap();
        let before = head(&b).await;
        let r = b.import_changes(&file).await.unwrap();
        assert!(!r.skipped);
        assert_eq!(r.previous, 0);
        assert_eq!(r.rows() as usize, file.changes.len());
        assert_eq!(r.change_seq, Some(before + 1));
        assert_same(&a, &b).await;
        // Every imported row carries the import's own change sequence.
        let seqs = b
            .debug_query(
                "SELECT DISTINCT change_seq FROM (SELECT change_seq FROM file_paths UNION ALL \
                 SELECT change_seq FROM version_history UNION ALL SELECT change_seq FROM file_metadata \
                 UNION ALL SELECT change_seq FROM content_chunks UNION ALL SELECT change_seq FROM tombstones)",
            )
            .await
            .unwrap();
        assert_eq!(seqs, vec![vec![Some((before + 1).to_string())]]);
        // The importing store can be exported onward: the same rows.
        let onward = b.export_changes(0).await.unwrap();
        assert_eq!(onward.changes.len(), file.changes.len());
        let c = Store::memory().await.unwrap();
        c.import_changes(&onward).await.unwrap();
        assert_same(&a, &c).await;
        // And b keeps working as a store.
        b.put(NewFile::new("/a.txt", "local", "/srv/new", 1).etag("h-b"))
            .await
            .unwrap();
        assert_eq!(b.get("/a.txt").await.unwrap().unwrap().version, 4);
    });
}

/// A scripted history: each step is a change the next file carries.
async fn step(s: &Store, i: usize) {
    let acme = s.with_tenant("acme").unwrap();
    match i {
        0 => {
            s.put(NewFile::new("/p", "local", "/1", 1).etag("e1"))
                .await
                .unwrap();
            s.put(NewFile::new("/q", "local", "/2", 2)).await.unwrap();
            acme.put(NewFile::new("/p", "s3", "b/1", 3)).await.unwrap();
            s.set_metadata("/p", "k", &json!({"a": 1})).await.unwrap();
            s.set_metadata("/p", "drop", &json!(true)).await.unwrap();
            s.add_chunk_ref("c1", 10, "/cas/c1").await.unwrap();
            s.add_chunk_ref("c2", 20, "/cas/c2").await.unwrap();
        }
        1 => {
            // /p and /q swap places: paths change hands within one file.
            s.rename("/p", "/tmp").await.unwrap();
            s.rename("/q", "/p").await.unwrap();
            s.rename("/tmp", "/q").await.unwrap();
            s.delete_metadata("/q", "drop").await.unwrap();
            s.put(NewFile::new("/q", "local", "/1b", 5).etag("e2"))
                .await
                .unwrap();
        }
        2 => {
            // Deleted and re-created at the same path; a chunk collected.
            s.delete("/p").await.unwrap();
            s.put(NewFile::new("/p", "local", "/new", 7)).await.unwrap();
            s.release_chunk_ref("c2", Duration::ZERO).await.unwrap();
            s.remove_chunk("c2").await.unwrap();
            acme.delete("/p").await.unwrap();
            s.rollback("/q", 1).await.unwrap();
        }
        _ => {
            // A removed key and chunk come back.
            s.set_metadata("/q", "drop", &json!("again")).await.unwrap();
            s.add_chunk_ref("c2", 21, "/cas/c2b").await.unwrap();
            s.rename("/q", "/dir/q").await.unwrap();
        }
    }
}

#[test]
fn incremental_files_apply_in_order_exactly_once() {
    pollster::block_on(async {
        let a = Store::memory().await.unwrap();
        let b = Store::memory().await.unwrap();
        let mut files = Vec::new();
        let mut at = 0;
        for i in 0..4 {
            step(&a, i).await;
            let f = ChangeFile::decode(&a.export_changes(at).await.unwrap().encode()).unwrap();
            at = f.changes.through;
            files.push(f);
        }
        // A gap is refused, naming both numbers, and changes nothing.
        let e = b.import_changes(&files[1]).await.unwrap_err();
        match &e {
            Error::ChangeFileGap {
                applied: 0, after, ..
            } => {
                assert_eq!(*after, files[1].changes.after)
            }
            other => panic!("expected a gap, got {other}"),
        }
        assert!(e.to_string().contains("only through change 0"), "{e}");
        assert!(
            e.to_string()
                .contains(&format!("({}, ", files[1].changes.after)),
            "{e}"
        );
        assert_eq!(
            head(&b).await,
            0,
            "a refused file takes no change sequence number"
        );
        for (i, f) in files.iter().enumerate() {
            let r = b.import_changes(f).await.unwrap();
            assert!(!r.skipped, "file {i}");
            let before = rows(&b).await;
            let seq = head(&b).await;
            // Re-applying is a no-op.
            let again = b.import_changes(f).await.unwrap();
            assert!(
                again.skipped && again.change_seq.is_none() && again.previous == f.changes.through
            );
            assert_eq!(rows(&b).await, before);
            assert_eq!(head(&b).await, seq);
        }
        assert_same(&a, &b).await;
        // Every kind of change propagated.
        assert_eq!(b.get("/p").await.unwrap().unwrap().physical_path, "/new");
        assert_eq!(b.get("/dir/q").await.unwrap().unwrap().version, 3);
        assert!(b.get("/q").await.unwrap().is_none());
        assert!(
            b.with_tenant("acme")
                .unwrap()
                .get("/p")
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            b.list_metadata("/dir/q").await.unwrap().get("drop"),
            Some(&json!("again"))
        );
        assert_eq!(
            b.get_chunk("c2").await.unwrap().unwrap().storage_path,
            "/cas/c2b"
        );
        // A file covering several steps at once, into a fresh store, gives the same.
        let c = Store::memory().await.unwrap();
        c.import_changes(&files[0]).await.unwrap();
        c.import_changes(&a.export_changes(files[0].changes.through).await.unwrap())
            .await
            .unwrap();
        assert_same(&a, &c).await;
        // An older, overlapping file after a newer one is skipped.
        assert!(
            c.import_changes(&a.export_changes(0).await.unwrap())
                .await
                .unwrap()
                .skipped
        );
    });
}

#[test]
fn removals_propagate_after_an_earlier_import() {
    pollster::block_on(async {
        let a = Store::memory().await.unwrap();
        let b = Store::memory().await.unwrap();
        step(&a, 0).await;
        b.import_changes(&a.export_changes(0).await.unwrap())
            .await
            .unwrap();
        let at = head(&a).await;
        a.delete_metadata("/p", "drop").await.unwrap();
        a.release_chunk_ref("c2", Duration::ZERO).await.unwrap();
        a.remove_chunk("c2").await.unwrap();
        a.delete("/q").await.unwrap();
        a.rename("/p", "/q").await.unwrap();
        let f = a.export_changes(at).await.unwrap();
        assert_eq!(f.changes.tombstones.len(), 2);
        b.import_changes(&f).await.unwrap();
        assert!(b.get_chunk("c2").await.unwrap().is_none());
        assert!(b.get("/p").await.unwrap().is_none());
        assert_eq!(b.list_metadata("/q").await.unwrap().len(), 1);
        assert_same(&a, &b).await;
    });
}

#[test]
fn own_source_is_refused_and_colliding_paths_make_conflict_copies() {
    pollster::block_on(async {
        // A store whose own /q is made before the change file's /q.
        let early = Store::memory().await.unwrap();
        early
            .put(NewFile::new("/q", "local", "/mine", 1))
            .await
            .unwrap();
        let a = Store::memory().await.unwrap();
        step(&a, 0).await;
        let file = a.export_changes(0).await.unwrap();
        let e = a.import_changes(&file).await.unwrap_err();
        assert!(matches!(e, Error::InvalidChangeFile { .. }), "{e}");
        assert!(
            e.to_string().contains("changes of this store itself"),
            "{e}"
        );

        // Two files want /q, and nothing says which reached the other
        // store first: the one made first keeps the path, the other is
        // kept beside it as a conflict copy, which the import reports,
        // named after the change file's source (as PostgreSQL names it)
        // whichever file it is.
        let the_copy = |r: nexus_core::ImportReport| {
            assert_eq!(r.conflicts.len(), 1, "{r:?}");
            let c = r.conflicts.into_iter().next().unwrap();
            assert_eq!(
                (c.path.as_str(), c.source.as_str()),
                ("/q", file.source_id.as_str())
            );
            assert!(c.copy.starts_with("/q.sync-conflict-"), "{}", c.copy);
            c
        };
        // Here the store's own /q was made first: it keeps it.
        let c = the_copy(early.import_changes(&file).await.unwrap());
        assert_eq!(
            early.get("/q").await.unwrap().unwrap().physical_path,
            "/mine"
        );
        assert_eq!(
            early.get(&c.copy).await.unwrap().unwrap().physical_path,
            "/2"
        );

        // A store whose own /q is made after the change file's: the
        // incoming file takes the path, and the store's own moves to the copy.
        let b = Store::memory().await.unwrap();
        b.put(NewFile::new("/z", "local", "/mine", 1))
            .await
            .unwrap();
        b.put(NewFile::new("/q", "local", "/mine", 1))
            .await
            .unwrap();
        let mine = b.get("/q").await.unwrap().unwrap();
        let c = the_copy(b.import_changes(&file).await.unwrap());
        assert_eq!(b.get("/q").await.unwrap().unwrap().physical_path, "/2");
        let copy = b.get(&c.copy).await.unwrap().unwrap();
        assert_eq!(
            (copy.physical_path.as_str(), &copy.path_id),
            ("/mine", &mine.path_id)
        );
        assert_eq!(c.path_id, mine.path_id);
        let mark = b
            .get_metadata(&c.copy, nexus_core::CONFLICT_KEY)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(mark["path"], "/q");
        assert_eq!(mark["source"], file.source_id.as_str());
        assert_eq!(b.get("/z").await.unwrap().unwrap().physical_path, "/mine");
        // Applied once: the same file again is skipped.
        assert!(b.import_changes(&file).await.unwrap().skipped);
    });
}

fn target(url: &str) -> PgUrl {
    PgUrl::parse(url).unwrap()
}

async fn assert_pg_equal(store: &Store, url: &str) {
    let v = Replicator::new(store.clone(), target(url))
        .verify()
        .await
        .unwrap();
    assert!(
        v.equal(),
        "store and PostgreSQL differ: {:?}",
        v.differences()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_files_into_postgres_equal_the_source() {
    let db = pg::database("change_files_pg").await;
    let a = Store::memory().await.unwrap();
    populate(&a).await;
    let opts = SyncOptions::default();
    let full = a.export_changes(0).await.unwrap();
    let r = apply_change_file(&target(&db.url), full.clone(), &opts)
        .await
        .unwrap();
    assert_eq!(r.mode, SyncMode::Incremental);
    assert_eq!((r.from_seq, r.to_seq), (0, full.changes.through));
    assert_eq!(r.rows() as usize, full.changes.len());
    assert_pg_equal(&a, &db.url).await;
    // Again: nothing to do.
    let again = apply_change_file(&target(&db.url), full.clone(), &opts)
        .await
        .unwrap();
    assert_eq!(again.mode, SyncMode::UpToDate);
    assert_eq!(again.rows(), 0);

    // Incremental files, in order; a gap is refused.
    let mut at = full.changes.through;
    let mut pending = Vec::new();
    for i in 0..4 {
        step(&a, i).await;
        let f = a.export_changes(at).await.unwrap();
        at = f.changes.through;
        pending.push(f);
    }
    let e = apply_change_file(&target(&db.url), pending[1].clone(), &opts)
        .await
        .unwrap_err();
    assert!(
        matches!(e, nexus_sync::Error::Store(Error::ChangeFileGap { applied, .. }) if applied == full.changes.through),
        "{e}"
    );
    for f in &pending {
        apply_change_file(&target(&db.url), f.clone(), &opts)
            .await
            .unwrap();
    }
    assert_pg_equal(&a, &db.url).await;
    let client = connect(&db.url).await;
    let row = client
        .query_one("SELECT watermark, via FROM nexus_sync_state", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), head(&a).await);
    assert_eq!(row.get::<_, String>(1), "change_file");

    // Mixing: a sync run continues where the files left off, and a later file after it.
    a.put(NewFile::new("/after-sync", "local", "/s", 1))
        .await
        .unwrap();
    let rep = Replicator::new(a.clone(), target(&db.url));
    let s = rep.sync().await.unwrap();
    assert_eq!((s.mode, s.from_seq), (SyncMode::Incremental, at));
    let at = s.to_seq;
    a.set_metadata("/after-sync", "k", &json!(1)).await.unwrap();
    a.delete("/p").await.unwrap();
    let f = a.export_changes(at).await.unwrap();
    apply_change_file(&target(&db.url), f.clone(), &opts)
        .await
        .unwrap();
    assert_pg_equal(&a, &db.url).await;
    assert_eq!(rep.sync().await.unwrap().mode, SyncMode::UpToDate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_then_change_file_and_collisions_in_postgres() {
    let db = pg::database("change_files_pg_mix").await;
    let a = Store::memory().await.unwrap();
    step(&a, 0).await;
    let rep = Replicator::new(a.clone(), target(&db.url));
    assert_eq!(rep.sync().await.unwrap().mode, SyncMode::Full);
    let at = head(&a).await;
    step(&a, 1).await;
    step(&a, 2).await;
    a.put(NewFile::new("/fresh", "local", "/f", 1))
        .await
        .unwrap();
    // A live row the source does not know, made before the source's
    // /fresh, holds a path the file brings.
    let client = connect(&db.url).await;
    client
        .execute(
            "INSERT INTO file_paths (path_id, tenant_id, virtual_path, backend_id, physical_path, size_bytes, \
             created_at, updated_at, change_seq) VALUES (gen_random_uuid(), 'default', '/fresh', 'x', 'x', 0, \
             now() - interval '1 day', now() - interval '1 day', 0)",
            &[],
        )
        .await
        .unwrap();
    // The file's live /fresh, made later, loses the path to the target's:
    // it is kept as a conflict copy, and the rest of the file applies.
    let f = a.export_changes(at).await.unwrap();
    let r = apply_change_file(&target(&db.url), f.clone(), &SyncOptions::default())
        .await
        .unwrap();
    assert_eq!((r.from_seq, r.to_seq), (at, head(&a).await));
    assert_eq!(r.conflicts.len(), 1, "{:?}", r.conflicts);
    let c = &r.conflicts[0];
    assert_eq!(c.path, "/fresh");
    assert!(c.copy.starts_with("/fresh.sync-conflict-"), "{}", c.copy);
    let held: Vec<(String, String)> = client
        .query(
            "SELECT virtual_path, backend_id FROM file_paths WHERE virtual_path LIKE '/fresh%' \
             AND deleted_at IS NULL ORDER BY virtual_path",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        held,
        vec![
            ("/fresh".to_string(), "x".to_string()),
            (c.copy.clone(), "local".to_string())
        ]
    );
    let w: i64 = client
        .query_one("SELECT watermark FROM nexus_sync_state", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(w, head(&a).await, "the rest applied");
}

/// A change file whose file changed in PostgreSQL meanwhile (both made a
/// new version of it) follows the conflict rule as a push does: the
/// database keeps its version, the file's version is kept in a conflict
/// copy (no raw unique violation), and the rest applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_file_against_a_changed_file_makes_a_copy() {
    let db = pg::database("change_files_both_changed").await;
    let a = Store::memory().await.unwrap();
    a.put(NewFile::new("/f", "local", "/a1", 1).etag("v1"))
        .await
        .unwrap();
    Replicator::new(a.clone(), target(&db.url))
        .sync()
        .await
        .unwrap();
    // B got /f from A's change file (as a browser would), then both change it.
    let b = Store::memory().await.unwrap();
    b.import_changes(&a.export_changes(0).await.unwrap())
        .await
        .unwrap();
    a.put(NewFile::new("/f", "local", "/a2", 2).etag("a2"))
        .await
        .unwrap();
    Replicator::new(a.clone(), target(&db.url))
        .sync()
        .await
        .unwrap();
    b.put(NewFile::new("/f", "local", "/b2", 3).etag("b2"))
        .await
        .unwrap();
    b.put(NewFile::new("/g", "local", "/g", 3)).await.unwrap();
    let r = apply_change_file(
        &target(&db.url),
        b.export_changes(0).await.unwrap(),
        &SyncOptions::default(),
    )
    .await
    .unwrap();
    let client = connect(&db.url).await;
    assert_eq!(r.conflicts.len(), 1, "{:?}", r.conflicts);
    assert_eq!(r.conflicts[0].path, "/f");
    let live: Vec<(String, Option<String>)> = client
        .query(
            "SELECT virtual_path, content_hash FROM file_paths WHERE deleted_at IS NULL ORDER BY virtual_path",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(live.len(), 3, "{live:?}");
    assert_eq!(live[0], ("/f".to_string(), Some("a2".to_string())));
    assert!(
        live[1].0.starts_with("/f.sync-conflict-") && live[1].1.as_deref() == Some("b2"),
        "{live:?}"
    );
    assert_eq!(live[2].0, "/g");
}

/// Both stores make new versions of one file, then one imports the other's
/// change file: the conflict rule, not a refusal. This store made its new
/// version first, so its file keeps its path and versions; the incoming
/// one is a conflict copy beside it (reason `content`) with its new
/// versions and its metadata, which also applies to the file; the rest of
/// the file applies. (The other way round:
/// `crossing_change_files_keep_the_side_made_first_in_a_file_both_changed`.)
#[test]
fn new_versions_on_both_sides_make_a_content_copy() {
    pollster::block_on(async {
        let a = Store::memory().await.unwrap();
        a.put(NewFile::new("/f", "local", "/a1", 1).etag("v1"))
            .await
            .unwrap();
        let b = Store::memory().await.unwrap();
        b.import_changes(&a.export_changes(0).await.unwrap())
            .await
            .unwrap();
        let since = head(&a).await;
        b.put(NewFile::new("/f", "local", "/b2", 2).etag("b2"))
            .await
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        a.put(NewFile::new("/f", "local", "/a2", 2).etag("a2"))
            .await
            .unwrap();
        a.put(NewFile::new("/f", "local", "/a3", 3).etag("a3"))
            .await
            .unwrap();
        a.set_metadata("/f", "by", &json!("a")).await.unwrap();
        a.put(NewFile::new("/other", "local", "/o", 1))
            .await
            .unwrap();

        let r = b
            .import_changes(&a.export_changes(since).await.unwrap())
            .await
            .unwrap();
        assert_eq!(r.conflicts.len(), 1, "{r:?}");
        let c = &r.conflicts[0];
        assert_eq!(c.path, "/f");
        assert!(c.copy.starts_with("/f.sync-conflict-"), "{}", c.copy);
        let mine = b.get("/f").await.unwrap().unwrap();
        assert_eq!((mine.etag.as_deref(), mine.version), (Some("b2"), 2));
        let copy = b.get(&c.copy).await.unwrap().unwrap();
        assert_eq!((copy.etag.as_deref(), copy.version), (Some("a3"), 3));
        assert_ne!(copy.path_id, mine.path_id);
        let etags = |v: Vec<nexus_core::VersionInfo>| -> Vec<Option<String>> {
            v.into_iter().map(|v| v.etag).collect()
        };
        let copied = etags(b.list_versions(&c.copy).await.unwrap());
        assert!(copied.contains(&Some("a2".into())), "{copied:?}");
        let kept = etags(b.list_versions("/f").await.unwrap());
        assert!(
            kept.contains(&Some("v1".into())) && kept.contains(&Some("b2".into())),
            "{kept:?}"
        );
        let mark = b
            .get_metadata(&c.copy, nexus_core::CONFLICT_KEY)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(mark["reason"], "content");
        assert_eq!(
            b.get_metadata(&c.copy, "by").await.unwrap(),
            Some(json!("a"))
        );
        assert_eq!(b.get_metadata("/f", "by").await.unwrap(), Some(json!("a")));
        assert!(b.get("/other").await.unwrap().is_some());
    });
}

/// A change file's deletion, and its rename, of files this store gave new
/// versions meanwhile: modify wins over delete (the file stays), the rename
/// follows the file (its new version moves to the new path), nothing is a
/// conflict copy, and once each store imported the other's changes both
/// hold the same rows.
#[test]
fn a_new_version_here_outlives_a_deletion_and_follows_a_rename() {
    pollster::block_on(async {
        let a = Store::memory().await.unwrap();
        a.put(NewFile::new("/f", "local", "/f1", 1).etag("f1"))
            .await
            .unwrap();
        a.put(NewFile::new("/g", "local", "/g1", 1).etag("g1"))
            .await
            .unwrap();
        let b = Store::memory().await.unwrap();
        b.import_changes(&a.export_changes(0).await.unwrap())
            .await
            .unwrap();
        let a_since = head(&a).await;
        a.delete("/f").await.unwrap();
        assert_eq!(a.rename("/g", "/h").await.unwrap(), 1);
        b.put(NewFile::new("/f", "local", "/f2", 2).etag("f2"))
            .await
            .unwrap();
        b.put(NewFile::new("/g", "local", "/g2", 2).etag("g2"))
            .await
            .unwrap();

        let r = b
            .import_changes(&a.export_changes(a_since).await.unwrap())
            .await
            .unwrap();
        assert!(r.conflicts.is_empty(), "{r:?}");
        let f = b
            .get("/f")
            .await
            .unwrap()
            .expect("/f outlives the deletion");
        assert_eq!((f.etag.as_deref(), f.version), (Some("f2"), 2));
        assert_eq!(b.get("/g").await.unwrap(), None);
        let h = b
            .get("/h")
            .await
            .unwrap()
            .expect("the rename follows the file");
        assert_eq!((h.etag.as_deref(), h.version), (Some("g2"), 2));

        // Back the other way: a takes b's new versions where b settled them.
        let r = a
            .import_changes(&b.export_changes(0).await.unwrap())
            .await
            .unwrap();
        assert!(r.conflicts.is_empty(), "{r:?}");
        assert_same(&a, &b).await;
    });
}

/// Versions of a file that take version numbers other versions hold here,
/// without the file's row (a cut or doctored change file): the conflict
/// rule has no file to copy. An embedded store's import and PostgreSQL's
/// apply refuse them with one error (`Conflict`, naming the path, the
/// arriving version and its source), and apply nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_without_their_file_are_refused_alike_on_both_sides() {
    let db = pg::database("change_files_version_clash").await;
    let a = Store::memory().await.unwrap();
    a.put(NewFile::new("/f", "local", "/a1", 1).etag("v1"))
        .await
        .unwrap();
    let first = a.export_changes(0).await.unwrap();
    Replicator::new(a.clone(), target(&db.url))
        .sync()
        .await
        .unwrap();
    // B has /f from A, gives it a version 2 of its own and syncs it.
    let b = Store::memory().await.unwrap();
    b.import_changes(&first).await.unwrap();
    b.put(NewFile::new("/f", "local", "/b2", 2).etag("b2"))
        .await
        .unwrap();
    Replicator::new(b.clone(), target(&db.url))
        .sync()
        .await
        .unwrap();
    // A's own version 2, without the row of /f.
    a.put(NewFile::new("/f", "local", "/a2", 3).etag("a2"))
        .await
        .unwrap();
    let mut cut = a.export_changes(first.changes.through).await.unwrap();
    assert_eq!(cut.changes.files.len(), 1);
    assert_eq!(cut.changes.versions.len(), 1);
    let arriving = cut.changes.versions[0].version_id.clone();
    cut.changes.files.clear();

    let expected = format!("version 2 to be {arriving} (from source {})", cut.source_id);
    let before = records(&b).await;
    match b.import_changes(&cut).await {
        Err(Error::Conflict {
            path,
            expected: e,
            actual,
        }) => {
            assert_eq!(path, "/f");
            assert_eq!(e, expected);
            assert!(actual.contains("this store's own version"), "{actual}");
        }
        other => panic!("expected a Conflict from the import, got {other:?}"),
    }
    assert_eq!(records(&b).await, before, "the import applied nothing");

    let count = || pg::count(&db.url, "SELECT count(*) FROM version_history");
    let versions = count().await;
    match apply_change_file(&target(&db.url), cut, &SyncOptions::default()).await {
        Err(nexus_sync::Error::Store(Error::Conflict {
            path,
            expected: e,
            actual,
        })) => {
            assert_eq!(path, "/f");
            assert_eq!(e, expected);
            assert!(actual.contains("the target's version"), "{actual}");
        }
        other => panic!("expected a Conflict from PostgreSQL's apply, got {other:?}"),
    }
    assert_eq!(count().await, versions, "PostgreSQL applied nothing");
    let watermarks = pg::count(&db.url, "SELECT count(*) FROM nexus_sync_state").await;
    assert_eq!(watermarks, 2, "only A's and B's syncs recorded");
}
