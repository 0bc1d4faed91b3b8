//! Opening a store: the builder, the shared per-file state, migrations on open.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use nexus_migrations::{Dialect, MigrationStatus, Migrator};
use turso_core::{Database, IO};

use crate::engine::{Engine, Seq};
use crate::error::{Error, Result};
use crate::pool::{Pool, ReadGuard, WriterGuard};
use crate::validate::validate_name;

/// The tenant used when none is chosen.
pub const DEFAULT_TENANT: &str = "default";

/// How long an open waits for another process that holds the database.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// A handle on a metadata store, scoped to one tenant.
///
/// Cheap to clone; clones share one set of connections, and so do all
/// handles opened on the same file in one process. Every method is `async`
/// and may be called from many tasks and threads at once: writes run on the
/// one writing connection, and those that arrive while a transaction is
/// being written are committed together in the next one (group commit: one
/// sync for many writes; each call returns once its write is durable, and a
/// write that fails fails alone). Reads run side by side on a few reading
/// connections ([`StoreBuilder::readers`]), next to the writes; each read
/// sees a committed state. The embedded engine runs a call in place, without
/// blocking on I/O readiness.
#[derive(Clone)]
pub struct Store {
    pub(crate) shared: Arc<Shared>,
    pub(crate) tenant: Arc<str>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("location", &self.shared.location)
            .field("tenant", &self.tenant)
            .finish()
    }
}

pub(crate) struct Shared {
    pub(crate) pool: Pool,
    pub(crate) location: String,
    /// Where writes are made durable after they commit (IndexedDB).
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    pub(crate) durable: Option<Arc<crate::web::IdbIO>>,
    // Keeps the database open for as long as a handle lives.
    _db: Arc<Database>,
}

/// Open file-backed stores of this process, by canonical path, so that a
/// second `open` of the same file joins the first (one writer per process).
static OPEN: Mutex<Option<HashMap<PathBuf, Weak<Shared>>>> = Mutex::new(None);

/// Where a store lives.
#[derive(Debug, Clone)]
enum Location {
    Memory,
    File(PathBuf),
    /// A database in the browser's Origin Private File System.
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    Opfs(String),
    /// A database persisted in the browser's IndexedDB.
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    IndexedDb(String),
}

/// Configures and opens a [`Store`].
///
/// ```
/// # pollster::block_on(async {
/// use nexus_core::{NewFile, Store};
///
/// let store = Store::builder().memory().tenant("acme").open().await?;
/// store.put(NewFile::new("/a.txt", "local", "/data/a.txt", 3)).await?;
/// assert!(store.exists("/a.txt").await?);
/// # Ok::<_, nexus_core::Error>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct StoreBuilder {
    location: Location,
    tenant: String,
    busy_timeout: Duration,
    io: Option<Arc<dyn IO>>,
    migrate: bool,
    readers: Option<usize>,
}

impl std::fmt::Debug for StoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreBuilder")
            .field("location", &self.location)
            .field("tenant", &self.tenant)
            .field("busy_timeout", &self.busy_timeout)
            .field("custom_io", &self.io.is_some())
            .field("migrate", &self.migrate)
            .field("readers", &self.readers)
            .finish()
    }
}

impl Default for StoreBuilder {
    fn default() -> Self {
        StoreBuilder {
            location: Location::Memory,
            tenant: DEFAULT_TENANT.to_string(),
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            io: None,
            migrate: true,
            readers: None,
        }
    }
}

impl StoreBuilder {
    /// A store in the SQLite-format file at `path` (created with its folder if missing).
    pub fn path(mut self, path: impl AsRef<Path>) -> Self {
        self.location = Location::File(path.as_ref().to_path_buf());
        self
    }

    /// A private in-memory store (the default).
    pub fn memory(mut self) -> Self {
        self.location = Location::Memory;
        self
    }

    /// A store persisted in the browser's Origin Private File System under
    /// `name` (in a dedicated Worker only; see [`crate::web::OpfsIO`]).
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    pub fn opfs(mut self, name: impl Into<String>) -> Self {
        self.location = Location::Opfs(name.into());
        self
    }

    /// A store kept in memory and persisted in the browser's IndexedDB
    /// under `name`, for where OPFS is missing (see
    /// [`crate::web::IdbIO`]): each write returns once IndexedDB committed it.
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    pub fn indexeddb(mut self, name: impl Into<String>) -> Self {
        self.location = Location::IndexedDb(name.into());
        self
    }

