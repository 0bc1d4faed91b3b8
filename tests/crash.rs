//! The operation sequence of the crash-safety test, and its model.

use std::collections::BTreeMap;

use nexus_core::{NewFile, Store};
use serde_json::json;

/// Operation `i`: puts, metadata sets, renames, deletes and updates, each on
/// a path an earlier operation created.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Create or update a file with an etag.
    Put(String, String),
    /// Set metadata `k` of a file.
    Meta(String, i64),
    /// Rename a file.
    Rename(String, String),
    /// Delete a file.
    Delete(String),
}

/// The `i`-th operation.
pub fn op(i: u64) -> Op {
    let w = |n: u64| format!("/w/{n}");
    match i % 10 {
        0..=5 => Op::Put(w(i), format!("e{i}")),
        6 => Op::Meta(w(i - 1), i as i64),
        7 => Op::Rename(w(i - 2), format!("/moved/{}", i - 2)),
        8 => Op::Delete(w(i - 4)),
        _ => Op::Put(w(i - 6), format!("e{i}")),
    }
}

/// Applies operation `i` to the store (one transaction).
pub async fn apply(store: &Store, i: u64) -> nexus_core::Result<()> {
    match op(i) {
        Op::Put(p, e) => store
            .put(NewFile::new(p, "local", format!("/blob/{i}"), i).etag(e))
            .await
            .map(drop),
        Op::Meta(p, v) => store.set_metadata(&p, "k", &json!(v)).await,
        Op::Rename(a, b) => store.rename(&a, &b).await.map(drop),
        Op::Delete(p) => store.delete(&p).await.map(drop),
    }
}

/// What the store should hold: path → (etag, metadata `k`).
pub type Model = BTreeMap<String, (String, Option<i64>)>;

/// Applies operation `i` to the model.
pub fn apply_model(model: &mut Model, i: u64) {
    match op(i) {
        Op::Put(p, e) => {
            let meta = model.get(&p).and_then(|v| v.1);
            model.insert(p, (e, meta));
        }
        Op::Meta(p, v) => {
            if let Some(entry) = model.get_mut(&p) {
                entry.1 = Some(v);
            }
        }
        Op::Rename(a, b) => {
            if let Some(v) = model.remove(&a) {
                model.insert(b, v);
            }
        }
        Op::Delete(p) => {
            model.remove(&p);
        }
    }
}

/// The store's state in model form.
pub async fn observe(store: &Store) -> Model {
    let mut out = Model::new();
    for r in store.list("").await.unwrap() {
        let k = store
            .get_metadata(&r.path, "k")
            .await
            .unwrap()
            .and_then(|v| v.as_i64());
        out.insert(r.path, (r.etag.unwrap_or_default(), k));
    }
    out
}
