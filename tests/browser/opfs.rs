//! The conformance suite in a real browser (headless Chromium through
//! `wasm-bindgen-test-runner`), in a dedicated Worker, against stores
//! persisted in the Origin Private File System; and persistence itself.
//! Run: `scripts/test.sh` or
//! `CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner cargo test -p nexus-tests --target wasm32-unknown-unknown --test browser_opfs`.

#![cfg(all(target_arch = "wasm32", target_os = "unknown"))]

use std::sync::Arc;

use nexus_core::web::OpfsIO;
use nexus_core::{DynStore, ErrorKind, NewFile, Store};
use wasm_bindgen_test::wasm_bindgen_test;

wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_dedicated_worker);

/// A fresh database per case: its files removed first, in case a previous
/// run of the same profile left them.
async fn fresh(name: &str) -> Store {
    OpfsIO::remove(name).await.expect("no one holds it");
    Store::builder()
        .opfs(name)
        .open()
        .await
        .expect("an OPFS store opens in a worker")
}

async fn opfs(case: &str) -> DynStore {
    Arc::new(fresh(&format!("conformance-{case}")).await)
}

nexus_tests::browser_conformance_tests!(opfs);

/// What a store wrote is there after every handle is dropped (the OPFS files
/// closed) and the database is opened again from its files.
#[wasm_bindgen_test]
async fn data_survives_closing_and_reopening() {
    let name = "persistence";
    let store = fresh(name).await;
    assert_eq!(store.location(), "opfs:persistence");
    nexus_tests::persistence::survives_reopening(store, 300, || async {
        Store::builder().opfs(name).open().await.expect("reopens")
    })
    .await;
}

/// While a database is open, its files cannot be removed; once closed they can,
/// and the next open starts empty.
#[wasm_bindgen_test]
async fn remove_refuses_an_open_database() {
    let name = "removal";
    let store = fresh(name).await;
    store
        .put(NewFile::new("/a", "local", "/a", 1))
        .await
        .unwrap();
    let err = OpfsIO::remove(name).await.expect_err("open databases stay");
    assert_eq!(err.kind(), ErrorKind::Busy, "{err}");
    drop(store);
    OpfsIO::remove(name).await.unwrap();
    let store = Store::builder().opfs(name).open().await.unwrap();
    assert!(store.list("").await.unwrap().is_empty());
}

#[wasm_bindgen_test]
async fn bad_database_names_are_refused() {
    for name in ["", "../x", "a/b", ".hidden", "é"] {
        let err = Store::builder().opfs(name).open().await.expect_err(name);
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{name}: {err}");
    }
}
