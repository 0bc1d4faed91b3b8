//! JavaScript bindings of the Nexus metadata store (`nexus-core`), for the
//! npm package `nexus-metastore`.
//!
//! Conversions only: every method turns its JavaScript arguments into the
//! core's types, calls the core, and turns the result into plain JavaScript
//! objects (camelCase fields, timestamps as RFC 3339 strings); errors become
//! a JavaScript `Error` whose `kind` is [`nexus_core::Error::code`]. The
//! store, its validation and its browser I/O (memory, OPFS) live in the core.

#![cfg(all(target_arch = "wasm32", target_os = "unknown"))]

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use js_sys::{Promise, Reflect};
use nexus_core::{ListOptions, NewFile, Precondition, Store, Timestamp};
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

mod convert;
mod sync;

use convert::{
    JsChunk, JsCommitEvent, JsFileRecord, JsListOptions, JsNewFile, JsPage, JsPrecondition,
    JsStats, JsVersionDiff, JsVersionInfo,
};

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console, js_name = error)]
    fn console_error(value: &JsValue);
}

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &str = r#"
/** Where and how `sync` reaches a sync server (`nexus serve`). */
export interface SyncOptions {
  /** The server's base URL, e.g. "https://sync.example.com". */
  url: string;
  /** A bearer token the server accepts (a JWT, or a static token). */
  token: string;
  /** Rows per pulled page and per pushed window, each one request (default 2000). */
  maxRows?: number;
}

/** What one `sync` did. */
export interface SyncResult {
  /** Rows pushed. */
  pushed: number;
  /** Rows pulled. */
  pulled: number;
  /** Conflict copies the push made: another store's change kept `path`, this one is at `copy`. */
  conflicts: ConflictCopy[];
}

/** A conflict copy that a sync made. */
export interface ConflictCopy {
  tenant: string;
  /** The path both sides wrote, kept by the change that reached the server first. */
  path: string;
  /** Where this store's change was kept: `<stem>.sync-conflict-<YYYYMMDD-HHMMSS>-<source>[.<ext>]`. */
  copy: string;
  /** The copy's file id. */
  pathId: string;
  /** The source whose change lost the path. */
  source: string;
  /** "path": two files at one path; "content": both changed one file. */
  reason: "path" | "content";
}

/** A file to record. Times are RFC 3339 strings; omitted times are "now". */
export interface NewFile {
  path: string;
  backend: string;
  physicalPath: string;
  size: number;
  etag?: string | null;
  mimeType?: string | null;
  createdAt?: string | null;
  modifiedAt?: string | null;
}

/** A live file as stored. */
export interface FileRecord {
  path: string;
  backend: string;
  physicalPath: string;
  size: number;
  etag: string | null;
  mimeType: string | null;
  createdAt: string;
  modifiedAt: string;
  version: number;
  tenant: string;
  /** Stable identity: kept by updates and renames. */
  pathId: string;
}

/** What a conditional put expects to find. */
export type Precondition = { absent: true } | { version: number } | { etag: string | null };

export interface ListOptions {
  prefix: string;
  /** Everything below the prefix (default), or only direct children. */
  recursive?: boolean;
  /** Page size, 1..=10000 (default 1000). */
  limit?: number;
  /** The `nextCursor` of the previous page. */
  cursor?: string | null;
}

export interface Page {
  items: FileRecord[];
  nextCursor: string | null;
}

export interface VersionInfo {
  version: number;
  etag: string | null;
  size: number;
  mimeType: string | null;
  backend: string;
  physicalPath: string;
  source: "original" | "update" | "rollback";
  changeReason: string | null;
  parentVersion: number | null;
  createdAt: string;
}

export interface VersionDiff {
  path: string;
  v1: VersionInfo;
  v2: VersionInfo;
  contentChanged: boolean;
  sizeDelta: number;
}

export interface Chunk {
  contentHash: string;
  size: number;
  storagePath: string;
  refCount: number;
  createdAt: string;
  lastAccessedAt: string | null;
  protectedUntil: string | null;
}