    /// The tenant of the returned handle (default [`DEFAULT_TENANT`]).
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = tenant.into();
        self
    }

    /// How long to wait for another process holding the file (default 30 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// The engine's I/O: files, clock and randomness. The default is the
    /// platform's file I/O for paths and memory for in-memory stores; the
    /// browser build passes its own.
    pub fn io(mut self, io: Arc<dyn IO>) -> Self {
        self.io = Some(io);
        self
    }

    /// Whether to apply pending migrations on open (default `true`). With
    /// `false` the schema is left as it is, for tools that inspect or migrate
    /// it themselves ([`Store::migration_status`], [`Store::migrate_up`]);
    /// record operations then fail if the schema is not at head.
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// How many connections read (at least 1). The default is the number of
    /// cores, at least 2 (1 in a browser, where nothing runs in parallel).
    /// Reads run side by side on them; a call that finds every reader busy
    /// waits for the first one released. Only the first open of a file in a
    /// process decides: later opens join its connections.
    pub fn readers(mut self, readers: usize) -> Self {
        self.readers = Some(readers.max(1));
        self
    }

    /// Opens the store and brings its schema to head.
    pub async fn open(self) -> Result<Store> {
        validate_name("tenant", &self.tenant)?;
        let shared = match &self.location {
            Location::Memory => Arc::new(self.open_shared(":memory:".to_string()).await?),
            Location::File(path) => self.open_file(path).await?,
            #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
            Location::Opfs(name) => {
                self.open_in_browser("opfs", name, || async {
                    let io: Arc<dyn IO> = Arc::new(crate::web::OpfsIO::open(name).await?);
                    Ok((io, None))
                })
                .await?
            }
            #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
            Location::IndexedDb(name) => {
                self.open_in_browser("indexeddb", name, || async {
                    let idb = Arc::new(crate::web::IdbIO::open(name).await?);
                    Ok((idb.clone() as Arc<dyn IO>, Some(idb)))
                })
                .await?
            }
        };
        Ok(Store {
            shared,
            tenant: Arc::from(self.tenant.as_str()),
        })
    }

    async fn open_file(&self, path: &Path) -> Result<Arc<Shared>> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| Error::Io {
                action: "creating the folder of",
                path: path.display().to_string(),
                source,
            })?;
        }
        let key = canonical(path);
        if let Some(shared) = registry_get(&key) {
            return Ok(shared);
        }
        let location = path.to_str().ok_or_else(|| {
            Error::invalid(
                "database path",
                &path.display().to_string(),
                "must be UTF-8",
            )
        })?;
        let shared = Arc::new(self.open_shared(location.to_string()).await?);
        // Two tasks may race to open the same file: the engine shares the
        // database between them; keep the first handle registered.
        Ok(registry_put(key, shared))
    }

    /// Opens the browser database `<scheme>:name` once per context (a
    /// second open joins the first): on the I/O that `open_io` opens, and,
    /// for IndexedDB, making what opening wrote (a new schema) durable.
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    async fn open_in_browser<F, Fut>(
        &self,
        scheme: &str,
        name: &str,
        open_io: F,
    ) -> Result<Arc<Shared>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(Arc<dyn IO>, Option<Arc<crate::web::IdbIO>>)>>,
    {
        crate::web::validate_db_name(name)?;
        let location = format!("{scheme}:{name}");
        let key = PathBuf::from(&location);
        if let Some(shared) = registry_get(&key) {
            return Ok(shared);
        }
        let (io, durable) = open_io().await?;
        let mut builder = self.clone();
        builder.io = Some(io);
        let mut shared = builder.open_shared(name.to_string()).await?;
        shared.location = location;
        if let Some(idb) = &durable {
            idb.persist().await?;
            shared.pool.watchers.hold_until_durable();
        }
        shared.durable = durable;
        Ok(registry_put(key, Arc::new(shared)))
    }

    async fn open_shared(&self, location: String) -> Result<Shared> {
        let io = match &self.io {
            Some(io) => io.clone(),
            None => default_io(&location)?,
        };
        let db = Engine::open_database(&io, &location, self.busy_timeout)?;
        let readers = self.readers.unwrap_or_else(default_readers);
        let pool = Pool::connect(&db, io, &location, self.busy_timeout, readers)?;
        {
            let mut all = pool.exclusive().await;
            // Also without migrating: `nexus migrate` would otherwise give
            // the file the store's bookkeeping, then its tables.
            refuse_foreign(&mut all.writer, &location)?;
            if self.migrate
                && !Migrator::new(Dialect::Sqlite)
                    .up(&mut *all.writer, None)
                    .await?
                    .is_empty()
            {
                all.reconnect()?;
            }
        }
        Ok(Shared {
            pool,
            location,
            #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
            durable: None,
            _db: db,
        })
    }
}

