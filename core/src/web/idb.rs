//! Files kept in memory and persisted in IndexedDB, for browsers without
//! OPFS sync access handles (Firefox private windows, some webviews).
//!
//! IndexedDB is asynchronous and the engine's file calls are synchronous, so
//! the database file and its WAL live in memory (read in whole at open) and
//! the engine writes them there; every 32 KiB chunk written is marked dirty.
//! [`IdbIO::persist`] writes the dirty chunks and the files' lengths in one
//! IndexedDB transaction with `durability: "strict"` and resolves once it
//! has committed: the store calls it after each write and answers the
//! caller only then ([`crate::Store`]), so an acknowledged write is on
//! disk. A transaction is atomic, so what IndexedDB holds is always the
//! files as they were at the start of some persist: a commit is whole or
//! absent (a WAL frame of a transaction not committed then is ignored by
//! recovery, as after a crash of a native store).
//!
//! One database per store (`nexus-metastore:<name>`, object store
//! `chunks`, keys `[file, chunk]` and `["len", file]`; `["lost"]` marks a
//! database the browser discarded as corrupt and made anew, which every
//! open refuses with [`Error::Corrupt`] until it is deleted). While a context has
//! it open it holds the Web Lock `nexus-metastore-idb:<name>`, so another
//! context's open fails with [`Error::Busy`], as with OPFS.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use async_lock::Mutex as AsyncMutex;
use turso_core::io::{FileId, FileSyncType};
use turso_core::{Buffer, Completion, File, IO, LimboError, OpenFlags};
use wasm_bindgen::prelude::*;

use super::{file_names, js_message, js_name, validate_db_name};
use crate::error::{Error, Result};
use crate::lock;

/// Bytes per stored chunk: a whole number of pages, and small enough that
/// Chromium keeps the value inline rather than as a blob file of its own.
const CHUNK: usize = 32 * 1024;

#[wasm_bindgen(inline_js = r#"
const STORE = "chunks";
// Locks held by open databases (name -> release), and the releases under
// way (name -> a promise settled once the lock is free again).
const held = new Map();
const closing = new Map();
const request = (r) => new Promise((ok, fail) => { r.onsuccess = () => ok(r.result); r.onerror = () => fail(r.error); });
const named = (name, message) => Object.assign(new Error(message), { name });

export async function idb_open(name) {
  if (typeof indexedDB === "undefined") throw named("NotSupportedError", "IndexedDB is not available here");
  await closing.get(name);
  // Without Web Locks (outside secure contexts) nothing would keep a second
  // tab from writing the same database: refuse rather than corrupt it.
  if (!globalThis.navigator?.locks) {
    throw named("NotSupportedError", "Web Locks are missing (they exist only in secure contexts: HTTPS or localhost)");
  }
  const granted = await new Promise((ok) => {
    const released = navigator.locks.request(`nexus-metastore-idb:${name}`, { ifAvailable: true }, (lock) => {
      if (!lock) return ok(false);
      return new Promise((release) => {
        held.set(name, () => {
          release();
          const free = () => closing.delete(name);
          closing.set(name, released.then(free, free));
        });
        ok(true);
      });
    });
    released.catch(() => {});
  });
  if (!granted) throw named("BusyError", `database ${name} is open in another tab or worker`);
  try {
    const open = indexedDB.open(`nexus-metastore:${name}`, 1);
    open.onupgradeneeded = (event) => {
      const store = open.result.createObjectStore(STORE);
      // The browser found the database corrupt and made a new, empty one
      // (Chromium: a damaged LevelDB): marked, so that every open refuses
      // it until deleteDatabase, rather than serve it as a new store.
      if (event.dataLoss && event.dataLoss !== "none") {
        store.put(event.dataLossMessage || `the browser reported data loss (${event.dataLoss})`, ["lost"]);
      }
    };
    return await request(open);
  } catch (e) {
    held.get(name)?.();
    held.delete(name);
    throw e;
  }
}

