//! The conformance suite in a real browser (headless Chromium through
//! `wasm-bindgen-test-runner`), on the page, against stores persisted in
//! IndexedDB (for browsers without OPFS); and persistence itself.
//! Run: `scripts/test.sh` or
//! `CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner cargo test -p nexus-tests --target wasm32-unknown-unknown --test browser_idb`.

#![cfg(all(target_arch = "wasm32", target_os = "unknown"))]

use std::sync::Arc;

use nexus_core::web::IdbIO;
use nexus_core::{DynStore, ErrorKind, NewFile, Store};
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
    let store = fresh(name).await;
    assert_eq!(store.location(), "indexeddb:persistence");
    nexus_tests::persistence::survives_reopening(store, 1500, || async {
        Store::builder()
            .indexeddb(name)
            .open()
            .await
            .expect("reopens")
    })
    .await;
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

/// A change event comes only once the write it reports is in IndexedDB:
/// the subscriber, polled together with the put, sees the event after the
/// put resolved (which it does once its persist committed), never while
/// the persist is still under way.
#[wasm_bindgen_test]
async fn change_events_wait_until_the_write_is_durable() {
    use std::cell::RefCell;

    let store = fresh("events").await;
    let subscription = store.subscribe().await.unwrap();
    let order = RefCell::new(Vec::new());
    let put = async {
        store
            .put(NewFile::new("/durable.txt", "local", "/durable.txt", 1))
            .await
            .unwrap();
        order.borrow_mut().push("put resolved");
    };
    let event = async {
        let event = subscription.next().await.expect("an event");
        assert_eq!(
            event.paths_of("default").collect::<Vec<_>>(),
            ["/durable.txt"]
        );
        order.borrow_mut().push("event");
    };
    futures_util::future::join(put, event).await;
    assert_eq!(*order.borrow(), ["put resolved", "event"]);
}