/// Refuses a database that holds tables but none of a store's
/// (`_nexus_migrations`): another program's SQLite file, opened by mistake,
/// is not given the store's tables (its own are left as they are; the
/// engine has switched the file to WAL mode by then).
fn refuse_foreign(e: &mut Engine, location: &str) -> Result<()> {
    let tables = e.query(
        "SELECT name FROM sqlite_schema WHERE type = 'table'",
        &[],
        |r| r.text(0),
    )?;
    let theirs: Vec<&str> = tables
        .iter()
        .map(String::as_str)
        .filter(|t| !t.starts_with("sqlite_"))
        .collect();
    if theirs.is_empty() || theirs.contains(&"_nexus_migrations") {
        return Ok(());
    }
    Err(Error::invalid(
        "database",
        location,
        format!(
            "is not a store: an SQLite database of other tables ({}); nothing was added to it",
            theirs.join(", ")
        ),
    ))
}

/// The number of cores, at least 2; 1 where there are no threads.
fn default_readers() -> usize {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    return 1;
    #[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
    return std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
}

fn default_io(location: &str) -> Result<Arc<dyn IO>> {
    if location == ":memory:" {
        #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
        return Ok(Arc::new(crate::web::WebMemoryIO::new()));
        #[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
        return Ok(Arc::new(turso_core::MemoryIO::new()));
    }
    #[cfg(not(target_family = "wasm"))]
    {
        let io =
            turso_core::PlatformIO::new().map_err(|e| Error::engine("starting file I/O", e))?;
        Ok(Arc::new(io))
    }
    #[cfg(target_family = "wasm")]
    {
        Err(Error::invalid(
            "database path",
            location,
            "there is no file system here; pass an IO with StoreBuilder::io",
        ))
    }
}

fn canonical(path: &Path) -> PathBuf {
    // The file may not exist yet; canonicalize its folder instead.
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            parent
                .canonicalize()
                .map(|p| p.join(name))
                .unwrap_or_else(|_| path.to_path_buf())
        }
        _ => path.to_path_buf(),
    }
}

fn registry_get(key: &Path) -> Option<Arc<Shared>> {
    let guard = OPEN.lock().unwrap_or_else(|e| e.into_inner());
    guard.as_ref()?.get(key)?.upgrade()
}

fn registry_put(key: PathBuf, shared: Arc<Shared>) -> Arc<Shared> {
    let mut guard = OPEN.lock().unwrap_or_else(|e| e.into_inner());
    let map = guard.get_or_insert_with(HashMap::new);
    map.retain(|_, weak| weak.strong_count() > 0);
    if let Some(existing) = map.get(&key).and_then(Weak::upgrade) {
        return existing;
    }
    map.insert(key, Arc::downgrade(&shared));
    shared
}

impl Store {
    /// Configures a store; see [`StoreBuilder`].
    pub fn builder() -> StoreBuilder {
        StoreBuilder::default()
    }

    /// Opens (creating if needed) the store in the file at `path`, default tenant.
    pub async fn open(path: impl AsRef<Path>) -> Result<Store> {
        Store::builder().path(path).open().await
    }

    /// A new private in-memory store, default tenant.
    pub async fn memory() -> Result<Store> {
        Store::builder().memory().open().await
    }

    /// A handle on the same store scoped to `tenant`.
    pub fn with_tenant(&self, tenant: &str) -> Result<Store> {
        validate_name("tenant", tenant)?;
        Ok(Store {
            shared: self.shared.clone(),
            tenant: Arc::from(tenant),
        })
    }

    /// The tenant of this handle.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Where the store lives (`:memory:` or the file path).
    pub fn location(&self) -> &str {
        &self.shared.location
    }