export async function idb_load(db) {
  const store = db.transaction(STORE, "readonly").objectStore(STORE);
  return await Promise.all([request(store.getAllKeys()), request(store.getAll())]);
}

export function idb_write(db, keys, values, deletes) {
  return new Promise((ok, fail) => {
    const tx = db.transaction(STORE, "readwrite", { durability: "strict" });
    tx.oncomplete = () => ok();
    tx.onabort = () => fail(tx.error ?? named("AbortError", "the IndexedDB transaction was aborted"));
    try {
      const store = tx.objectStore(STORE);
      for (let i = 0; i < keys.length; i++) store.put(values[i], keys[i]);
      for (const key of deletes) store.delete(key);
    } catch (e) {
      // None of it, rather than part.
      tx.abort();
      fail(e);
    }
  });
}

export function idb_close(db, name) {
  db.close();
  held.get(name)?.();
  held.delete(name);
}

export function idb_remove(name) {
  if (typeof indexedDB === "undefined") return Promise.reject(named("NotSupportedError", "IndexedDB is not available here"));
  if (held.has(name)) return Promise.reject(named("BusyError", `database ${name} is open`));
  if (closing.has(name)) return closing.get(name).then(() => idb_remove(name));
  const go = () => new Promise((ok, fail) => {
    const r = indexedDB.deleteDatabase(`nexus-metastore:${name}`);
    r.onsuccess = () => ok();
    r.onerror = () => fail(r.error);
    r.onblocked = () => fail(named("BusyError", `database ${name} is open in another tab or worker`));
  });
  if (!globalThis.navigator?.locks) return go();
  return navigator.locks.request(`nexus-metastore-idb:${name}`, { ifAvailable: true }, (lock) =>
    lock ? go() : Promise.reject(named("BusyError", `database ${name} is open in another tab or worker`)));
}
"#)]
extern "C" {
    #[wasm_bindgen(catch)]
    async fn idb_open(name: &str) -> std::result::Result<JsValue, JsValue>;
    #[wasm_bindgen(catch)]
    async fn idb_load(db: &JsValue) -> std::result::Result<JsValue, JsValue>;
    #[wasm_bindgen(catch)]
    async fn idb_write(
        db: &JsValue,
        keys: js_sys::Array,
        values: js_sys::Array,
        deletes: js_sys::Array,
    ) -> std::result::Result<JsValue, JsValue>;
    fn idb_close(db: &JsValue, name: &str);
    #[wasm_bindgen(catch)]
    async fn idb_remove(name: &str) -> std::result::Result<JsValue, JsValue>;
}

