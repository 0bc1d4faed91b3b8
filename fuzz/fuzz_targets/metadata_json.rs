#![no_main]
//! Any text that parses as JSON: its canonical form parses back to the same
//! value and is stable (canonicalizing twice changes nothing).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let canonical = nexus_core::canonical_json(&value);
    let back: serde_json::Value = serde_json::from_str(&canonical).expect("canonical JSON parses");
    assert_eq!(back, value);
    assert_eq!(nexus_core::canonical_json(&back), canonical);
});
