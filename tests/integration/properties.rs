//! Property tests on hostile input: no panic, a typed error, store unchanged.

use nexus_core::{Error, ErrorKind, ListOptions, NewFile, Store, validate_path};
use proptest::prelude::*;
use serde_json::Value;

/// The path rules, written out independently of the implementation.
fn spec_valid(p: &str) -> bool {
    !p.is_empty()
        && p.starts_with('/')
        && p.len() <= 4096
        && !p.contains('\0')
        && p != "/"
        && p[1..]
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e12f64..1e12)
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid path of 1 to 4 segments of arbitrary characters but `/` and NUL.
fn valid_path() -> impl Strategy<Value = String> {
    prop::collection::vec("[^/\u{0}]{1,12}", 1..4)
        .prop_filter("no . or .. segments", |segs| {
            segs.iter().all(|s| s != "." && s != "..")
        })
        .prop_map(|segs| format!("/{}", segs.join("/")))
}

fn store() -> Store {
    pollster::block_on(Store::memory()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn path_validation_matches_the_rules(p in prop_oneof![".{0,40}", "(/[a-z./]{0,4}){0,5}", valid_path()]) {
        let ok = validate_path(&p).is_ok();
        prop_assert_eq!(ok, spec_valid(&p), "{:?}", p);
        if let Err(e) = validate_path(&p) {
            let is_invalid_path = matches!(e, Error::InvalidPath { .. });
            prop_assert!(is_invalid_path, "{}", e);
        }
    }

    #[test]
    fn hostile_paths_never_change_the_store(p in ".{0,60}") {
        let s = store();
        pollster::block_on(async {
            s.put(NewFile::new("/keep", "local", "/k", 1)).await.unwrap();
            let before = s.list("").await.unwrap();
            let results = [
                s.put(NewFile::new(p.clone(), "local", "/x", 1)).await.map(drop),
                s.delete(&p).await.map(drop),
                s.rename(&p, "/dest").await.map(drop),
                s.set_metadata(&p, "k", &Value::Null).await,
            ];
            for r in results {
                if let Err(e) = r {
                    let typed = matches!(e.kind(), ErrorKind::InvalidInput | ErrorKind::NotFound);
                    prop_assert!(typed, "{}", e);
                }
            }
            if !spec_valid(&p) {
                prop_assert_eq!(s.list("").await.unwrap(), before);
            }
            Ok(())
        })?;
    }

    #[test]
    fn cursors_decode_or_are_rejected(c in prop_oneof![".{0,80}", "[A-Za-z0-9_-]{0,80}"]) {
        let s = store();
        let r = pollster::block_on(s.list_page(&ListOptions::prefix("/").cursor(Some(c.clone()))));
        if let Err(e) = r {
            let is_invalid_cursor = matches!(e, Error::InvalidCursor { .. });
            prop_assert!(is_invalid_cursor, "{:?}: {}", c, e);
        }
    }

    #[test]
    fn any_json_round_trips_and_is_found(v in json_value()) {
        let s = store();
        pollster::block_on(async {
            s.put(NewFile::new("/j", "local", "/j", 1)).await.unwrap();
            s.set_metadata("/j", "v", &v).await.unwrap();
            let back = s.get_metadata("/j", "v").await.unwrap().unwrap();
            prop_assert_eq!(&back, &v);
            let found = s.find_by_metadata("v", Some(&v)).await.unwrap();
            prop_assert_eq!(found.len(), 1);
            Ok(())
        })?;
    }

    #[test]
    fn arbitrary_valid_paths_round_trip_in_byte_order(paths in prop::collection::btree_set(valid_path(), 1..12)) {
        let s = store();
        pollster::block_on(async {
            let files: Vec<NewFile> = paths.iter().map(|p| NewFile::new(p.clone(), "local", "/x", 1)).collect();
            s.put_batch(&files).await.unwrap();
            for p in &paths {
                prop_assert_eq!(s.get(p).await.unwrap().map(|r| r.path), Some(p.clone()));
            }
            let listed: Vec<String> = s.list("").await.unwrap().into_iter().map(|r| r.path).collect();
            let mut expected: Vec<String> = paths.iter().cloned().collect();
            expected.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            prop_assert_eq!(listed, expected.clone());
            // Every prefix of every path lists exactly the paths that start with it.
            for p in &paths {
                let prefix: String = p.chars().take(p.chars().count() / 2 + 1).collect();
                let got: Vec<String> = s.list(&prefix).await.unwrap().into_iter().map(|r| r.path).collect();
                let want: Vec<String> = expected.iter().filter(|q| q.starts_with(&prefix)).cloned().collect();
                prop_assert_eq!(got, want, "prefix {:?}", prefix);
            }
            Ok(())
        })?;
    }
}