thread_local! {
    /// Open IndexedDB connections by slot; `None` once closed.
    static DATABASES: std::cell::RefCell<Vec<Option<JsValue>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// What a failure of IndexedDB is to the store.
fn idb_error(name: &str, action: &'static str, e: &JsValue) -> Error {
    match js_name(e).as_str() {
        "BusyError" => Error::Busy {
            location: format!("indexeddb:{name}"),
            waited: std::time::Duration::ZERO,
        },
        "NotSupportedError" | "SecurityError" | "InvalidStateError" => Error::Unsupported {
            feature: "IndexedDB",
            reason: format!("{action}: {}", js_message(e)),
        },
        _ => Error::engine_message(action, js_message(e)),
    }
}

/// One file: its bytes, the chunks written since the last persist, and how
/// many chunks IndexedDB holds.
#[derive(Default)]
struct FileState {
    bytes: Vec<u8>,
    dirty: BTreeSet<usize>,
    length_dirty: bool,
    stored_chunks: usize,
}

impl FileState {
    fn write(&mut self, pos: usize, data: &[u8]) {
        let end = pos + data.len();
        if end > self.bytes.len() {
            // The zeros between the old end and `pos` are new too.
            let old = self.bytes.len();
            self.dirty.extend(old / CHUNK..=(end - 1) / CHUNK);
            self.bytes.resize(end, 0);
            self.length_dirty = true;
        }
        self.bytes[pos..end].copy_from_slice(data);
        if !data.is_empty() {
            self.dirty.extend(pos / CHUNK..=(end - 1) / CHUNK);
        }
    }

    fn truncate(&mut self, len: usize) {
        if len > self.bytes.len() {
            let old = self.bytes.len();
            self.dirty.extend(old / CHUNK..=(len - 1) / CHUNK);
        }
        if len != self.bytes.len() {
            self.bytes.resize(len, 0);
            self.length_dirty = true;
            if !len.is_multiple_of(CHUNK) {
                self.dirty.insert(len / CHUNK);
            }
        }
    }
}

struct IdbFile {
    index: u32,
    state: Mutex<FileState>,
}

impl File for IdbFile {
    fn lock_file(&self, _exclusive: bool) -> turso_core::Result<()> {
        // The Web Lock taken at open keeps other contexts out.
        Ok(())
    }
    fn unlock_file(&self) -> turso_core::Result<()> {
        Ok(())
    }

    fn pread(&self, pos: u64, c: Completion) -> turso_core::Result<Completion> {
        let state = lock(&self.state);
        let buf = c.as_read().buf();
        let out = buf.as_mut_slice();
        // A read past the end reads nothing (as on OPFS).
        let start = (pos as usize).min(state.bytes.len());
        let n = (state.bytes.len() - start).min(out.len());
        out[..n].copy_from_slice(&state.bytes[start..start + n]);
        drop(state);
        c.complete(n as i32);
        Ok(c)
    }

    fn pwrite(
        &self,
        pos: u64,
        buffer: Arc<Buffer>,
        c: Completion,
    ) -> turso_core::Result<Completion> {
        lock(&self.state).write(pos as usize, buffer.as_slice());
        c.complete(buffer.len() as i32);
        Ok(c)
    }

    fn pwritev(
        &self,
        pos: u64,
        buffers: Vec<Arc<Buffer>>,
        c: Completion,
    ) -> turso_core::Result<Completion> {
        let mut state = lock(&self.state);
        let mut at = pos as usize;
        for b in &buffers {
            state.write(at, b.as_slice());
            at += b.len();
        }
        drop(state);
        c.complete((at - pos as usize) as i32);
        Ok(c)
    }

    fn sync(&self, c: Completion, _sync_type: FileSyncType) -> turso_core::Result<Completion> {
        // Durability comes from `IdbIO::persist`, which the store awaits
        // after each write.
        c.complete(0);
        Ok(c)
    }

    fn size(&self) -> turso_core::Result<u64> {
        Ok(lock(&self.state).bytes.len() as u64)
    }

    fn truncate(&self, len: u64, c: Completion) -> turso_core::Result<Completion> {
        lock(&self.state).truncate(len as usize);
        c.complete(0);
        Ok(c)
    }
}

/// What one persist took from the files: on drop, the chunk counts stored
/// when its transaction committed, else the dirty marks back.
struct Taken<'a> {
    items: Vec<(&'a IdbFile, BTreeSet<usize>, bool, usize)>,
    committed: bool,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        for (file, dirty, length_dirty, chunks) in self.items.drain(..) {
            let mut state = lock(&file.state);
            if self.committed {
                state.stored_chunks = chunks;
            } else {
                state.dirty.extend(dirty);
                state.length_dirty |= length_dirty;
            }
        }
    }
}

/// A database's files in memory, persisted in IndexedDB (see the module).
pub struct IdbIO {
    name: String,
    slot: usize,
    files: HashMap<String, Arc<IdbFile>>,
    /// One persist at a time.
    persisting: AsyncMutex<()>,
}

impl std::fmt::Debug for IdbIO {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdbIO").field("name", &self.name).finish()
    }
}

