#![no_main]
//! Any string as a pagination cursor: a page or `InvalidCursor`, never a panic.
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

static STORE: OnceLock<nexus_core::Store> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Ok(cursor) = std::str::from_utf8(data) else { return };
    let s = STORE.get_or_init(|| {
        pollster::block_on(async {
            let s = nexus_core::Store::memory().await.unwrap();
            for p in ["/a/1", "/a/2", "/b"] {
                s.put(nexus_core::NewFile::new(p, "local", "/x", 1)).await.unwrap();
            }
            s
        })
    });
    let opts = nexus_core::ListOptions::prefix("/a/").cursor(Some(cursor.to_string()));
    match pollster::block_on(s.list_page(&opts)) {
        Ok(_) => {}
        Err(nexus_core::Error::InvalidCursor { .. }) => {}
        Err(e) => panic!("unexpected error for cursor {cursor:?}: {e}"),
    }
});
