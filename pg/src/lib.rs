//! The Nexus metadata store on PostgreSQL ("distributed mode").
//!
//! [`PgStore`] implements [`nexus_core::MetadataStore`], the same contract as
//! the embedded store, over a pool of tokio-postgres connections to a
//! database whose schema it migrates on open (the PostgreSQL dialect of
//! `nexus-migrations`, under an advisory lock). After `nexus sync` has
//! copied an embedded store into PostgreSQL, an application switches its URL
//! and carries on; many application servers can share one database.
//!
//! ```no_run
//! # async fn demo() -> nexus_core::Result<()> {
//! use nexus_core::{MetadataStore, NewFile};
//!
//! let store = nexus_pg::PgStore::connect("postgresql://nexus@db/nexus", Default::default()).await?;
//! store.put(NewFile::new("/a.txt", "s3", "bucket/a", 5)).await?;
//! # Ok(()) }
//! ```
//!
//! The store runs its database work on a small tokio runtime of its own, so
//! its methods can be awaited from any executor, as the embedded store's can.
//! Writes take the row of `nexus_state` to stamp the next change sequence
//! number, exactly as the embedded store does, so change order is commit
//! order on both backends; that also serializes writers on one database.

#![warn(missing_docs)]

mod ops;

/// Opens the store at `location`, choosing the backend from it: a
/// `postgresql://` or `postgres://` URL opens [`PgStore`] with `options`; a
/// file path, optionally prefixed `sqlite:` (or `sqlite://`), opens the
/// embedded store (with `options.tenant` and `options.migrate`).
pub async fn open(location: &str, options: PgOptions) -> Result<DynStore> {
    if is_postgres_url(location) {
        return Ok(Arc::new(PgStore::connect(location, options).await?));
    }
    let path = location.strip_prefix("sqlite:").unwrap_or(location);
    let path = path.strip_prefix("//").unwrap_or(path);
    let store = nexus_core::Store::builder()
        .path(path)
        .tenant(options.tenant)
        .busy_timeout(options.wait_timeout)
        .migrate(options.migrate)
        .open()
        .await?;
    Ok(Arc::new(store))
}

/// Whether `location` names a PostgreSQL database (`postgres://` or `postgresql://`).
pub fn is_postgres_url(location: &str) -> bool {
    let l = location.trim_start().to_ascii_lowercase();
    l.starts_with("postgres://") || l.starts_with("postgresql://")
}

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use nexus_core::backend::validate_name;
use nexus_core::{
    Chunk, DynStore, Error, FileRecord, ListOptions, MetadataStore, NewFile, Page, Precondition,
    Result, Stats, Timestamp, VersionDiff, VersionInfo,
};
use nexus_migrations::{Dialect, Migrator};
use nexus_sync::{PgDriver, TargetUrl};
use serde_json::Value;

/// Pool and timeout settings. The defaults suit an application server.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections in the pool (default 16).
    pub pool_size: usize,
    /// How long a call waits for a free connection or a new one (default 30 s).
    pub wait_timeout: Duration,
    /// `statement_timeout` of every connection (default 60 s).
    pub statement_timeout: Duration,
    /// The tenant of the returned handle (default `default`).
    pub tenant: String,
    /// Whether to migrate the schema to head on connect (default `true`).
    pub migrate: bool,
    /// A read replica of the same database. Reads may go there; writes, and
    /// reads within `read_your_writes` of this store's last write, always go
    /// to the primary.
    pub read_replica_url: Option<String>,
    /// After a write, reads stay on the primary this long (default 5 s).
    pub read_your_writes: Duration,
    /// The staleness bound: the replica is used only while its replay lag
    /// (`now() - pg_last_xact_replay_timestamp()`, checked at most once a
    /// second) is at most this (default 5 s).
    pub max_replica_lag: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            pool_size: 16,
            wait_timeout: Duration::from_secs(30),
            statement_timeout: Duration::from_secs(60),
            tenant: nexus_core::DEFAULT_TENANT.to_string(),
            migrate: true,
            read_replica_url: None,
            read_your_writes: Duration::from_secs(5),
            max_replica_lag: Duration::from_secs(5),
        }
    }
}

struct Manager {
    target: TargetUrl,
    statement_timeout: Duration,
}

impl deadpool::managed::Manager for Manager {
    type Type = tokio_postgres::Client;
    type Error = nexus_sync::Error;

    async fn create(&self) -> std::result::Result<tokio_postgres::Client, nexus_sync::Error> {
        let client = self.target.connect().await?;
        client
            .batch_execute(&format!(
                "SET statement_timeout = {}",
                self.statement_timeout.as_millis()
            ))
            .await
            .map_err(nexus_sync::Error::pg("setting statement_timeout"))?;
        Ok(client)
    }