fn chunk_key(file: u32, chunk: usize) -> JsValue {
    js_sys::Array::of2(&JsValue::from(file), &JsValue::from(chunk as f64)).into()
}

fn length_key(file: u32) -> JsValue {
    js_sys::Array::of2(&JsValue::from("len"), &JsValue::from(file)).into()
}

impl IdbIO {
    /// Opens (creating if needed) database `name` in IndexedDB and reads its
    /// files into memory. Fails with [`Error::Busy`] while another context
    /// has it open, and with [`Error::Unsupported`] where IndexedDB is
    /// missing.
    pub async fn open(name: &str) -> Result<IdbIO> {
        validate_db_name(name)?;
        let db = idb_open(name)
            .await
            .map_err(|e| idb_error(name, "opening the IndexedDB database", &e))?;
        let slot = DATABASES.with(|d| {
            let mut d = d.borrow_mut();
            d.push(Some(db.clone()));
            d.len() - 1
        });
        let mut io = IdbIO {
            name: name.to_string(),
            slot,
            files: HashMap::new(),
            persisting: AsyncMutex::new(()),
        };
        let mut states = [FileState::default(), FileState::default()];
        let loaded = idb_load(&db)
            .await
            .map_err(|e| idb_error(name, "reading the IndexedDB database", &e))?;
        let loaded: js_sys::Array = loaded.unchecked_into();
        let keys: js_sys::Array = loaded.get(0).unchecked_into();
        let values: js_sys::Array = loaded.get(1).unchecked_into();
        let mut chunks: Vec<(u32, usize, Vec<u8>)> = Vec::new();
        for i in 0..keys.length() {
            let key: js_sys::Array = keys.get(i).unchecked_into();
            let value = values.get(i);
            let (first, second) = (key.get(0), key.get(1));
            if first.as_string().as_deref() == Some("lost") {
                return Err(Error::Corrupt {
                    table: "IndexedDB",
                    detail: format!(
                        "the browser found database {name:?} damaged and discarded it ({}): what it \
                         held is gone; deleteDatabase({name:?}) to start again",
                        value.as_string().unwrap_or_default()
                    ),
                });
            }
            if first.as_string().as_deref() == Some("len") {
                let file = second.as_f64().unwrap_or(-1.0) as usize;
                if let (Some(state), Some(len)) = (states.get_mut(file), value.as_f64()) {
                    state.bytes.resize(len as usize, 0);
                }
            } else if let (Some(file), Some(chunk)) = (first.as_f64(), second.as_f64()) {
                let bytes = js_sys::Uint8Array::new(&value).to_vec();
                chunks.push((file as u32, chunk as usize, bytes));
            }
        }
        for (file, chunk, bytes) in chunks {
            let Some(state) = states.get_mut(file as usize) else {
                continue;
            };
            state.stored_chunks = state.stored_chunks.max(chunk + 1);
            let start = chunk * CHUNK;
            if start >= state.bytes.len() {
                continue;
            }
            let n = bytes.len().min(state.bytes.len() - start);
            state.bytes[start..start + n].copy_from_slice(&bytes[..n]);
        }
        for (index, (path, state)) in file_names(name).into_iter().zip(states).enumerate() {
            io.files.insert(
                path,
                Arc::new(IdbFile {
                    index: index as u32,
                    state: Mutex::new(state),
                }),
            );
        }
        Ok(io)
    }

    /// Writes what changed since the last persist to IndexedDB, in one
    /// transaction; resolves once it committed. A persist that fails keeps
    /// its changes for the next one.
    pub async fn persist(&self) -> Result<()> {
        self.persist_covering(|| ()).await.1
    }

    /// [`IdbIO::persist`], running `at_start` once this persist's turn has
    /// come (persists take turns), before it takes what changed: whatever
    /// was committed when `at_start` ran is durable once this persist
    /// succeeds. Returns what `at_start` returned, and the persist's result.
    pub async fn persist_covering<T>(&self, at_start: impl FnOnce() -> T) -> (T, Result<()>) {
        let _turn = self.persisting.lock().await;
        let covered = at_start();
        (covered, self.persist_turn().await)
    }

