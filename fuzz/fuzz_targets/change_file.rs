#![no_main]
//! Any bytes as a change file: a valid file or `InvalidChangeFile`, never a
//! panic; whatever decodes re-encodes to a file that decodes to the same.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match nexus_core::ChangeFile::decode(data) {
        Ok(file) => {
            assert!(file.validate().is_ok());
            let again = nexus_core::ChangeFile::decode(&file.encode()).expect("re-encoded file decodes");
            assert_eq!(again, file);
        }
        Err(nexus_core::Error::InvalidChangeFile { .. }) => {}
        Err(e) => panic!("unexpected error: {e}"),
    }
});