    async fn recycle(
        &self,
        client: &mut tokio_postgres::Client,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<nexus_sync::Error> {
        if client.is_closed() {
            return Err(deadpool::managed::RecycleError::message(
                "connection closed",
            ));
        }
        Ok(())
    }
}

type Pool = deadpool::managed::Pool<Manager>;

pub(crate) struct Inner {
    pool: Pool,
    replica: Option<Replica>,
    last_ts: AtomicI64,
    runtime: Option<tokio::runtime::Runtime>,
    target: TargetUrl,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Dropping a runtime inside another one would panic; let it wind down.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

struct Replica {
    pool: Pool,
    read_your_writes_micros: i64,
    max_lag: Duration,
    /// When this store last wrote (microseconds since the epoch).
    last_write: AtomicI64,
    /// When the lag was last checked, and whether it was within the bound.
    checked_at: AtomicI64,
    fresh: std::sync::atomic::AtomicBool,
}

impl Inner {
    /// Notes a write: reads stay on the primary for a while.
    pub(crate) fn note_write(&self) {
        if let Some(r) = &self.replica {
            r.last_write
                .store(Timestamp::now().as_micros(), Ordering::SeqCst);
        }
    }

    /// A connection for a read: the replica when allowed, else the primary.
    pub(crate) async fn read_client(&self) -> Result<deadpool::managed::Object<Manager>> {
        let Some(r) = &self.replica else {
            return self.client().await;
        };
        let now = Timestamp::now().as_micros();
        if now - r.last_write.load(Ordering::SeqCst) < r.read_your_writes_micros {
            return self.client().await;
        }
        if now - r.checked_at.load(Ordering::SeqCst) >= 1_000_000 {
            let fresh = match r.pool.get().await {
                Ok(c) => c
                    .query_one(
                        "SELECT CASE WHEN pg_is_in_recovery() \
                         THEN COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 1e9) \
                         ELSE 0 END::float8",
                        &[],
                    )
                    .await
                    .map(|row| row.get::<_, f64>(0) <= r.max_lag.as_secs_f64())
                    .unwrap_or(false),
                Err(_) => false,
            };
            r.fresh.store(fresh, Ordering::SeqCst);
            r.checked_at.store(now, Ordering::SeqCst);
        }
        if r.fresh.load(Ordering::SeqCst)
            && let Ok(c) = r.pool.get().await
        {
            return Ok(c);
        }
        self.client().await
    }

    /// A time strictly after every time this store handed out before.
    pub(crate) fn now(&self) -> Timestamp {
        let now = Timestamp::now().as_micros();
        let mut last = self.last_ts.load(Ordering::SeqCst);
        loop {
            let next = now.max(last.saturating_add(1));
            match self
                .last_ts
                .compare_exchange(last, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return Timestamp::from_micros(next),
                Err(seen) => last = seen,
            }
        }
    }

    pub(crate) async fn client(&self) -> Result<deadpool::managed::Object<Manager>> {
        self.pool.get().await.map_err(|e| Error::Engine {
            context: "taking a PostgreSQL connection from the pool",
            source: e.to_string().into(),
        })
    }
}

/// A handle on a metadata store in PostgreSQL, scoped to one tenant. Cheap
/// to clone; clones share the pool.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
    tenant: Arc<str>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &self.inner.target)
            .field("tenant", &self.tenant)
            .finish()
    }
}

pub(crate) fn pg_err(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
    move |e| Error::Engine {
        context,
        source: nexus_sync::describe(&e).into(),
    }
}