    async fn persist_turn(&self) -> Result<()> {
        let (keys, values, deletes) = (
            js_sys::Array::new(),
            js_sys::Array::new(),
            js_sys::Array::new(),
        );
        // What was taken, to put back if the transaction fails.
        let mut taken: Vec<(&IdbFile, BTreeSet<usize>, bool, usize)> = Vec::new();
        for file in self.files.values() {
            let mut state = lock(&file.state);
            let chunks = state.bytes.len().div_ceil(CHUNK);
            let dirty = std::mem::take(&mut state.dirty);
            for &chunk in dirty.iter().filter(|&&c| c < chunks) {
                let start = chunk * CHUNK;
                let end = (start + CHUNK).min(state.bytes.len());
                keys.push(&chunk_key(file.index, chunk));
                values.push(&js_sys::Uint8Array::from(&state.bytes[start..end]).into());
            }
            for chunk in chunks..state.stored_chunks {
                deletes.push(&chunk_key(file.index, chunk));
            }
            let length_dirty = std::mem::take(&mut state.length_dirty);
            if length_dirty {
                keys.push(&length_key(file.index));
                values.push(&JsValue::from(state.bytes.len() as f64));
            }
            taken.push((&**file, dirty, length_dirty, chunks));
        }
        if keys.length() == 0 && deletes.length() == 0 {
            return Ok(());
        }
        // Put back unless the transaction is known to have committed, also
        // when this future is dropped while it runs.
        let mut taken = Taken {
            items: taken,
            committed: false,
        };
        let db = DATABASES.with(|d| d.borrow().get(self.slot).cloned().flatten());
        let outcome = match db {
            Some(db) => idb_write(&db, keys, values, deletes)
                .await
                .map(|_| ())
                .map_err(|e| idb_error(&self.name, "writing to IndexedDB", &e)),
            None => Err(Error::engine_message(
                "writing to IndexedDB",
                "the database is closed",
            )),
        };
        taken.committed = outcome.is_ok();
        outcome
    }

    /// Deletes database `name` from IndexedDB. Fails with [`Error::Busy`]
    /// while it is open anywhere.
    pub async fn remove(name: &str) -> Result<()> {
        validate_db_name(name)?;
        idb_remove(name)
            .await
            .map_err(|e| idb_error(name, "deleting the IndexedDB database", &e))?;
        Ok(())
    }
}

impl Drop for IdbIO {
    fn drop(&mut self) {
        if let Some(db) =
            DATABASES.with(|d| d.borrow_mut().get_mut(self.slot).and_then(Option::take))
        {
            idb_close(&db, &self.name);
        }
    }
}

js_clock!(IdbIO);

impl IO for IdbIO {
    fn open_file(
        &self,
        path: &str,
        _flags: OpenFlags,
        _direct: bool,
    ) -> turso_core::Result<Arc<dyn File>> {
        match self.files.get(path) {
            Some(file) => Ok(file.clone()),
            None => Err(LimboError::InternalError(format!(
                "IndexedDB database {}: the engine asked for file {path} (only the database and \
                 its WAL exist)",
                self.name
            ))),
        }
    }

    fn remove_file(&self, path: &str) -> turso_core::Result<()> {
        let file = self.files.get(path).ok_or_else(|| {
            LimboError::InternalError(format!("IndexedDB database {}: no file {path}", self.name))
        })?;
        lock(&file.state).truncate(0);
        Ok(())
    }

    fn file_id(&self, path: &str) -> turso_core::Result<FileId> {
        Ok(FileId::from_path_hash(&format!("indexeddb:{path}")))
    }

    fn yield_now(&self) {}
    fn sleep(&self, _: std::time::Duration) {}
}
