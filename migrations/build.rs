//! Finds the migration files under `sqlite/` and `postgres/` and generates the
//! list that `src/lib.rs` embeds with `include_str!`, so adding a migration is
//! adding two files. Misnamed or unpaired files stop the build with a message.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

fn main() {
    // Read at run time, not with env!(): cargo may reuse a compiled build
    // script from another checkout of the workspace (hashes are relative to
    // the workspace), whose folder may be gone.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest_dir);
    let mut out = String::new();
    for (dialect, konst) in [("sqlite", "SQLITE"), ("postgres", "POSTGRES")] {
        let dir = root.join(dialect);
        println!("cargo:rerun-if-changed={}", dir.display());
        let mut found: BTreeMap<u32, (String, Option<String>, Option<String>)> = BTreeMap::new();
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
            panic!(
                "reading the migrations of {dialect} in {}: {e}",
                dir.display()
            )
        });
        {
            for entry in entries {
                let path = entry.expect("read migrations dir").path();
                let file = path.file_name().unwrap().to_string_lossy().into_owned();
                let (stem, up) = if let Some(s) = file.strip_suffix(".up.sql") {
                    (s, true)
                } else if let Some(s) = file.strip_suffix(".down.sql") {
                    (s, false)
                } else {
                    panic!(
                        "{dialect}/{file}: migration files are named NNNN_name.up.sql / NNNN_name.down.sql"
                    );
                };
                let (num, name) = stem
                    .split_once('_')
                    .unwrap_or_else(|| panic!("{dialect}/{file}: expected NNNN_name"));
                let version: u32 = num.parse().unwrap_or_else(|_| {
                    panic!("{dialect}/{file}: `{num}` is not a version number")
                });
                assert!(version > 0, "{dialect}/{file}: versions start at 1");
                let slot = found
                    .entry(version)
                    .or_insert_with(|| (name.to_string(), None, None));
                assert_eq!(slot.0, name, "{dialect}: version {version} has two names");
                let abs = path.canonicalize().unwrap().display().to_string();
                if up {
                    slot.1 = Some(abs)
                } else {
                    slot.2 = Some(abs)
                }
            }
        }
        assert!(
            !found.is_empty(),
            "{}: no migrations found (expected NNNN_name.up.sql / .down.sql files)",
            dir.display()
        );
        writeln!(out, "/// Migrations of the {dialect} dialect, ascending.").unwrap();
        writeln!(out, "pub static {konst}: &[Migration] = &[").unwrap();
        for (version, (name, up, down)) in found {
            let up = up.unwrap_or_else(|| panic!("{dialect}: version {version} has no .up.sql"));
            let down =
                down.unwrap_or_else(|| panic!("{dialect}: version {version} has no .down.sql"));
            writeln!(
                out,
                "    Migration {{ version: {version}, name: {name:?}, up: include_str!({up:?}), down: include_str!({down:?}) }},"
            )
            .unwrap();
        }
        writeln!(out, "];").unwrap();
    }
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("embedded.rs");
    std::fs::write(dest, out).unwrap();
}
