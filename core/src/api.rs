//! The store's contract as a trait, so that one application code and one
//! conformance suite serve every backend: the embedded [`Store`] here, and
//! the PostgreSQL store of `nexus-pg`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::error::Result;
use crate::model::{
    Chunk, FileRecord, ListOptions, NewFile, Page, Precondition, Stats, VersionDiff, VersionInfo,
};
use crate::store::Store;

/// `Send + Sync` on native targets; nothing in a browser, where futures stay on one thread.
#[cfg(not(target_family = "wasm"))]
pub trait MaybeSendSync: Send + Sync {}
#[cfg(not(target_family = "wasm"))]
impl<T: Send + Sync> MaybeSendSync for T {}
/// `Send + Sync` on native targets; nothing in a browser, where futures stay on one thread.
#[cfg(target_family = "wasm")]
pub trait MaybeSendSync {}
#[cfg(target_family = "wasm")]
impl<T> MaybeSendSync for T {}

/// A shared handle on any backend.
pub type DynStore = Arc<dyn MetadataStore>;

/// The metadata store's operations, scoped to a tenant. See [`Store`] for
/// the meaning of each; every backend behaves the same (the conformance
/// suite in `nexus-tests` runs against each).
#[cfg_attr(not(target_family = "wasm"), async_trait::async_trait)]
#[cfg_attr(target_family = "wasm", async_trait::async_trait(?Send))]
pub trait MetadataStore: MaybeSendSync + std::fmt::Debug {
    /// The tenant of this handle.
    fn tenant(&self) -> &str;
    /// A handle on the same store scoped to `tenant`.
    fn with_tenant(&self, tenant: &str) -> Result<DynStore>;
    /// See [`Store::put`].
    async fn put(&self, file: NewFile) -> Result<FileRecord>;
    /// See [`Store::put_if`].
    async fn put_if(&self, file: NewFile, expected: Precondition) -> Result<FileRecord>;
    /// See [`Store::put_batch`].
    async fn put_batch(&self, files: &[NewFile]) -> Result<Vec<FileRecord>>;
    /// See [`Store::get`].
    async fn get(&self, path: &str) -> Result<Option<FileRecord>>;
    /// See [`Store::exists`].
    async fn exists(&self, path: &str) -> Result<bool>;
    /// See [`Store::get_batch`].
    async fn get_batch(&self, paths: &[String]) -> Result<HashMap<String, Option<FileRecord>>>;
    /// See [`Store::delete`].
    async fn delete(&self, path: &str) -> Result<Option<FileRecord>>;
    /// See [`Store::delete_batch`].
    async fn delete_batch(&self, paths: &[String]) -> Result<usize>;
    /// See [`Store::list`].
    async fn list(&self, prefix: &str) -> Result<Vec<FileRecord>>;
    /// See [`Store::list_page`].
    async fn list_page(&self, opts: &ListOptions) -> Result<Page>;
    /// See [`Store::list_directories`].
    async fn list_directories(&self, prefix: &str) -> Result<Vec<String>>;
    /// See [`Store::is_directory`].
    async fn is_directory(&self, path: &str) -> Result<bool>;
    /// See [`Store::rename`].
    async fn rename(&self, old: &str, new: &str) -> Result<usize>;
    /// See [`Store::set_metadata`].
    async fn set_metadata(&self, path: &str, key: &str, value: &Value) -> Result<()>;
    /// See [`Store::set_metadata_batch`].
    async fn set_metadata_batch(&self, entries: &[(String, String, Value)]) -> Result<()>;
    /// See [`Store::get_metadata`].
    async fn get_metadata(&self, path: &str, key: &str) -> Result<Option<Value>>;
    /// See [`Store::list_metadata`].
    async fn list_metadata(&self, path: &str) -> Result<BTreeMap<String, Value>>;
    /// See [`Store::delete_metadata`].
    async fn delete_metadata(&self, path: &str, key: &str) -> Result<bool>;
    /// See [`Store::find_by_metadata`].
    async fn find_by_metadata(
        &self,
        key: &str,
        value: Option<&Value>,
    ) -> Result<Vec<(String, Value)>>;
    /// See [`Store::list_versions`].
    async fn list_versions(&self, path: &str) -> Result<Vec<VersionInfo>>;
    /// See [`Store::get_version`].
    async fn get_version(&self, path: &str, version: u32) -> Result<Option<VersionInfo>>;
    /// See [`Store::rollback`].
    async fn rollback(&self, path: &str, version: u32) -> Result<FileRecord>;
    /// See [`Store::diff_versions`].
    async fn diff_versions(&self, path: &str, v1: u32, v2: u32) -> Result<VersionDiff>;
    /// See [`Store::add_chunk_ref`].
    async fn add_chunk_ref(
        &self,
        content_hash: &str,
        size: u64,
        storage_path: &str,
    ) -> Result<Chunk>;
    /// See [`Store::release_chunk_ref`].
    async fn release_chunk_ref(&self, content_hash: &str, grace: Duration) -> Result<Chunk>;
    /// See [`Store::get_chunk`].
    async fn get_chunk(&self, content_hash: &str) -> Result<Option<Chunk>>;
    /// See [`Store::gc_candidates`].
    async fn gc_candidates(&self, limit: usize) -> Result<Vec<Chunk>>;
    /// See [`Store::remove_chunk`].
    async fn remove_chunk(&self, content_hash: &str) -> Result<bool>;
    /// See [`Store::stats`].
    async fn stats(&self) -> Result<Stats>;
    /// Raw SQL for tests that inspect the schema; every value as text.
    #[doc(hidden)]
    async fn debug_query(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>>;
}

#[cfg_attr(not(target_family = "wasm"), async_trait::async_trait)]
#[cfg_attr(target_family = "wasm", async_trait::async_trait(?Send))]
impl MetadataStore for Store {
    fn tenant(&self) -> &str {
        Store::tenant(self)
    }
    fn with_tenant(&self, tenant: &str) -> Result<DynStore> {
        Ok(Arc::new(Store::with_tenant(self, tenant)?))
    }
    async fn put(&self, file: NewFile) -> Result<FileRecord> {
        Store::put(self, file).await
    }
    async fn put_if(&self, file: NewFile, expected: Precondition) -> Result<FileRecord> {
        Store::put_if(self, file, expected).await
    }
    async fn put_batch(&self, files: &[NewFile]) -> Result<Vec<FileRecord>> {
        Store::put_batch(self, files).await
    }
    async fn get(&self, path: &str) -> Result<Option<FileRecord>> {
        Store::get(self, path).await
    }
    async fn exists(&self, path: &str) -> Result<bool> {
        Store::exists(self, path).await
    }
    async fn get_batch(&self, paths: &[String]) -> Result<HashMap<String, Option<FileRecord>>> {
        Store::get_batch(self, paths).await
    }
    async fn delete(&self, path: &str) -> Result<Option<FileRecord>> {
        Store::delete(self, path).await
    }
    async fn delete_batch(&self, paths: &[String]) -> Result<usize> {
        Store::delete_batch(self, paths).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<FileRecord>> {
        Store::list(self, prefix).await
    }
    async fn list_page(&self, opts: &ListOptions) -> Result<Page> {
        Store::list_page(self, opts).await
    }
    async fn list_directories(&self, prefix: &str) -> Result<Vec<String>> {
        Store::list_directories(self, prefix).await
    }
    async fn is_directory(&self, path: &str) -> Result<bool> {
        Store::is_directory(self, path).await
    }
    async fn rename(&self, old: &str, new: &str) -> Result<usize> {
        Store::rename(self, old, new).await
    }
    async fn set_metadata(&self, path: &str, key: &str, value: &Value) -> Result<()> {
        Store::set_metadata(self, path, key, value).await
    }
    async fn set_metadata_batch(&self, entries: &[(String, String, Value)]) -> Result<()> {
        Store::set_metadata_batch(self, entries).await
    }
    async fn get_metadata(&self, path: &str, key: &str) -> Result<Option<Value>> {
        Store::get_metadata(self, path, key).await
    }
    async fn list_metadata(&self, path: &str) -> Result<BTreeMap<String, Value>> {
        Store::list_metadata(self, path).await
    }
    async fn delete_metadata(&self, path: &str, key: &str) -> Result<bool> {
        Store::delete_metadata(self, path, key).await
    }
    async fn find_by_metadata(
        &self,
        key: &str,
        value: Option<&Value>,
    ) -> Result<Vec<(String, Value)>> {
        Store::find_by_metadata(self, key, value).await
    }
    async fn list_versions(&self, path: &str) -> Result<Vec<VersionInfo>> {
        Store::list_versions(self, path).await
    }
    async fn get_version(&self, path: &str, version: u32) -> Result<Option<VersionInfo>> {
        Store::get_version(self, path, version).await
    }
    async fn rollback(&self, path: &str, version: u32) -> Result<FileRecord> {
        Store::rollback(self, path, version).await
    }
    async fn diff_versions(&self, path: &str, v1: u32, v2: u32) -> Result<VersionDiff> {
        Store::diff_versions(self, path, v1, v2).await
    }
    async fn add_chunk_ref(
        &self,
        content_hash: &str,
        size: u64,
        storage_path: &str,
    ) -> Result<Chunk> {
        Store::add_chunk_ref(self, content_hash, size, storage_path).await
    }
    async fn release_chunk_ref(&self, content_hash: &str, grace: Duration) -> Result<Chunk> {
        Store::release_chunk_ref(self, content_hash, grace).await
    }
    async fn get_chunk(&self, content_hash: &str) -> Result<Option<Chunk>> {
        Store::get_chunk(self, content_hash).await
    }
    async fn gc_candidates(&self, limit: usize) -> Result<Vec<Chunk>> {
        Store::gc_candidates(self, limit).await
    }
    async fn remove_chunk(&self, content_hash: &str) -> Result<bool> {
        Store::remove_chunk(self, content_hash).await
    }
    async fn stats(&self) -> Result<Stats> {
        Store::stats(self).await
    }
    async fn debug_query(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        Store::debug_query(self, sql).await
    }
}
