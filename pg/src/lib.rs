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
//! Each write is one statement (its own transaction) that stamps the rows it
//! writes with its transaction's id; no row is shared by all writers. The
//! change feed ([`PgStore::changes_after`]) reads changes in an order that
//! never skips a transaction still running.

#![warn(missing_docs)]

mod feed;
mod ops;

pub use feed::{
    FeedPage, OWN_TRANSACTION, OwnTransaction, SnapshotPage, own_transaction, read_page,
    read_snapshot, read_snapshot_page, read_tenant_page,
};

/// Where a store lives, as the user wrote it: a `postgresql://` or
/// `postgres://` URL, or a file path (optionally `sqlite:` or `sqlite://`
/// before it). The one place that tells them apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The embedded store's file.
    Embedded(String),
    /// A PostgreSQL database (keep it out of output: it may hold a password;
    /// [`Location::redacted`] shows it safely).
    Postgres(String),
}

impl Location {
    /// Reads `location`.
    pub fn parse(location: &str) -> Location {
        let l = location.trim_start().to_ascii_lowercase();
        if l.starts_with("postgres://") || l.starts_with("postgresql://") {
            return Location::Postgres(location.to_string());
        }
        let path = location.strip_prefix("sqlite:").unwrap_or(location);
        let path = path.strip_prefix("//").unwrap_or(path);
        Location::Embedded(path.to_string())
    }

    /// The location with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        match self {
            Location::Embedded(path) => path.clone(),
            Location::Postgres(url) => nexus_postgres::redact(url),
        }
    }
}

/// Opens the store at `location` ([`Location::parse`]): [`PgStore`] with
/// `options` for a PostgreSQL URL, else the embedded store (with
/// `options.tenant`, `options.wait_timeout` as its busy timeout, and
/// `options.migrate`).
pub async fn open(location: &str, options: PgOptions) -> Result<DynStore> {
    match Location::parse(location) {
        Location::Postgres(url) => Ok(Arc::new(PgStore::connect(&url, options).await?)),
        Location::Embedded(path) => {
            let store = nexus_core::Store::builder()
                .path(path)
                .tenant(options.tenant)
                .busy_timeout(options.wait_timeout)
                .migrate(options.migrate)
                .open()
                .await?;
            Ok(Arc::new(store))
        }
    }
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
use nexus_postgres::{Backoff, PgDriver, PgUrl, Pool, PoolOptions, PooledClient};
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
    /// `application_name` of the pool's connections, as
    /// `pg_stat_activity` shows them (default `nexus-metastore`), unless the
    /// URL names one.
    pub application_name: String,
    /// How calls that failed for a passing reason (a lost connection, a
    /// deadlock, a serialization failure, a busy pool) are tried again:
    /// reads always, writes only when nothing can have been applied
    /// (default: 4 attempts, 50 ms doubling).
    pub retry: Backoff,
    /// A read replica of the same database. Reads may go there; writes, and
    /// reads within `read_your_writes` of this store's last write, always go
    /// to the primary.
    pub read_replica_url: Option<String>,
    /// After a write, reads stay on the primary this long (default 5 s; at
    /// least `max_replica_lag`, which is what guarantees that a replica
    /// within the bound has replayed the write).
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
            application_name: "nexus-metastore".to_string(),
            retry: Backoff::default(),
            read_replica_url: None,
            read_your_writes: Duration::from_secs(5),
            max_replica_lag: Duration::from_secs(5),
        }
    }
}