export interface Stats {
  tenant: string;
  files: number;
  totalBytes: number;
  deletedFiles: number;
  metadataEntries: number;
  versions: number;
  chunks: number;
  changeSeq: number;
  schemaVersion: number;
}

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/**
 * The kinds of `NexusError`. `Busy` and `Unavailable` are worth retrying
 * (another tab is taking over; the sync server is unreachable or busy);
 * `Unauthorized` and `Forbidden` come from a sync server (401, 403).
 */
export type ErrorKind =
  | "InvalidPath" | "InvalidArgument" | "InvalidCursor" | "InvalidChangeFile" | "ChangeFileGap"
  | "NotFound" | "VersionNotFound"
  | "ChunkNotFound" | "AlreadyExists" | "Conflict" | "PullUnfinished" | "Busy" | "Migration"
  | "Corrupt" | "Unsupported" | "Unavailable" | "Unauthorized" | "Forbidden" | "Io" | "Internal";

/** Every failure of the store: an `Error` with a `kind`. */
export interface NexusError extends Error {
  name: "NexusError";
  kind: ErrorKind;
}

/** What commits changed (`onCommit`): the change sequence range `(fromSeq, toSeq]` and every tenant's paths. */
export interface CommitEvent {
  fromSeq: number;
  toSeq: number;
  /** The paths the changed rows have now, and those renames moved files from (at most 10000). */
  paths: { tenant: string; path: string }[];
  /** More paths changed than listed: read again whatever is shown. */
  truncated: boolean;
}

/** What changed for one tenant (`onChange`, `watch`). */
export interface ChangeEvent {
  fromSeq: number;
  toSeq: number;
  /** This tenant's changed paths (for `watch`, those under its prefix). */
  paths: string[];
  truncated: boolean;
}

/** What `exportChanges` gives: a change file and the range it covers. */
export interface ExportedChanges {
  /** The change file (versioned JSON), for `nexus sync --from-changes` or `nexus import-changes`. */
  bytes: Uint8Array;
  /** The store's identity as a replication source. */
  sourceId: string;
  /** The change-sequence point after which the file starts (the `since` given). */
  after: number;
  /** The point the file reaches: the next export's `since`. */
  through: number;
  /** How many rows the file carries. */
  rows: number;
}

/** How `open` chooses where the data lives. */
export interface OpenOptions {
  /** A database persisted under this name (see `storage`); omitted: a
   *  private in-memory database. */
  name?: string;
  /** The tenant of the handle (default "default"). */
  tenant?: string;
  /** Where a named database lives: "opfs" (the Origin Private File System,
   *  in a Worker), "indexeddb" (kept in memory, each write resolving once
   *  IndexedDB committed it), or "auto" (the default: OPFS where it
   *  exists, else IndexedDB). */
  storage?: "auto" | "opfs" | "indexeddb";
}
"#;

/// Turns a core error into a JavaScript `Error` with `name` `NexusError`
/// and `kind` the error's code; the message carries the whole cause chain.
fn js_error(e: &nexus_core::Error) -> JsValue {
    error_value(e.code(), &nexus_core::one_line(e))
}

fn error_value(kind: &str, message: &str) -> JsValue {
    let err = js_sys::Error::new(message);
    err.set_name("NexusError");
    let _ = Reflect::set(&err, &"kind".into(), &kind.into());
    err.into()
}

/// An argument that did not convert: an `InvalidArgument` naming it.
fn bad_argument(name: &str, e: impl std::fmt::Display) -> JsValue {
    error_value("InvalidArgument", &format!("invalid {name}: {e}"))
}

/// Converts an argument through JSON text: one `JSON.stringify` and one
/// serde_json parse cost less than visiting the object field by field
/// through JavaScript reflection. (`Date`s become RFC 3339 strings on the way.)
fn from_js<T: for<'de> Deserialize<'de>>(name: &str, value: JsValue) -> Result<T, JsValue> {
    let text = js_sys::JSON::stringify(&value)
        .map_err(|e| bad_argument(name, nexus_core::web::js_message(&e)))?
        .as_string()
        .ok_or_else(|| bad_argument(name, "undefined is not a value here"))?;
    serde_json::from_str(&text).map_err(|e| {
        // serde_json's position is in the JSON text, which the caller never saw.
        let message = e.to_string();
        let message = message
            .rsplit_once(" at line ")
            .map_or(message.as_str(), |(head, _)| head)
            .to_string();
        bad_argument(name, message)
    })
}

