#![no_main]
//! Any bytes as a path: validation never panics, and what it accepts a store
//! stores and returns unchanged.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    if nexus_core::validate_path(path).is_ok() {
        pollster::block_on(async {
            let s = nexus_core::Store::memory().await.unwrap();
            s.put(nexus_core::NewFile::new(path, "local", "/x", 1)).await.unwrap();
            assert_eq!(s.get(path).await.unwrap().unwrap().path, path);
        });
    }
});