pub(crate) struct Inner {
    pool: Pool,
    replica: Option<Replica>,
    last_ts: AtomicI64,
    runtime: Option<tokio::runtime::Runtime>,
    target: PgUrl,
    retry: Backoff,
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
    /// When the lag was last checked (microseconds since the epoch).
    checked_at: AtomicI64,
    /// Until when the replica is within the bound, from the last check: the
    /// check's time plus the bound minus the lag it measured.
    fresh_until: AtomicI64,
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
    ///
    /// The replica is allowed outside the read-your-writes window and while
    /// its staleness is within the bound. A check measures the lag `L`
    /// (`now() - pg_last_xact_replay_timestamp()` on the replica) and
    /// allows the replica until `check time + bound - L`: the lag grows at
    /// most as fast as time passes, so the bound holds to the end of that
    /// window. Checks run at most every 100 ms, and only when the window
    /// has run out or is a second old.
    pub(crate) async fn read_client(&self) -> Result<PooledClient> {
        let Some(r) = &self.replica else {
            return self.client().await;
        };
        let now = Timestamp::now().as_micros();
        if now - r.last_write.load(Ordering::SeqCst) < r.read_your_writes_micros {
            return self.client().await;
        }
        let since_check = now - r.checked_at.load(Ordering::SeqCst);
        let expired = now >= r.fresh_until.load(Ordering::SeqCst);
        if (expired && since_check >= 100_000) || since_check >= 1_000_000 {
            r.checked_at.store(now, Ordering::SeqCst);
            let lag = match nexus_postgres::get(&r.pool).await {
                Ok(c) => c
                    .query_one(
                        "SELECT CASE WHEN pg_is_in_recovery() \
                         THEN EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) \
                         ELSE 0 END::float8",
                        &[],
                    )
                    .await
                    .ok()
                    .and_then(|row| row.get::<_, Option<f64>>(0)),
                Err(_) => None,
            };
            let until = match lag {
                Some(lag) if lag <= r.max_lag.as_secs_f64() => {
                    now + ((r.max_lag.as_secs_f64() - lag.max(0.0)) * 1e6) as i64
                }
                _ => 0,
            };
            r.fresh_until.store(until, Ordering::SeqCst);
        }
        if Timestamp::now().as_micros() < r.fresh_until.load(Ordering::SeqCst)
            && let Ok(c) = nexus_postgres::get(&r.pool).await
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

    pub(crate) async fn client(&self) -> Result<PooledClient> {
        Ok(nexus_postgres::get(&self.pool).await?)
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

/// A driver error as the store's: retryable ones become `Unavailable`, the
/// SQLSTATE stays in the source.
pub(crate) fn pg_err(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
    move |e| nexus_postgres::Error::pg(context)(e).into()
}

impl PgStore {
    /// Connects to `url`, migrates the schema to head, and returns a handle.
    pub async fn connect(url: &str, options: PgOptions) -> Result<PgStore> {
        validate_name("tenant", &options.tenant)?;
        let target = PgUrl::parse(url).map_err(|e| Error::invalid_url(e.to_string()))?;
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
        let pool_options = PoolOptions {
            size: options.pool_size.max(1),
            wait_timeout: options.wait_timeout,
            statement_timeout: options.statement_timeout,
            application_name: options.application_name.clone(),
        };
        let pool = nexus_postgres::pool(&target, pool_options.clone())?;
        let handle = runtime.handle().clone();
        let replica = match &options.read_replica_url {
            None => None,
            Some(url) => {
                let target = PgUrl::parse(url).map_err(|e| Error::invalid_url(e.to_string()))?;
                Some(Replica {
                    // A replica that does not answer must not hold reads for
                    // the primary's whole wait timeout: they go to the primary.
                    pool: nexus_postgres::pool(
                        &target,
                        PoolOptions {
                            wait_timeout: pool_options.wait_timeout.min(Duration::from_secs(1)),
                            ..pool_options
                        },
                    )?,
                    read_your_writes_micros: i64::try_from(
                        options
                            .read_your_writes
                            .max(options.max_replica_lag)
                            .as_micros(),
                    )
                    .unwrap_or(i64::MAX),
                    max_lag: options.max_replica_lag,
                    last_write: AtomicI64::new(0),
                    checked_at: AtomicI64::new(i64::MIN / 2),
                    fresh_until: AtomicI64::new(0),
                })
            }
        };
        let inner = Arc::new(Inner {
            pool,
            replica,
            last_ts: AtomicI64::new(i64::MIN),
            runtime: Some(runtime),
            target,
            retry: options.retry,
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
                nexus_postgres::migrate(&mut client).await?;
                Ok::<_, Error>(())
            })
            .await
            .map_err(join_err)??;
        Ok(store)
    }

    /// The change feed: the page of changes after position `after` (0: from
    /// the beginning), whole transactions of about `max_rows` rows, of all
    /// tenants, whoever wrote them. Ask again from `page.changes.through`;
    /// a reader that does so sees every committed change exactly once, in
    /// its latest state (see [`read_page`]); after a page that ended inside
    /// a transaction, with its `within`. Reads the primary.
    pub async fn changes_after(
        &self,
        after: i64,
        within: Option<&nexus_core::SnapshotCursor>,
        max_rows: usize,
    ) -> Result<FeedPage> {
        self.tenant_changes_after(None, after, within, max_rows)
            .await
    }

    /// [`changes_after`](Self::changes_after) of one tenant (`Some`): the
    /// rows of its files and chunks and their removals, read from the
    /// transactions that wrote them alone (see [`read_tenant_page`]).
    pub async fn tenant_changes_after(
        &self,
        tenant: Option<&str>,
        after: i64,
        within: Option<&nexus_core::SnapshotCursor>,
        max_rows: usize,
    ) -> Result<FeedPage> {
        let within = within.cloned();
        let tenant = tenant.map(str::to_string);
        self.run(Access::Read, move |inner, _| {
            let within = within.clone();
            let tenant = tenant.clone();
            async move {
                let mut pooled = inner.client().await?;
                let (client, cache) = pooled.parts();
                read_tenant_page(
                    client,
                    cache,
                    tenant.as_deref(),
                    after,
                    within.as_ref(),
                    max_rows,
                    &[],
                )
                .await
            }
        })
        .await
    }

    /// The state of every schema migration.
    pub async fn migration_status(&self) -> Result<Vec<nexus_core::MigrationStatus>> {
        self.run(Access::Write, |inner, _| async move {
            let mut client = inner.client().await?;
            Ok(Migrator::new(Dialect::Postgres)
                .status(&mut PgDriver::new(&mut client))
                .await?)
        })
        .await
    }

    /// Applies migrations up to `target` (head when `None`), under the advisory lock.
    pub async fn migrate_up(&self, target: Option<u32>) -> Result<Vec<u32>> {
        self.run(Access::Write, move |inner, _| async move {
            let mut client = inner.client().await?;
            Ok(Migrator::new(Dialect::Postgres)
                .up(&mut PgDriver::new(&mut client), target)
                .await?)
        })
        .await
    }

    /// Reverts migrations down to `to` (0 removes every table and all data).
    pub async fn migrate_down(&self, to: u32) -> Result<Vec<u32>> {
        self.run(Access::Write, move |inner, _| async move {
            let mut client = inner.client().await?;
            Ok(Migrator::new(Dialect::Postgres)
                .down(&mut PgDriver::new(&mut client), to)
                .await?)
        })
        .await
    }

    /// Runs `f` on the store's runtime and awaits it from any executor,
    /// trying again (bounded, with backoff) when it fails for a passing
    /// reason and trying again is safe: always for reads; for writes only
    /// when the failure proves nothing was committed (a server error such
    /// as a deadlock, a serialization failure, a terminated backend, or no
    /// connection at all), never when the connection broke with a write
    /// in flight.
    async fn run<T, F, Fut>(&self, access: Access, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(Arc<Inner>, Arc<str>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        let (inner, tenant) = (self.inner.clone(), self.tenant.clone());
        let handle = self
            .inner
            .runtime
            .as_ref()
            .expect("runtime lives as long as the store")
            .handle()
            .clone();
        InRuntime {
            handle,
            fut: Box::pin(async move {
                // The read-your-writes window runs from the end of a write
                // (its commit), and from its start for reads that overlap it.
                if access != Access::Read {
                    inner.note_write();
                }
                let backoff = inner.retry;
                let (result, _) = nexus_postgres::retry(
                    backoff,
                    |e: &Error| access.may_retry(e),
                    || f(inner.clone(), tenant.clone()),
                )
                .await;
                if access != Access::Read {
                    inner.note_write();
                }
                result.map_err(|e| access.settle(e))
            }),
        }
        .await
    }
}

/// A future polled on the caller's thread inside the store's runtime
/// context: its timers and new connections belong to the store's runtime
/// (whose threads drive the connections), whatever executor awaits it, and
/// no task hop is added to a call's latency.
struct InRuntime<F: std::future::Future> {
    handle: tokio::runtime::Handle,
    fut: std::pin::Pin<Box<F>>,
}

impl<F: std::future::Future> std::future::Future for InRuntime<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let this = self.get_mut();
        let _context = this.handle.enter();
        this.fut.as_mut().poll(cx)
    }
}

/// Whether a call only reads (and may be repeated freely), writes, or must
/// run at most once whatever happens (arbitrary SQL, which may commit part
/// of its work before failing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
    Once,
}

impl Access {
    fn may_retry(self, e: &Error) -> bool {
        match e {
            Error::Unavailable {
                outcome_unknown, ..
            } => match self {
                Access::Read => true,
                Access::Write => !outcome_unknown,
                Access::Once => false,
            },
            _ => false,
        }
    }