/// Converts a result through JSON text (`JSON.parse` builds the objects).
fn to_js<T: Serialize + ?Sized>(value: &T) -> Result<JsValue, JsValue> {
    let text = serde_json::to_string(value)
        .map_err(|e| error_value("Internal", &format!("converting a result: {e}")))?;
    js_sys::JSON::parse(&text)
}

/// Runs a core call as a JavaScript promise of its converted result.
fn promise<T, F>(call: F) -> Promise
where
    T: Serialize,
    F: Future<Output = Result<T, nexus_core::Error>> + 'static,
{
    future_with(Ok(()), move |()| call)
}

fn path_list(name: &str, value: JsValue) -> Result<Vec<String>, JsValue> {
    from_js(name, value)
}

/// A handle on a metadata store, scoped to one tenant. Every method returns
/// a promise; calls may overlap freely (the store serializes them).
#[wasm_bindgen(js_name = NexusStore)]
#[derive(Debug, Clone)]
pub struct NexusStore {
    store: Store,
    persistence: &'static str,
    /// What `sync` knows of each sync server without asking, shared by
    /// the store's handles.
    servers: sync::Servers,
}

#[wasm_bindgen(js_class = NexusStore)]
impl NexusStore {
    /// Opens a store: persisted under `options.name`, in the Origin Private
    /// File System (in a dedicated Worker) or in IndexedDB as
    /// `options.storage` says, or in memory when no name is given. Rejects
    /// with kind `Busy` while another tab or worker has the named database
    /// open, and `Unsupported` where the storage asked for is missing.
    #[wasm_bindgen(unchecked_return_type = "Promise<NexusStore>")]
    pub fn open(
        #[wasm_bindgen(unchecked_param_type = "OpenOptions | undefined")] options: JsValue,
    ) -> Promise {
        #[derive(Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        struct Options {
            name: Option<String>,
            tenant: Option<String>,
            storage: Option<String>,
        }
        let options: Result<Options, JsValue> = if options.is_undefined() || options.is_null() {
            Ok(Options::default())
        } else {
            from_js("open options", options)
        };
        future_to_promise(async move {
            let options = options?;
            let mut builder = Store::builder();
            if let Some(tenant) = options.tenant {
                builder = builder.tenant(tenant);
            }
            let storage = options.storage.as_deref().unwrap_or("auto");
            let (store, persistence) = match (options.name, storage) {
                (None, "auto" | "opfs" | "indexeddb") => (builder.memory().open().await, "memory"),
                (Some(name), "opfs") => (builder.opfs(name).open().await, "opfs"),
                (Some(name), "indexeddb") => (builder.indexeddb(name).open().await, "indexeddb"),
                (Some(name), "auto") => match builder.clone().opfs(name.clone()).open().await {
                    // Only where OPFS itself is missing (not when a file of
                    // it fails to open: that database is OPFS's).
                    Err(nexus_core::Error::Unsupported {
                        feature: nexus_core::web::OPFS_FEATURE,
                        ..
                    }) => (builder.indexeddb(name).open().await, "indexeddb"),
                    opened => (opened, "opfs"),
                },
                (_, other) => {
                    return Err(bad_argument(
                        "storage",
                        format!("{other:?} is not one of \"auto\", \"opfs\", \"indexeddb\""),
                    ));
                }
            };
            let store = store.map_err(|e| js_error(&e))?;
            Ok(NexusStore {
                store,
                persistence,
                servers: sync::Servers::default(),
            }
            .into())
        })
    }

    /// Deletes the database `name` with all its data, from OPFS and from
    /// IndexedDB (OPFS only in a dedicated Worker). Rejects with kind `Busy` while it is open anywhere (close
    /// every handle first); deleting a database that does not exist is not
    /// an error.
    #[wasm_bindgen(js_name = deleteDatabase, unchecked_return_type = "Promise<void>")]
    pub fn delete_database(name: String) -> Promise {
        future_to_promise(async move {
            // Wherever it lives: a storage this browser lacks holds nothing.
            let mut supported = false;
            for removed in [
                nexus_core::web::OpfsIO::remove(&name).await,
                nexus_core::web::IdbIO::remove(&name).await,
            ] {
                match removed {
                    Ok(()) => supported = true,
                    Err(e) if e.kind() == nexus_core::ErrorKind::Unsupported => {}
                    Err(e) => return Err(js_error(&e)),
                }
            }
            if !supported {
                return Err(error_value(
                    "Unsupported",
                    "neither the Origin Private File System nor IndexedDB is available here",
                ));
            }
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Where the data lives: `"opfs"` or `"indexeddb"` (persisted), or
    /// `"memory"` (gone with the page).
    #[wasm_bindgen(
        getter,
        unchecked_return_type = "\"opfs\" | \"indexeddb\" | \"memory\""
    )]
    pub fn persistence(&self) -> String {
        self.persistence.to_string()
    }

    /// `opfs:<name>`, `indexeddb:<name>` or `:memory:`.
    #[wasm_bindgen(getter)]
    pub fn location(&self) -> String {
        self.store.location().to_string()
    }

    /// The tenant of this handle.
    #[wasm_bindgen(getter)]
    pub fn tenant(&self) -> String {
        self.store.tenant().to_string()
    }

    /// A handle on the same store scoped to `tenant`.
    #[wasm_bindgen(js_name = withTenant)]
    pub fn with_tenant(&self, tenant: &str) -> Result<NexusStore, JsValue> {
        Ok(NexusStore {
            store: self.store.with_tenant(tenant).map_err(|e| js_error(&e))?,
            persistence: self.persistence,
            servers: self.servers.clone(),
        })
    }

    /// Records a file (creating or updating it). With `expected`, only if the
    /// stored state matches (else rejects with kind `Conflict`).
    #[wasm_bindgen(unchecked_return_type = "Promise<FileRecord>")]
    pub fn put(
        &self,
        #[wasm_bindgen(unchecked_param_type = "NewFile")] file: JsValue,
        #[wasm_bindgen(unchecked_param_type = "Precondition | undefined")] expected: JsValue,
    ) -> Promise {
        let store = self.store.clone();
        let args = (|| {
            let file = NewFile::try_from(from_js::<JsNewFile>("file", file)?)?;
            let expected = if expected.is_undefined() || expected.is_null() {
                None
            } else {
                Some(Precondition::try_from(from_js::<JsPrecondition>(
                    "precondition",
                    expected,
                )?)?)
            };
            Ok::<_, JsValue>((file, expected))
        })();
        future_with(args, move |(file, expected)| async move {
            let record = match expected {
                Some(expected) => store.put_if(file, expected).await?,
                None => store.put(file).await?,
            };
            Ok(JsFileRecord::from(record))
        })
    }

    /// Records many files in one transaction: all or none.
    #[wasm_bindgen(js_name = putBatch, unchecked_return_type = "Promise<FileRecord[]>")]
    pub fn put_batch(
        &self,
        #[wasm_bindgen(unchecked_param_type = "NewFile[]")] files: JsValue,
    ) -> Promise {
        let store = self.store.clone();
        let files = from_js::<Vec<JsNewFile>>("files", files).and_then(|files| {
            files
                .into_iter()
                .map(NewFile::try_from)
                .collect::<Result<Vec<_>, _>>()
        });
        future_with(files, move |files| async move {
            let records = store.put_batch(&files).await?;
            Ok(records
                .into_iter()
                .map(JsFileRecord::from)
                .collect::<Vec<_>>())
        })
    }

    /// The live file at `path`, or `null`.
    #[wasm_bindgen(unchecked_return_type = "Promise<FileRecord | null>")]
    pub fn get(&self, path: String) -> Promise {
        let store = self.store.clone();
        promise(async move { Ok(store.get(&path).await?.map(JsFileRecord::from)) })
    }

    /// Whether a live file exists at `path`.
    #[wasm_bindgen(unchecked_return_type = "Promise<boolean>")]
    pub fn exists(&self, path: String) -> Promise {
        let store = self.store.clone();
        promise(async move { store.exists(&path).await })
    }

    /// The live files at `paths`, by path (`null` where none).
    #[wasm_bindgen(
        js_name = getBatch,
        unchecked_return_type = "Promise<Record<string, FileRecord | null>>"
    )]
    pub fn get_batch(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string[]")] paths: JsValue,
    ) -> Promise {
        let store = self.store.clone();
        future_with(path_list("paths", paths), move |paths| async move {
            let found = store.get_batch(&paths).await?;
            Ok(found
                .into_iter()
                .map(|(k, v)| (k, v.map(JsFileRecord::from)))
                .collect::<HashMap<_, _>>())
        })
    }

    /// Deletes the file at `path`; resolves to the deleted record, or `null`
    /// when there was none.
    #[wasm_bindgen(unchecked_return_type = "Promise<FileRecord | null>")]
    pub fn delete(&self, path: String) -> Promise {
        let store = self.store.clone();
        promise(async move { Ok(store.delete(&path).await?.map(JsFileRecord::from)) })
    }

    /// Deletes the files at `paths` in one transaction; resolves to how many existed.
    #[wasm_bindgen(js_name = deleteBatch, unchecked_return_type = "Promise<number>")]
    pub fn delete_batch(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string[]")] paths: JsValue,
    ) -> Promise {
        let store = self.store.clone();
        future_with(path_list("paths", paths), move |paths| async move {
            store.delete_batch(&paths).await
        })
    }

    /// Every live file whose path starts with `prefix` (byte for byte), sorted by path.
    #[wasm_bindgen(unchecked_return_type = "Promise<FileRecord[]>")]
    pub fn list(&self, prefix: String) -> Promise {
        let store = self.store.clone();
        promise(async move {
            Ok(store
                .list(&prefix)
                .await?
                .into_iter()
                .map(JsFileRecord::from)
                .collect::<Vec<_>>())
        })
    }

    /// One page of a listing; pass `nextCursor` back for the next page.
    #[wasm_bindgen(js_name = listPage, unchecked_return_type = "Promise<Page>")]
    pub fn list_page(
        &self,
        #[wasm_bindgen(unchecked_param_type = "ListOptions")] options: JsValue,
    ) -> Promise {
        let store = self.store.clone();
        let options = from_js::<JsListOptions>("list options", options).map(ListOptions::from);
        future_with(options, move |options| async move {
            Ok(JsPage::from(store.list_page(&options).await?))
        })
    }

    /// The immediate subdirectories of `prefix` (ending in `/`).
    #[wasm_bindgen(js_name = listDirectories, unchecked_return_type = "Promise<string[]>")]
    pub fn list_directories(&self, prefix: String) -> Promise {
        let store = self.store.clone();
        promise(async move { store.list_directories(&prefix).await })
    }

    /// Whether some live file lies below `path`.
    #[wasm_bindgen(js_name = isDirectory, unchecked_return_type = "Promise<boolean>")]
    pub fn is_directory(&self, path: String) -> Promise {
        let store = self.store.clone();
        promise(async move { store.is_directory(&path).await })
    }

    /// Renames a file, or a directory with everything below it; resolves to
    /// how many files moved.
    #[wasm_bindgen(unchecked_return_type = "Promise<number>")]
    pub fn rename(&self, old: String, new: String) -> Promise {
        let store = self.store.clone();
        promise(async move { store.rename(&old, &new).await })
    }

    /// Sets metadata `key` of the file at `path` to a JSON value.
    #[wasm_bindgen(js_name = setMetadata, unchecked_return_type = "Promise<void>")]
    pub fn set_metadata(
        &self,
        path: String,
        key: String,
        #[wasm_bindgen(unchecked_param_type = "Json")] value: JsValue,
    ) -> Promise {
        let store = self.store.clone();
        future_with(json_value(value), move |value| async move {
            store.set_metadata(&path, &key, &value).await
        })
    }

    /// Sets many `[path, key, value]` entries in one transaction.
    #[wasm_bindgen(js_name = setMetadataBatch, unchecked_return_type = "Promise<void>")]
    pub fn set_metadata_batch(
        &self,
        #[wasm_bindgen(unchecked_param_type = "[string, string, Json][]")] entries: JsValue,
    ) -> Promise {
        let store = self.store.clone();
        let entries = from_js::<Vec<(String, String, serde_json::Value)>>("entries", entries);
        future_with(entries, move |entries| async move {
            store.set_metadata_batch(&entries).await
        })
    }

    /// Metadata `key` of the file at `path`, or `undefined` when unset.
    #[wasm_bindgen(js_name = getMetadata, unchecked_return_type = "Promise<Json | undefined>")]
    pub fn get_metadata(&self, path: String, key: String) -> Promise {
        let store = self.store.clone();
        future_to_promise(async move {
            match store.get_metadata(&path, &key).await {
                Ok(Some(value)) => to_js(&value),
                Ok(None) => Ok(JsValue::UNDEFINED),
                Err(e) => Err(js_error(&e)),
            }
        })
    }

    /// Every metadata entry of the file at `path`.
    #[wasm_bindgen(js_name = listMetadata, unchecked_return_type = "Promise<Record<string, Json>>")]
    pub fn list_metadata(&self, path: String) -> Promise {
        let store = self.store.clone();
        promise(async move {
            let all: BTreeMap<String, serde_json::Value> = store.list_metadata(&path).await?;
            Ok(all)
        })
    }

    /// Removes metadata `key`; resolves to whether it was set.
    #[wasm_bindgen(js_name = deleteMetadata, unchecked_return_type = "Promise<boolean>")]
    pub fn delete_metadata(&self, path: String, key: String) -> Promise {
        let store = self.store.clone();
        promise(async move { store.delete_metadata(&path, &key).await })
    }

    /// `[path, value]` of every live file with metadata `key` (equal to
    /// `value` when given).
    #[wasm_bindgen(js_name = findByMetadata, unchecked_return_type = "Promise<[string, Json][]>")]
    pub fn find_by_metadata(
        &self,
        key: String,
        #[wasm_bindgen(unchecked_param_type = "Json | undefined")] value: JsValue,
    ) -> Promise {
        let store = self.store.clone();
        let value = if value.is_undefined() {
            Ok(None)
        } else {
            json_value(value).map(Some)
        };
        future_with(value, move |value| async move {
            store.find_by_metadata(&key, value.as_ref()).await
        })
    }

    /// The version history of the file at `path`, oldest first.
    #[wasm_bindgen(js_name = listVersions, unchecked_return_type = "Promise<VersionInfo[]>")]
    pub fn list_versions(&self, path: String) -> Promise {
        let store = self.store.clone();
        promise(async move {
            Ok(store
                .list_versions(&path)
                .await?
                .into_iter()
                .map(JsVersionInfo::from)
                .collect::<Vec<_>>())
        })
    }

    /// One version of the file at `path`, or `null`.
    #[wasm_bindgen(js_name = getVersion, unchecked_return_type = "Promise<VersionInfo | null>")]
    pub fn get_version(&self, path: String, version: u32) -> Promise {
        let store = self.store.clone();
        promise(async move {
            Ok(store
                .get_version(&path, version)
                .await?
                .map(JsVersionInfo::from))
        })
    }

    /// Makes an earlier version current again (as a new version).
    #[wasm_bindgen(unchecked_return_type = "Promise<FileRecord>")]
    pub fn rollback(&self, path: String, version: u32) -> Promise {
        let store = self.store.clone();
        promise(async move { Ok(JsFileRecord::from(store.rollback(&path, version).await?)) })
    }

    /// What changed between two versions of the file at `path`.
    #[wasm_bindgen(js_name = diffVersions, unchecked_return_type = "Promise<VersionDiff>")]
    pub fn diff_versions(&self, path: String, v1: u32, v2: u32) -> Promise {
        let store = self.store.clone();
        promise(async move {
            Ok(JsVersionDiff::from(
                store.diff_versions(&path, v1, v2).await?,
            ))
        })
    }

    /// Adds a reference to the content chunk `contentHash` (creating it).
    #[wasm_bindgen(js_name = addChunkRef, unchecked_return_type = "Promise<Chunk>")]
    pub fn add_chunk_ref(&self, content_hash: String, size: f64, storage_path: String) -> Promise {
        let store = self.store.clone();
        let size = to_u64("size", size);
        future_with(size, move |size| async move {
            Ok(JsChunk::from(
                store
                    .add_chunk_ref(&content_hash, size, &storage_path)
                    .await?,
            ))
        })
    }

    /// Drops a reference; at zero the chunk is kept `graceMs` before it is
    /// a garbage-collection candidate.
    #[wasm_bindgen(js_name = releaseChunkRef, unchecked_return_type = "Promise<Chunk>")]
    pub fn release_chunk_ref(&self, content_hash: String, grace_ms: f64) -> Promise {
        let store = self.store.clone();
        let grace = to_u64("graceMs", grace_ms).map(Duration::from_millis);
        future_with(grace, move |grace| async move {
            Ok(JsChunk::from(
                store.release_chunk_ref(&content_hash, grace).await?,
            ))
        })
    }

    /// The chunk `contentHash`, or `null`.
    #[wasm_bindgen(js_name = getChunk, unchecked_return_type = "Promise<Chunk | null>")]
    pub fn get_chunk(&self, content_hash: String) -> Promise {
        let store = self.store.clone();
        promise(async move { Ok(store.get_chunk(&content_hash).await?.map(JsChunk::from)) })
    }

    /// Up to `limit` unreferenced chunks past their grace period.
    #[wasm_bindgen(js_name = gcCandidates, unchecked_return_type = "Promise<Chunk[]>")]
    pub fn gc_candidates(&self, limit: u32) -> Promise {
        let store = self.store.clone();
        promise(async move {
            Ok(store
                .gc_candidates(limit as usize)
                .await?
                .into_iter()
                .map(JsChunk::from)
                .collect::<Vec<_>>())
        })
    }

    /// Removes an unreferenced chunk; resolves to whether it was removed.
    #[wasm_bindgen(js_name = removeChunk, unchecked_return_type = "Promise<boolean>")]
    pub fn remove_chunk(&self, content_hash: String) -> Promise {
        let store = self.store.clone();
        promise(async move { store.remove_chunk(&content_hash).await })
    }

    /// The whole store's changes (every tenant) after change-sequence point
    /// `since` (0 or omitted: everything), as a change file: the bytes that
    /// `nexus sync --from-changes FILE --to URL` applies to PostgreSQL and
    /// `nexus import-changes FILE` to a native store. Pass `through` as the
    /// next `since` to export only what changed in between.
    #[wasm_bindgen(js_name = exportChanges, unchecked_return_type = "Promise<ExportedChanges>")]
    pub fn export_changes(&self, since: Option<f64>) -> Promise {
        let store = self.store.clone();
        let since = since.map_or(Ok(0), |s| to_u64("since", s));
        future_to_promise(async move {
            let since = i64::try_from(since?).unwrap_or(i64::MAX);
            let file = store
                .export_changes(since)
                .await
                .map_err(|e| js_error(&e))?;
            let out = js_sys::Object::new();
            let bytes = js_sys::Uint8Array::from(file.encode().as_slice());
            for (key, value) in [
                ("bytes", JsValue::from(bytes)),
                ("sourceId", JsValue::from(file.source_id.as_str())),
                ("after", JsValue::from(file.changes.after as f64)),
                ("through", JsValue::from(file.changes.through as f64)),
                ("rows", JsValue::from(file.changes.len() as f64)),
            ] {
                Reflect::set(&out, &key.into(), &value)?;
            }
            Ok(out.into())
        })
    }

    /// Syncs the store both ways with a sync server (`nexus serve`): pushes
    /// its changes, then pulls the changes of the token's tenant. Resolves
    /// to `{ pushed, pulled, conflicts }`; rejects with kind `Unauthorized`,
    /// `Forbidden`, `Unavailable` (retry later), `InvalidArgument`, ...
    #[wasm_bindgen(unchecked_return_type = "Promise<SyncResult>")]
    pub fn sync(
        &self,
        #[wasm_bindgen(unchecked_param_type = "SyncOptions")] options: JsValue,
    ) -> Promise {
        let (store, servers) = (self.store.clone(), self.servers.clone());
        let options = from_js::<sync::SyncOptions>("sync options", options);
        future_to_promise(async move {
            let result = sync::sync(&store, &servers, options?).await?;
            to_js(&result)
        })
    }

    /// Calls `callback` after each commit of writes to this database by any
    /// handle (every tenant; an import or a sync pull too) with
    /// `{ fromSeq, toSeq, paths: { tenant, path }[], truncated }`: the change
    /// sequence range `(fromSeq, toSeq]` and the paths its rows have now
    /// (plus those renames moved files from); commits that came while the
    /// callback was not yet called are merged into one call. It sees the
    /// commits after the subscription is in place (a moment after this
    /// returns, once a write being committed now is done). Returns a
    /// function that ends it. `onChange` and `watch` filter it by tenant and
    /// prefix.
    #[wasm_bindgen(js_name = onCommit, unchecked_return_type = "() => void")]
    pub fn on_commit(
        &self,
        #[wasm_bindgen(unchecked_param_type = "(event: CommitEvent) => void")]
        callback: js_sys::Function,
    ) -> JsValue {
        use std::cell::RefCell;
        use std::rc::Rc;
        let store = self.store.clone();
        // The subscription once it is in place, or `Err(())` once ended.
        let slot: Rc<RefCell<Result<Option<Rc<nexus_core::Subscription>>, ()>>> =
            Rc::new(RefCell::new(Ok(None)));
        let ours = slot.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let subscription = match store.subscribe().await {
                Ok(s) => Rc::new(s),
                Err(e) => {
                    console_error(&js_error(&e));
                    return;
                }
            };
            drop(store);
            match &mut *ours.borrow_mut() {
                Ok(place) => *place = Some(subscription.clone()),
                Err(()) => return,
            }
            while let Some(event) = subscription.next().await {
                if let Ok(value) = to_js(&JsCommitEvent::from(event)) {
                    let _ = callback.call1(&JsValue::NULL, &value);
                }
            }
        });
        // Idempotent: calling it again does nothing.
        Closure::wrap(Box::new(move || {
            if let Ok(Some(subscription)) = slot.replace(Err(())) {
                subscription.close();
            }
        }) as Box<dyn FnMut()>)
        .into_js_value()
    }

    /// Releases this handle; when the last handle on a database is closed,
    /// its files are closed (and another tab may open it).
    pub fn close(self) {}

    /// Checks the structure of the database file: the problems found, none
    /// when it is sound.
    #[wasm_bindgen(js_name = integrityCheck, unchecked_return_type = "Promise<string[]>")]
    pub fn integrity_check(&self) -> Promise {
        let store = self.store.clone();
        promise(async move { store.integrity_check().await })
    }

    /// Counts for this tenant.
    #[wasm_bindgen(unchecked_return_type = "Promise<Stats>")]
    pub fn stats(&self) -> Promise {
        let store = self.store.clone();
        promise(async move { Ok(JsStats::from(store.stats().await?)) })
    }
}

