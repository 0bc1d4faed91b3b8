//! PostgreSQL for Nexus: the one layer that both the PostgreSQL store
//! (`nexus-pg`) and the sync (`nexus-sync`) stand on.
//!
//! - [`PgUrl`]: a URL whose `Debug`, `Display` and parse errors never show
//!   the password; [`PgUrl::connect`] opens a connection named by its
//!   caller (`application_name`), with TLS through rustls as libpq does it.
//! - [`pool`] / [`get`]: a deadpool pool of such connections.
//! - [`migrate`] / [`PgDriver`]: the PostgreSQL dialect of
//!   `nexus-migrations`, under an advisory lock.
//! - [`codec`]: times and ids between the store's types and PostgreSQL's.
//! - [`Error`]: one error type that keeps the server's SQLSTATE and the
//!   driver's error; [`Error::is_retryable`] and [`Error::outcome_unknown`]
//!   say whether trying again may help and whether it is safe; it converts
//!   into the store's error (`Unavailable` when retryable) keeping itself
//!   as the source ([`sqlstate_of`] finds the SQLSTATE again).
//! - [`retry`]: bounded retries with exponential backoff.
//!
//! ```no_run
//! # async fn demo() -> nexus_postgres::Result<()> {
//! use nexus_postgres::{PgUrl, PoolOptions};
//!
//! let url = PgUrl::parse("postgresql://nexus:secret@localhost/nexus")?;
//! println!("connecting to {url}"); // postgresql://nexus:***@localhost/nexus
//! let pool = nexus_postgres::pool(&url, PoolOptions {
//!     application_name: "my-app".into(),
//!     ..Default::default()
//! })?;
//! let mut client = nexus_postgres::get(&pool).await?;
//! nexus_postgres::migrate(&mut client).await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod codec;
mod error;
mod migrate;
mod pool;
mod retry;
mod tls;
mod url;

pub use error::{Error, Result, describe, is_retryable_pg, is_retryable_sqlstate, sqlstate_of};
pub use migrate::{PgDriver, migrate};
pub use pool::{
    Cached, Manager, PgClient, Pool, PoolOptions, PooledClient, StatementCache, get, pool,
};
pub use retry::{Backoff, retry};
pub use url::{PgUrl, redact};

/// The select list that makes the rest of a transaction plan each prepared
/// statement once per connection (a generic plan, `plan_cache_mode =
/// force_generic_plan`) with sequential scans off (`enable_seqscan`), for
/// transactions whose every statement looks rows up by key: a sync
/// apply's and a change-feed page's. Planning each statement for its
/// parameters was about a third of PostgreSQL's time under many small
/// pushes and pulls; a generic plan made while a new database's tables
/// were small (before its first `ANALYZE`) would otherwise scan them whole
/// for as long as it is kept. A string literal, so that callers can
/// `concat!` it into the statement they run first. Not for a bulk load,
/// whose rebuilt foreign keys and feed notes read whole tables.
#[macro_export]
macro_rules! plan_once {
    () => {
        "set_config('plan_cache_mode', 'force_generic_plan', true), \
         set_config('enable_seqscan', 'off', true)"
    };
}

/// [`plan_once!`] as a statement of its own.
pub const PLAN_ONCE: &str = concat!("SELECT ", plan_once!());
