//! What a persistent store keeps: its writes, after every handle is dropped
//! and it is opened again. The browser storages (OPFS, IndexedDB) run it.

use std::future::Future;

use nexus_core::{NewFile, Store};
use serde_json::json;

/// Writes `files` files through `first` (then a new version of one,
/// metadata on another, a deletion), drops it, opens the store again with
/// `reopen`, and checks that all of it is there and the file is sound.
/// Enough files take the WAL through checkpoints.
pub async fn survives_reopening<F, Fut>(first: Store, files: u64, reopen: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Store>,
{
    {
        let store = first;
        for i in 0..files {
            store
                .put(
                    NewFile::new(format!("/docs/{i:04}.txt"), "local", format!("/p/{i}"), i)
                        .etag(format!("h{i}")),
                )
                .await
                .unwrap();
        }
        store
            .put(NewFile::new("/docs/0000.txt", "local", "/p/0", 7).etag("v2"))
            .await
            .unwrap();
        store
            .set_metadata("/docs/0001.txt", "author", &json!({"name": "Ada"}))
            .await
            .unwrap();
        store.delete("/docs/0002.txt").await.unwrap();
    }
    let store = reopen().await;
    assert_eq!(store.list("/docs/").await.unwrap().len() as u64, files - 1);
    let first = store.get("/docs/0000.txt").await.unwrap().unwrap();
    assert_eq!((first.size, first.version), (7, 2));
    assert_eq!(
        store
            .get_metadata("/docs/0001.txt", "author")
            .await
            .unwrap(),
        Some(json!({"name": "Ada"}))
    );
    assert!(store.get("/docs/0002.txt").await.unwrap().is_none());
    assert_eq!(store.integrity_check().await.unwrap(), Vec::<String>::new());
}