    /// Runs `f` as one write transaction's worth of work, with its change
    /// sequence number, in the next group commit (see
    /// [`crate::group_commit`]); returns once it is durable. `f` may run
    /// more than once (only the last run counts) and after the caller is
    /// gone, so it owns what it uses.
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        f: impl FnMut(&mut Engine, Seq) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let value = self.shared.pool.write(f).await?;
        self.durable().await?;
        Ok(value)
    }

    /// Makes what was committed durable where committing alone does not
    /// (IndexedDB: see [`crate::web::IdbIO`]); returns at once elsewhere.
    /// Every call that writes awaits it before it answers.
    #[cfg_attr(
        not(all(target_arch = "wasm32", target_os = "unknown")),
        allow(clippy::unused_async)
    )]
    pub(crate) async fn durable(&self) -> Result<()> {
        #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
        if let Some(idb) = &self.shared.durable {
            // Change events wait for the persist that makes them true.
            let watchers = &self.shared.pool.watchers;
            let (held, persisted) = idb.persist_covering(|| watchers.take_held()).await;
            persisted?;
            held.deliver();
        }
        Ok(())
    }

    /// The writing connection for the caller alone, outside the group
    /// commit (change-file imports, raw queries).
    pub(crate) async fn writer(&self) -> WriterGuard<'_> {
        self.shared.pool.writer().await
    }

    /// A reading connection. A call that runs more than one statement runs
    /// them in [`Engine::read`], so that they see one snapshot.
    pub(crate) async fn reader(&self) -> ReadGuard<'_> {
        self.shared.pool.reader().await
    }

    /// How many connections read (see [`StoreBuilder::readers`]).
    pub fn readers(&self) -> usize {
        self.shared.pool.readers()
    }

    /// The state of every schema migration.
    pub async fn migration_status(&self) -> Result<Vec<MigrationStatus>> {
        let mut engine = self.writer().await;
        Ok(Migrator::new(Dialect::Sqlite).status(&mut *engine).await?)
    }

    /// Applies migrations up to `target` (head when `None`); returns those
    /// applied. Other calls on the store wait until it is done; every
    /// connection reconnects afterwards, so that none keeps the old schema.
    pub async fn migrate_up(&self, target: Option<u32>) -> Result<Vec<u32>> {
        let mut all = self.shared.pool.exclusive().await;
        let done = Migrator::new(Dialect::Sqlite)
            .up(&mut *all.writer, target)
            .await;
        all.reconnect()?;
        drop(all);
        self.durable().await?;
        Ok(done?)
    }

    /// Reverts migrations down to `to` (0 is base, which removes every table
    /// and all data); returns those reverted. The store is unusable for
    /// records until migrated up again.
    pub async fn migrate_down(&self, to: u32) -> Result<Vec<u32>> {
        let mut all = self.shared.pool.exclusive().await;
        let done = Migrator::new(Dialect::Sqlite)
            .down(&mut *all.writer, to)
            .await;
        all.reconnect()?;
        drop(all);
        self.durable().await?;
        Ok(done?)
    }

    /// Applies `migrator`'s migrations (a list other than the embedded one)
    /// on this store's connection; for tests of the runner.
    #[doc(hidden)]
    pub async fn debug_migrate_with(&self, migrator: Migrator) -> Result<Vec<u32>> {
        let mut all = self.shared.pool.exclusive().await;
        let done = migrator.up(&mut *all.writer, None).await;
        all.reconnect()?;
        drop(all);
        self.durable().await?;
        Ok(done?)
    }

    /// Checks the structure of the database file (`PRAGMA
    /// integrity_check`): the problems found, none when it is sound.
    pub async fn integrity_check(&self) -> Result<Vec<String>> {
        let rows = self.debug_query("PRAGMA integrity_check").await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| row.into_iter().next().flatten())
            .filter(|line| line != "ok")
            .collect())
    }

    /// Runs raw SQL against the store's writing connection. For tests and
    /// tools that inspect the file (schema dumps, integrity checks); returns
    /// every row with each value rendered as text (`NULL` as `None`).
    #[doc(hidden)]
    pub async fn debug_query(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let rows = self.writer().await.debug_query(sql);
        // What statements before a failing one committed is kept too.
        self.durable().await?;
        let rows = rows?;
        Ok(rows)
    }
}
