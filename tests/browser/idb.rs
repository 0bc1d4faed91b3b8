//! The conformance suite in a real browser (headless Chromium through
//! `wasm-bindgen-test-runner`), on the page, against stores persisted in
//! IndexedDB (for browsers without OPFS); and persistence itself.
//! Run: `scripts/test.sh` or
//! `CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner cargo test -p nexus-tests --target wasm32-unknown-unknown --test browser_idb`.

#![cfg(all(target_arch = "wasm32", target_os = "unknown"))]

use std::sync::Arc;

use nexus_core::web::IdbIO;
use nexus_core::{DynStore, ErrorKind, NewFile, Store};
use serde_json::json;
use wasm_bindgen_test::wasm_bindgen_test;

wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

/// A fresh database per case: removed first, in case a previous run of the
/// same profile left it.
async fn fresh(name: &str) -> Store {
    IdbIO::remove(name).await.expect("no one holds it");
    Store::builder()
        .indexeddb(name)
        .open()
        .await
        .expect("an IndexedDB store opens")
}

async fn indexeddb(case: &str) -> DynStore {
    Arc::new(fresh(&format!("conformance-{case}")).await)
}

nexus_tests::browser_conformance_tests!(indexeddb);

/// What a store wrote is in IndexedDB once each write resolved: after every
/// handle is dropped, the database opened again from IndexedDB holds it
/// all, across checkpoints (enough writes to move the WAL into the file).
#[wasm_bindgen_test]
async fn data_survives_closing_and_reopening() {
    let name = "persistence";
    {
        let store = fresh(name).await;
        assert_eq!(store.location(), "indexeddb:persistence");
        for i in 0..1500 {
            store
                .put(
                    NewFile::new(format!("/docs/{i:04}.txt"), "local", format!("/p/{i}"), i)
                        .etag(format!("h{i}")),
                )
                .await
                .unwrap();
        }
        store
            .put(NewFile::new("/docs/0000.txt", "local", "/p/0", 7).etag("v2"))
            .await
            .unwrap();
        store
            .set_metadata("/docs/0001.txt", "author", &json!({"name": "Ada"}))
            .await
            .unwrap();
        store.delete("/docs/0002.txt").await.unwrap();
    }
    let store = Store::builder()
        .indexeddb(name)
        .open()
        .await
        .expect("reopens");
    assert_eq!(store.list("/docs/").await.unwrap().len(), 1499);
    let first = store.get("/docs/0000.txt").await.unwrap().unwrap();
    assert_eq!((first.size, first.version), (7, 2));
    assert_eq!(
        store
            .get_metadata("/docs/0001.txt", "author")
            .await
            .unwrap(),
        Some(json!({"name": "Ada"}))
    );
    assert!(store.get("/docs/0002.txt").await.unwrap().is_none());
    assert_eq!(store.integrity_check().await.unwrap(), Vec::<String>::new());
}

/// While a database is open, it cannot be removed, nor opened a second time
/// apart from the first (another tab would get `Busy`); once closed it can,
/// and the next open starts empty.
#[wasm_bindgen_test]
async fn remove_refuses_an_open_database() {
    let name = "removal";
    let store = fresh(name).await;
    store
        .put(NewFile::new("/a", "local", "/a", 1))
        .await
        .unwrap();
    let err = IdbIO::remove(name).await.expect_err("open databases stay");
    assert_eq!(err.kind(), ErrorKind::Busy, "{err}");
    let err = IdbIO::open(name).await.expect_err("one opener at a time");
    assert_eq!(err.kind(), ErrorKind::Busy, "{err}");
    drop(store);
    IdbIO::remove(name).await.unwrap();
    let store = Store::builder().indexeddb(name).open().await.unwrap();
    assert!(store.list("").await.unwrap().is_empty());
}

#[wasm_bindgen_test]
async fn bad_database_names_are_refused() {
    for name in ["", "../x", "a/b", ".hidden", "é"] {
        let err = Store::builder()
            .indexeddb(name)
            .open()
            .await
            .expect_err(name);
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{name}: {err}");
    }
}