/// Runs `call` on converted arguments, or rejects with the conversion error.
fn future_with<A, T, F, Fut>(args: Result<A, JsValue>, call: F) -> Promise
where
    A: 'static,
    T: Serialize,
    F: FnOnce(A) -> Fut + 'static,
    Fut: Future<Output = Result<T, nexus_core::Error>> + 'static,
{
    future_to_promise(async move {
        let value = call(args?).await.map_err(|e| js_error(&e))?;
        to_js(&value)
    })
}

fn json_value(value: JsValue) -> Result<serde_json::Value, JsValue> {
    if value.is_undefined() {
        return Err(bad_argument(
            "metadata value",
            "undefined is not JSON (use null)",
        ));
    }
    from_js("metadata value", value)
}

fn to_u64(name: &str, value: f64) -> Result<u64, JsValue> {
    if value.is_finite() && value >= 0.0 && value.fract() == 0.0 && value <= 9_007_199_254_740_991.0
    {
        Ok(value as u64)
    } else {
        Err(bad_argument(
            name,
            format!("{value} is not a whole number from 0 to 2^53-1"),
        ))
    }
}

/// Parses an RFC 3339 time given from JavaScript.
fn timestamp(name: &str, value: Option<String>) -> Result<Option<Timestamp>, JsValue> {
    value
        .map(|s| {
            Timestamp::parse(&s)
                .ok_or_else(|| bad_argument(name, format!("{s:?} is not an RFC 3339 time")))
        })
        .transpose()
}