impl PgStore {
    /// Connects to `url`, migrates the schema to head, and returns a handle.
    pub async fn connect(url: &str, options: PgOptions) -> Result<PgStore> {
        validate_name("tenant", &options.tenant)?;
        let target = TargetUrl::parse(url).map_err(|e| Error::invalid_url(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("nexus-pg")
            .enable_all()
            .build()
            .map_err(|e| Error::Io {
                action: "starting the PostgreSQL runtime for",
                path: target.redacted(),
                source: e,
            })?;
        let manager = Manager {
            target: target.clone(),
            statement_timeout: options.statement_timeout,
        };
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .wait_timeout(Some(options.wait_timeout))
            .create_timeout(Some(options.wait_timeout))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| Error::Engine {
                context: "building the connection pool",
                source: e.to_string().into(),
            })?;
        let handle = runtime.handle().clone();
        let replica = match &options.read_replica_url {
            None => None,
            Some(url) => {
                let target =
                    TargetUrl::parse(url).map_err(|e| Error::invalid_url(e.to_string()))?;
                let pool = Pool::builder(Manager {
                    target,
                    statement_timeout: options.statement_timeout,
                })
                .max_size(options.pool_size.max(1))
                .wait_timeout(Some(options.wait_timeout))
                .create_timeout(Some(options.wait_timeout))
                .runtime(deadpool::Runtime::Tokio1)
                .build()
                .map_err(|e| Error::Engine {
                    context: "building the replica connection pool",
                    source: e.to_string().into(),
                })?;
                Some(Replica {
                    pool,
                    read_your_writes_micros: i64::try_from(options.read_your_writes.as_micros())
                        .unwrap_or(i64::MAX),
                    max_lag: options.max_replica_lag,
                    last_write: AtomicI64::new(0),
                    checked_at: AtomicI64::new(i64::MIN / 2),
                    fresh: std::sync::atomic::AtomicBool::new(false),
                })
            }
        };
        let inner = Arc::new(Inner {
            pool,
            replica,
            last_ts: AtomicI64::new(i64::MIN),
            runtime: Some(runtime),
            target,
        });
        let migrate = inner.clone();
        let store = PgStore {
            inner,
            tenant: Arc::from(options.tenant.as_str()),
        };
        if !options.migrate {
            return Ok(store);
        }
        handle
            .spawn(async move {
                let mut client = migrate.client().await?;
                nexus_sync::migrate_target(&mut client)
                    .await
                    .map_err(|e| Error::Engine {
                        context: "migrating the PostgreSQL schema",
                        source: e.to_string().into(),
                    })?;
                Ok::<_, Error>(())
            })
            .await
            .map_err(join_err)??;
        Ok(store)
    }

    /// The state of every schema migration.
    pub async fn migration_status(&self) -> Result<Vec<nexus_core::MigrationStatus>> {
        self.run(|inner, _| async move {
            let mut client = inner.client().await?;
            Ok(Migrator::new(Dialect::Postgres)
                .status(&mut PgDriver::new(&mut client))
                .await?)
        })
        .await
    }

    /// Applies migrations up to `target` (head when `None`), under the advisory lock.
    pub async fn migrate_up(&self, target: Option<u32>) -> Result<Vec<u32>> {
        self.run(move |inner, _| async move {
            let mut client = inner.client().await?;
            Ok(Migrator::new(Dialect::Postgres)
                .up(&mut PgDriver::new(&mut client), target)
                .await?)
        })
        .await
    }

    /// Reverts migrations down to `to` (0 removes every table and all data).
    pub async fn migrate_down(&self, to: u32) -> Result<Vec<u32>> {
        self.run(move |inner, _| async move {
            let mut client = inner.client().await?;
            Ok(Migrator::new(Dialect::Postgres)
                .down(&mut PgDriver::new(&mut client), to)
                .await?)
        })
        .await
    }

    /// Runs `f` on the store's runtime and awaits it from any executor.
    async fn run<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Inner>, Arc<str>) -> Fut,
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        let fut = f(self.inner.clone(), self.tenant.clone());
        let handle = self
            .inner
            .runtime
            .as_ref()
            .expect("runtime lives as long as the store")
            .handle()
            .clone();
        handle.spawn(fut).await.map_err(join_err)?
    }
}

fn join_err(e: tokio::task::JoinError) -> Error {
    Error::Engine {
        context: "running a PostgreSQL task",
        source: e.to_string().into(),
    }
}

trait InvalidUrl {
    fn invalid_url(reason: String) -> Self;
}

impl InvalidUrl for Error {
    fn invalid_url(reason: String) -> Self {
        Error::InvalidArgument {
            name: "database URL",
            value: "(hidden)".into(),
            reason,
        }
    }
}

macro_rules! delegate {
    ($self:ident, $op:ident ( $($arg:expr),* )) => {
        $self.run(move |inner, tenant| async move { ops::$op(&inner, &tenant, $($arg),*).await }).await
    };
}

