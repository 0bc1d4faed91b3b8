//! Fixtures shared by the integration tests.

use std::ops::Deref;
use std::path::PathBuf;

use nexus_core::Store;

/// A fresh store, and whatever must live as long as it.
pub struct Fixture {
    pub store: Store,
    pub dir: Option<tempfile::TempDir>,
}

impl Fixture {
    pub async fn memory() -> Fixture {
        Fixture {
            store: Store::memory().await.unwrap(),
            dir: None,
        }
    }

    pub async fn file() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("nexus.db")).await.unwrap();
        Fixture {
            store,
            dir: Some(dir),
        }
    }

    /// The store behind the backend-neutral interface.
    pub fn dyn_store(&self) -> nexus_core::DynStore {
        std::sync::Arc::new(self.store.clone())
    }

    #[allow(dead_code)]
    pub fn db_path(&self) -> PathBuf {
        self.dir
            .as_ref()
            .expect("a file fixture")
            .path()
            .join("nexus.db")
    }
}

impl Deref for Fixture {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.store
    }
}

/// A fresh database on the test PostgreSQL, with a `nexus-pg` store on it.
pub struct PgFixture {
    pub store: nexus_pg::PgStore,
    // Dropped after the store: drops the database.
    _db: nexus_tests::pg::TestDb,
}

impl PgFixture {
    pub async fn new() -> PgFixture {
        let db = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(nexus_tests::pg::database("conformance"));
        let store = nexus_pg::PgStore::connect(&db.url, nexus_pg::PgOptions::default())
            .await
            .unwrap();
        PgFixture { store, _db: db }
    }

    /// The store behind the backend-neutral interface.
    pub fn dyn_store(&self) -> nexus_core::DynStore {
        std::sync::Arc::new(self.store.clone())
    }

    /// The database's URL (superuser).
    pub fn url(&self) -> &str {
        &self._db.url
    }
}
