//! The operation sequences of the crash-safety test, and their model.
//!
//! The crash writer runs [`WRITERS`] threads at once (so that their writes
//! share group commits); thread `t` applies its own sequence `0, 1, 2, ...`
//! on paths below `/t{t}/`, so each thread's state follows from how many of
//! its operations committed, whatever the interleaving.

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

/// How many threads of the crash writer write at once.
pub const WRITERS: usize = 4;

/// The `i`-th operation of thread `t`.
pub fn op(t: usize, i: u64) -> Op {
    let w = |n: u64| format!("/t{t}/w/{n}");
    match i % 10 {
        0..=5 => Op::Put(w(i), format!("e{i}")),
        6 => Op::Meta(w(i - 1), i as i64),
        7 => Op::Rename(w(i - 2), format!("/t{t}/moved/{}", i - 2)),
        8 => Op::Delete(w(i - 4)),
        _ => Op::Put(w(i - 6), format!("e{i}")),
    }
}

/// Applies operation `i` of thread `t` to the store (one write).
pub async fn apply(store: &Store, t: usize, i: u64) -> nexus_core::Result<()> {
    match op(t, i) {
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

/// Applies operation `i` of thread `t` to the model.
pub fn apply_model(model: &mut Model, t: usize, i: u64) {
    match op(t, i) {
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

/// The state of thread `t`'s paths in model form.
pub async fn observe(store: &Store, t: usize) -> Model {
    let mut out = Model::new();
    for r in store.list(&format!("/t{t}/")).await.unwrap() {
        let k = store
            .get_metadata(&r.path, "k")
            .await
            .unwrap()
            .and_then(|v| v.as_i64());
        out.insert(r.path, (r.etag.unwrap_or_default(), k));
    }
    out
}