#[async_trait::async_trait]
impl MetadataStore for PgStore {
    fn tenant(&self) -> &str {
        &self.tenant
    }
    fn with_tenant(&self, tenant: &str) -> Result<DynStore> {
        validate_name("tenant", tenant)?;
        Ok(Arc::new(PgStore {
            inner: self.inner.clone(),
            tenant: Arc::from(tenant),
        }))
    }
    async fn put(&self, file: NewFile) -> Result<FileRecord> {
        delegate!(self, put(file, None))
    }
    async fn put_if(&self, file: NewFile, expected: Precondition) -> Result<FileRecord> {
        delegate!(self, put(file, Some(expected)))
    }
    async fn put_batch(&self, files: &[NewFile]) -> Result<Vec<FileRecord>> {
        let files = files.to_vec();
        delegate!(self, put_batch(files))
    }
    async fn get(&self, path: &str) -> Result<Option<FileRecord>> {
        let path = path.to_string();
        delegate!(self, get(path))
    }
    async fn exists(&self, path: &str) -> Result<bool> {
        Ok(self.get(path).await?.is_some())
    }
    async fn get_batch(&self, paths: &[String]) -> Result<HashMap<String, Option<FileRecord>>> {
        let paths = paths.to_vec();
        delegate!(self, get_batch(paths))
    }
    async fn delete(&self, path: &str) -> Result<Option<FileRecord>> {
        let path = path.to_string();
        delegate!(self, delete(path))
    }
    async fn delete_batch(&self, paths: &[String]) -> Result<usize> {
        let paths = paths.to_vec();
        delegate!(self, delete_batch(paths))
    }
    async fn list(&self, prefix: &str) -> Result<Vec<FileRecord>> {
        let prefix = prefix.to_string();
        delegate!(self, list(prefix))
    }
    async fn list_page(&self, opts: &ListOptions) -> Result<Page> {
        let opts = opts.clone();
        delegate!(self, list_page(opts))
    }
    async fn list_directories(&self, prefix: &str) -> Result<Vec<String>> {
        let prefix = prefix.to_string();
        delegate!(self, list_directories(prefix))
    }
    async fn is_directory(&self, path: &str) -> Result<bool> {
        let path = path.to_string();
        delegate!(self, is_directory(path))
    }
    async fn rename(&self, old: &str, new: &str) -> Result<usize> {
        let (old, new) = (old.to_string(), new.to_string());
        delegate!(self, rename(old, new))
    }
    async fn set_metadata(&self, path: &str, key: &str, value: &Value) -> Result<()> {
        let entries = vec![(path.to_string(), key.to_string(), value.clone())];
        delegate!(self, set_metadata(entries))
    }
    async fn set_metadata_batch(&self, entries: &[(String, String, Value)]) -> Result<()> {
        let entries = entries.to_vec();
        delegate!(self, set_metadata(entries))
    }
    async fn get_metadata(&self, path: &str, key: &str) -> Result<Option<Value>> {
        let (path, key) = (path.to_string(), key.to_string());
        delegate!(self, get_metadata(path, key))
    }
    async fn list_metadata(&self, path: &str) -> Result<BTreeMap<String, Value>> {
        let path = path.to_string();
        delegate!(self, list_metadata(path))
    }
    async fn delete_metadata(&self, path: &str, key: &str) -> Result<bool> {
        let (path, key) = (path.to_string(), key.to_string());
        delegate!(self, delete_metadata(path, key))
    }
    async fn find_by_metadata(
        &self,
        key: &str,
        value: Option<&Value>,
    ) -> Result<Vec<(String, Value)>> {
        let (key, value) = (key.to_string(), value.cloned());
        delegate!(self, find_by_metadata(key, value))
    }
    async fn list_versions(&self, path: &str) -> Result<Vec<VersionInfo>> {
        let path = path.to_string();
        delegate!(self, list_versions(path))
    }
    async fn get_version(&self, path: &str, version: u32) -> Result<Option<VersionInfo>> {
        let path = path.to_string();
        delegate!(self, get_version(path, version))
    }
    async fn rollback(&self, path: &str, version: u32) -> Result<FileRecord> {
        let path = path.to_string();
        delegate!(self, rollback(path, version))
    }
    async fn diff_versions(&self, path: &str, v1: u32, v2: u32) -> Result<VersionDiff> {
        let path = path.to_string();
        delegate!(self, diff_versions(path, v1, v2))
    }
    async fn add_chunk_ref(
        &self,
        content_hash: &str,
        size: u64,
        storage_path: &str,
    ) -> Result<Chunk> {
        let (hash, storage) = (content_hash.to_string(), storage_path.to_string());
        delegate!(self, add_chunk_ref(hash, size, storage))
    }
    async fn release_chunk_ref(&self, content_hash: &str, grace: Duration) -> Result<Chunk> {
        let hash = content_hash.to_string();
        delegate!(self, release_chunk_ref(hash, grace))
    }
    async fn get_chunk(&self, content_hash: &str) -> Result<Option<Chunk>> {
        let hash = content_hash.to_string();
        delegate!(self, get_chunk(hash))
    }
    async fn gc_candidates(&self, limit: usize) -> Result<Vec<Chunk>> {
        delegate!(self, gc_candidates(limit))
    }
    async fn remove_chunk(&self, content_hash: &str) -> Result<bool> {
        let hash = content_hash.to_string();
        delegate!(self, remove_chunk(hash))
    }
    async fn stats(&self) -> Result<Stats> {
        delegate!(self, stats())
    }
    async fn debug_query(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let sql = sql.to_string();
        delegate!(self, debug_query(sql))
    }
}
