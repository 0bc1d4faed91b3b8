//! A pool of connections (deadpool), each named by its caller.

use std::time::Duration;

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
    type Type = tokio_postgres::Client;
    type Error = Error;

    async fn create(&self) -> Result<tokio_postgres::Client> {
        self.url
            .connect(
                &self.options.application_name,
                Some(self.options.statement_timeout),
            )
            .await
    }

    async fn recycle(
        &self,
        client: &mut tokio_postgres::Client,
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