    /// A read cannot have applied anything, whatever the connection did.
    fn settle(self, e: Error) -> Error {
        match e {
            Error::Unavailable {
                context, source, ..
            } if self == Access::Read => Error::Unavailable {
                context,
                outcome_unknown: false,
                source,
            },
            e => e,
        }
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
    ($self:ident, $access:ident $op:ident ( $($arg:ident),* )) => {
        $self
            .run(Access::$access, move |inner, tenant| {
                $(let $arg = $arg.clone();)*
                async move { ops::$op(&inner, &tenant, $($arg),*).await }
            })
            .await
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
        let pre: Option<Precondition> = None;
        delegate!(self, Write put(file, pre))
    }
    async fn put_if(&self, file: NewFile, expected: Precondition) -> Result<FileRecord> {
        let pre = Some(expected);
        delegate!(self, Write put(file, pre))
    }
    async fn put_batch(&self, files: &[NewFile]) -> Result<Vec<FileRecord>> {
        let files = files.to_vec();
        delegate!(self, Write put_batch(files))
    }
    async fn get(&self, path: &str) -> Result<Option<FileRecord>> {
        let path = path.to_string();
        delegate!(self, Read get(path))
    }
    async fn exists(&self, path: &str) -> Result<bool> {
        Ok(self.get(path).await?.is_some())
    }
    async fn get_batch(&self, paths: &[String]) -> Result<HashMap<String, Option<FileRecord>>> {
        let paths = paths.to_vec();
        delegate!(self, Read get_batch(paths))
    }
    async fn delete(&self, path: &str) -> Result<Option<FileRecord>> {
        let path = path.to_string();
        delegate!(self, Write delete(path))
    }
    async fn delete_batch(&self, paths: &[String]) -> Result<usize> {
        let paths = paths.to_vec();
        delegate!(self, Write delete_batch(paths))
    }
    async fn list(&self, prefix: &str) -> Result<Vec<FileRecord>> {
        let prefix = prefix.to_string();
        delegate!(self, Read list(prefix))
    }
    async fn list_page(&self, opts: &ListOptions) -> Result<Page> {
        let opts = opts.clone();
        delegate!(self, Read list_page(opts))
    }
    async fn list_directories(&self, prefix: &str) -> Result<Vec<String>> {
        let prefix = prefix.to_string();
        delegate!(self, Read list_directories(prefix))
    }
    async fn is_directory(&self, path: &str) -> Result<bool> {
        let path = path.to_string();
        delegate!(self, Read is_directory(path))
    }
    async fn rename(&self, old: &str, new: &str) -> Result<usize> {
        let (old, new) = (old.to_string(), new.to_string());
        delegate!(self, Write rename(old, new))
    }
    async fn set_metadata(&self, path: &str, key: &str, value: &Value) -> Result<()> {
        let entries = vec![(path.to_string(), key.to_string(), value.clone())];
        delegate!(self, Write set_metadata(entries))
    }
    async fn set_metadata_batch(&self, entries: &[(String, String, Value)]) -> Result<()> {
        let entries = entries.to_vec();
        delegate!(self, Write set_metadata(entries))
    }
    async fn get_metadata(&self, path: &str, key: &str) -> Result<Option<Value>> {
        let (path, key) = (path.to_string(), key.to_string());
        delegate!(self, Read get_metadata(path, key))
    }
    async fn list_metadata(&self, path: &str) -> Result<BTreeMap<String, Value>> {
        let path = path.to_string();
        delegate!(self, Read list_metadata(path))
    }
    async fn delete_metadata(&self, path: &str, key: &str) -> Result<bool> {
        let (path, key) = (path.to_string(), key.to_string());
        delegate!(self, Write delete_metadata(path, key))
    }
    async fn find_by_metadata(
        &self,
        key: &str,
        value: Option<&Value>,
    ) -> Result<Vec<(String, Value)>> {
        let (key, value) = (key.to_string(), value.cloned());
        delegate!(self, Read find_by_metadata(key, value))
    }
    async fn list_versions(&self, path: &str) -> Result<Vec<VersionInfo>> {
        let path = path.to_string();
        delegate!(self, Read list_versions(path))
    }
    async fn get_version(&self, path: &str, version: u32) -> Result<Option<VersionInfo>> {
        let path = path.to_string();
        delegate!(self, Read get_version(path, version))
    }
    async fn rollback(&self, path: &str, version: u32) -> Result<FileRecord> {
        let path = path.to_string();
        delegate!(self, Write rollback(path, version))
    }
    async fn diff_versions(&self, path: &str, v1: u32, v2: u32) -> Result<VersionDiff> {
        let path = path.to_string();
        delegate!(self, Read diff_versions(path, v1, v2))
    }
    async fn add_chunk_ref(
        &self,
        content_hash: &str,
        size: u64,
        storage_path: &str,
    ) -> Result<Chunk> {
        let (hash, storage) = (content_hash.to_string(), storage_path.to_string());
        delegate!(self, Write add_chunk_ref(hash, size, storage))
    }
    async fn release_chunk_ref(&self, content_hash: &str, grace: Duration) -> Result<Chunk> {
        let hash = content_hash.to_string();
        delegate!(self, Write release_chunk_ref(hash, grace))
    }
    async fn get_chunk(&self, content_hash: &str) -> Result<Option<Chunk>> {
        let hash = content_hash.to_string();
        delegate!(self, Read get_chunk(hash))
    }
    async fn gc_candidates(&self, limit: usize) -> Result<Vec<Chunk>> {
        delegate!(self, Read gc_candidates(limit))
    }
    async fn remove_chunk(&self, content_hash: &str) -> Result<bool> {
        let hash = content_hash.to_string();
        delegate!(self, Write remove_chunk(hash))
    }
    async fn stats(&self) -> Result<Stats> {
        delegate!(self, Read stats())
    }
    async fn debug_query(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let sql = sql.to_string();
        delegate!(self, Once debug_query(sql))
    }
}
