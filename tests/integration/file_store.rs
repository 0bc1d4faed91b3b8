//! What only a store in a file has: persistence, sharing, real SQLite compatibility.

use nexus_core::{NewFile, Store};
use serde_json::json;

use crate::common::Fixture;

#[test]
fn init_creates_database_file_and_folders() {
    pollster::block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deep/er/nexus.db");
        let s = Store::open(&path).await.unwrap();
        assert!(path.exists());
        assert_eq!(s.location(), path.to_str().unwrap());
    });
}

#[test]
fn data_survives_reopen() {
    pollster::block_on(async {
        let f = Fixture::file().await;
        let path = f.db_path();
        f.put(NewFile::new("/p.txt", "local", "/d/p", 9).etag("e"))
            .await
            .unwrap();
        f.set_metadata("/p.txt", "k", &json!({"a": 1}))
            .await
            .unwrap();
        let before = f.get("/p.txt").await.unwrap().unwrap();
        drop(f.store);
        let s = Store::open(&path).await.unwrap();
        assert_eq!(s.get("/p.txt").await.unwrap().unwrap(), before);
        assert_eq!(
            s.get_metadata("/p.txt", "k").await.unwrap(),
            Some(json!({"a": 1}))
        );
        drop(f.dir);
    });
}

/// Every connection of a store in a file syncs each commit
/// (`synchronous=FULL`, 2): an acknowledged write is on disk.
#[test]
fn commits_are_synced() {
    pollster::block_on(async {
        let f = Fixture::file().await;
        let rows = f.debug_query("PRAGMA synchronous").await.unwrap();
        assert_eq!(rows, vec![vec![Some("2".to_string())]]);
    });
}

/// Python: test_concurrent_access: a second store on the same file sees the first's put.
#[test]
fn second_handle_on_same_file_sees_writes() {
    pollster::block_on(async {
        let f = Fixture::file().await;
        let second = Store::open(f.db_path()).await.unwrap();
        f.put(NewFile::new("/shared", "local", "/s", 1))
            .await
            .unwrap();
        assert!(second.exists("/shared").await.unwrap());
        second.delete("/shared").await.unwrap();
        assert!(!f.exists("/shared").await.unwrap());
    });
}

#[test]
fn foreign_keys_are_enforced() {
    pollster::block_on(async {
        let f = Fixture::file().await;
        let fk = f.debug_query("PRAGMA foreign_keys").await.unwrap();
        assert_eq!(fk[0][0].as_deref(), Some("1"));
        let err = f
            .debug_query("INSERT INTO file_metadata VALUES ('no-such-path', 'k', '1', 0, 0, 0)")
            .await
            .unwrap_err();
        assert!(
            err.to_string().to_lowercase().contains("foreign key"),
            "{err}"
        );
    });
}

#[test]
fn unique_live_path_is_enforced_by_the_schema() {
    pollster::block_on(async {
        let f = Fixture::file().await;
        f.put(NewFile::new("/u", "local", "/u", 1)).await.unwrap();
        let err = f
            .debug_query(
                "INSERT INTO file_paths (path_id, tenant_id, virtual_path, backend_id, physical_path, size_bytes, \
                 created_at, updated_at, change_seq) VALUES ('x', 'default', '/u', 'l', 'p', 0, 0, 0, 0)",
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("UNIQUE"), "{err}");
        // A deleted row does not block a new live one.
        f.delete("/u").await.unwrap();
        f.put(NewFile::new("/u", "local", "/u", 1)).await.unwrap();
    });
}

/// Real SQLite (rusqlite, bundled C SQLite) opens what the store wrote,
/// finds it intact, and reads the same records.
#[test]
fn real_sqlite_reads_the_file() {
    pollster::block_on(async {
        let f = Fixture::file().await;
        let path = f.db_path();
        let files: Vec<NewFile> = (0..500)
            .map(|i| {
                NewFile::new(
                    format!("/dir{}/f{i:04}", i % 7),
                    "local",
                    format!("/p/{i}"),
                    i,
                )
                .etag(format!("h{i}"))
            })
            .collect();
        f.put_batch(&files).await.unwrap();
        f.set_metadata("/dir0/f0000", "tags", &json!(["a", "b"]))
            .await
            .unwrap();
        f.delete("/dir1/f0001").await.unwrap();
        let ours: Vec<String> = f
            .list("/dir3/")
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.path)
            .collect();
        drop(f.store);

        let conn = rusqlite::Connection::open(&path).unwrap();
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        let live: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM file_paths WHERE deleted_at IS NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(live, 499);
        let mut stmt = conn
            .prepare(
                "SELECT virtual_path FROM file_paths WHERE virtual_path >= '/dir3/' AND virtual_path < '/dir30' \
                 AND deleted_at IS NULL ORDER BY virtual_path",
            )
            .unwrap();
        let theirs: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(theirs, ours);
        let tags: String = conn
            .query_row(
                "SELECT m.value FROM file_metadata m JOIN file_paths p USING (path_id) WHERE p.virtual_path = '/dir0/f0000'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tags, r#"["a","b"]"#);
        drop(f.dir);
    });
}
