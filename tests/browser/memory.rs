//! The conformance suite in a real browser (headless Chromium through
//! `wasm-bindgen-test-runner`), on the main thread, against in-memory stores.
//! Run: `scripts/test.sh` or
//! `CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner cargo test -p nexus-tests --target wasm32-unknown-unknown --test browser_memory`.

#![cfg(all(target_arch = "wasm32", target_os = "unknown"))]

use std::sync::Arc;

use nexus_core::{DynStore, ErrorKind, NewFile, Store};
use wasm_bindgen_test::wasm_bindgen_test;

wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

async fn memory(_case: &str) -> DynStore {
    Arc::new(Store::memory().await.expect("an in-memory store opens"))
}

nexus_tests::browser_conformance_tests!(memory);

/// Outside a dedicated Worker there are no OPFS sync access handles: a named
/// store says so instead of falling back silently.
#[wasm_bindgen_test]
async fn opfs_on_the_main_thread_is_a_clear_error() {
    let err = Store::builder()
        .opfs("main-thread")
        .open()
        .await
        .expect_err("no OPFS on the main thread");
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.to_string().contains("dedicated Worker"), "{err}");
}

/// The engine's clock is JavaScript's: timestamps are near `Date.now()`.
#[wasm_bindgen_test]
async fn timestamps_come_from_the_js_clock() {
    let store = Store::memory().await.unwrap();
    let before = js_sys::Date::now() as i64 * 1000;
    let record = store
        .put(NewFile::new("/t", "local", "/t", 1))
        .await
        .unwrap();
    let after = js_sys::Date::now() as i64 * 1000 + 1000;
    let t = record.created_at.as_micros();
    assert!(before <= t && t <= after, "{before} <= {t} <= {after}");
}
