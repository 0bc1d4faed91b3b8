//! A pool of connections (deadpool), each named by its caller.

use std::time::Duration;

use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row, Statement};

use crate::error::{Error, Result};
use crate::url::PgUrl;

/// How a [`Pool`] is sized and what its connections say about themselves.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Connections at most (default 16).
    pub size: usize,
    /// How long [`get`] waits for a free connection, or for a new one to be
    /// made (default 30 s).
    pub wait_timeout: Duration,
    /// `statement_timeout` of every connection (default 60 s), set at
    /// connect time, so it costs no round trip.
    pub statement_timeout: Duration,
    /// `application_name` of every connection, as `pg_stat_activity` shows
    /// it (default `nexus`), unless the URL names one.
    pub application_name: String,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            size: 16,
            wait_timeout: Duration::from_secs(30),
            statement_timeout: Duration::from_secs(60),
            application_name: "nexus".to_string(),
        }
    }
}

/// Makes and checks the pool's connections.
#[derive(Debug)]
pub struct Manager {
    url: PgUrl,
    options: PoolOptions,
}

impl deadpool::managed::Manager for Manager {
    type Type = PgClient;
    type Error = Error;

    async fn create(&self) -> Result<PgClient> {
        let client = self
            .url
            .connect(
                &self.options.application_name,
                Some(self.options.statement_timeout),
            )
            .await?;
        Ok(PgClient {
            client,
            statements: StatementCache::default(),
        })
    }

    async fn recycle(
        &self,
        client: &mut PgClient,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<Error> {
        if client.is_closed() {
            return Err(deadpool::managed::RecycleError::message(
                "connection closed",
            ));
        }
        Ok(())
    }
}

/// A pool of connections to one database.
pub type Pool = deadpool::managed::Pool<Manager>;

/// A connection taken from a [`Pool`]; it goes back when dropped.
pub type PooledClient = deadpool::managed::Object<Manager>;

/// A pool for `url`. Connections are made on demand, on the tokio runtime
/// of the caller of [`get`].
pub fn pool(url: &PgUrl, options: PoolOptions) -> Result<Pool> {
    let size = options.size.max(1);
    let wait = options.wait_timeout;
    Pool::builder(Manager {
        url: url.clone(),
        options,
    })
    .max_size(size)
    // The connection used last goes out first: a client that makes one
    // call after another keeps one warm server process (FIFO would rotate
    // through every idle connection, each a process gone cold).
    .queue_mode(deadpool::managed::QueueMode::Lifo)
    .wait_timeout(Some(wait))
    .create_timeout(Some(wait))
    .runtime(deadpool::Runtime::Tokio1)
    .build()
    .map_err(|e| Error::Pool {
        reason: format!("building the connection pool: {e}"),
    })
}

/// A connection of `pool`: a free one, else a new one, waiting at most the
/// pool's wait timeout.
pub async fn get(pool: &Pool) -> Result<PooledClient> {
    use deadpool::managed::PoolError;
    pool.get().await.map_err(|e| match e {
        PoolError::Backend(e) => e,
        PoolError::Timeout(_) => Error::PoolTimeout {
            waited: pool.timeouts().wait.unwrap_or_default(),
            size: pool.status().max_size,
        },
        other => Error::Pool {
            reason: other.to_string(),
        },
    })
}

/// A connection of a [`Pool`] and the statements prepared on it. Through
/// [`PgClient::cached`] (or [`Cached::new`] on a transaction of it) a
/// statement is prepared once per connection and then costs one round
/// trip (Bind/Execute) instead of two (Parse/Describe first).
#[derive(Debug)]
pub struct PgClient {
    client: tokio_postgres::Client,
    statements: StatementCache,
}

impl PgClient {
    /// Runs statements on the connection itself (each in its own
    /// transaction, unless one was begun with SQL).
    pub fn cached(&self) -> Cached<'_, tokio_postgres::Client> {
        Cached::new(&self.client, &self.statements)
    }

    /// The connection and its statement cache apart, so that a transaction
    /// (which borrows the connection) can use the cache:
    /// `let (c, cache) = pc.parts(); let tx = c.transaction().await?; Cached::new(&tx, cache)`.
    pub fn parts(&mut self) -> (&mut tokio_postgres::Client, &StatementCache) {
        (&mut self.client, &self.statements)
    }
}

impl std::ops::Deref for PgClient {
    type Target = tokio_postgres::Client;
    fn deref(&self) -> &tokio_postgres::Client {
        &self.client
    }
}

impl std::ops::DerefMut for PgClient {
    fn deref_mut(&mut self) -> &mut tokio_postgres::Client {
        &mut self.client
    }
}

/// Statements prepared on one connection, by SQL text. The set of texts
/// a program sends is small and fixed, so the cache is not bounded.
#[derive(Debug, Default)]
pub struct StatementCache(std::sync::Mutex<std::collections::HashMap<String, Statement>>);

impl StatementCache {
    /// The statement for `sql`, prepared through `c` the first time.
    pub async fn get(
        &self,
        c: &impl GenericClient,
        sql: &str,
    ) -> std::result::Result<Statement, tokio_postgres::Error> {
        if let Some(s) = self.0.lock().expect("not poisoned").get(sql) {
            return Ok(s.clone());
        }
        let s = c.prepare(sql).await?;
        self.0
            .lock()
            .expect("not poisoned")
            .insert(sql.to_string(), s.clone());
        Ok(s)
    }
}

/// A client or transaction whose statements come from its connection's
/// [`StatementCache`]. The methods are tokio-postgres's, with SQL text.
#[derive(Debug)]
pub struct Cached<'a, C> {
    client: &'a C,
    cache: &'a StatementCache,
}

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

impl<'a, C: GenericClient + Sync> Cached<'a, C> {
    /// `client` (a connection of the pool, or a transaction on it) with the
    /// connection's cache.
    pub fn new(client: &'a C, cache: &'a StatementCache) -> Self {
        Cached { client, cache }
    }

    /// The client underneath, for what is not cached.
    pub fn client(&self) -> &C {
        self.client
    }

    /// The prepared statement of `sql` (prepared now if it is not yet):
    /// a caller that sends several statements at once prepares them first,
    /// so that each is sent when its future is first polled, in order.
    pub async fn prepare(
        &self,
        sql: &str,
    ) -> std::result::Result<Statement, tokio_postgres::Error> {
        self.cache.get(self.client, sql).await
    }

    /// Every row.
    pub async fn query(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> std::result::Result<Vec<Row>, tokio_postgres::Error> {
        let s = self.cache.get(self.client, sql).await?;
        self.client.query(&s, params).await
    }

    /// Exactly one row.
    pub async fn query_one(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> std::result::Result<Row, tokio_postgres::Error> {
        let s = self.cache.get(self.client, sql).await?;
        self.client.query_one(&s, params).await
    }

    /// At most one row.
    pub async fn query_opt(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> std::result::Result<Option<Row>, tokio_postgres::Error> {
        let s = self.cache.get(self.client, sql).await?;
        self.client.query_opt(&s, params).await
    }

    /// The number of rows changed.
    pub async fn execute(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> std::result::Result<u64, tokio_postgres::Error> {
        let s = self.cache.get(self.client, sql).await?;
        self.client.execute(&s, params).await
    }
}
