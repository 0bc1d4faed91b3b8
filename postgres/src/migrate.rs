//! The migrations driver for PostgreSQL: `nexus-migrations` runs its
//! dialect's scripts through it, under an advisory lock, so that many
//! processes opening one database migrate it once.

use std::fmt;

use nexus_migrations::{AppliedMigration, Dialect, Driver, Migrator};
use tokio_postgres::Client;

use crate::error::{Error, Result};

/// The key of the advisory lock held while migrating the schema.
const MIGRATION_LOCK: i64 = 0x6e65_7875_735f_6d67; // "nexus_mg"

/// Drives `nexus-migrations` on a PostgreSQL connection.
pub struct PgDriver<'a> {
    client: &'a mut Client,
}

impl<'a> PgDriver<'a> {
    /// A driver on `client`.
    pub fn new(client: &'a mut Client) -> Self {
        PgDriver { client }
    }
}

impl fmt::Debug for PgDriver<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PgDriver")
    }
}

impl Driver for PgDriver<'_> {
    type Error = Error;

    async fn execute_batch(&mut self, sql: &str) -> Result<(), Self::Error> {
        self.client
            .batch_execute(sql)
            .await
            .map_err(Error::pg("running a migration script"))
    }

    async fn applied(&mut self) -> Result<Vec<AppliedMigration>, Self::Error> {
        let rows = self
            .client
            .query("SELECT version, name, checksum, applied_at FROM _nexus_migrations ORDER BY version", &[])
            .await
            .map_err(Error::pg("reading the applied migrations"))?;
        Ok(rows
            .iter()
            .map(|r| AppliedMigration {
                version: r.get::<_, i32>(0) as u32,
                name: r.get(1),
                checksum: r.get(2),
                applied_at: r.get(3),
            })
            .collect())
    }

    async fn record(&mut self, m: &AppliedMigration) -> Result<(), Self::Error> {
        self.client
            .execute(
                "INSERT INTO _nexus_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)",
                &[&(m.version as i32), &m.name, &m.checksum, &m.applied_at],
            )
            .await
            .map(drop)
            .map_err(Error::pg("recording a migration"))
    }

    async fn unrecord(&mut self, version: u32) -> Result<(), Self::Error> {
        self.client
            .execute(
                "DELETE FROM _nexus_migrations WHERE version = $1",
                &[&(version as i32)],
            )
            .await
            .map(drop)
            .map_err(Error::pg("unrecording a migration"))
    }

    async fn begin(&mut self) -> Result<(), Self::Error> {
        self.client
            .batch_execute("BEGIN")
            .await
            .map_err(Error::pg("starting a migration"))
    }

    async fn commit(&mut self) -> Result<(), Self::Error> {
        self.client
            .batch_execute("COMMIT")
            .await
            .map_err(Error::pg("committing a migration"))
    }

    async fn rollback(&mut self) -> Result<(), Self::Error> {
        self.client
            .batch_execute("ROLLBACK")
            .await
            .map_err(Error::pg("rolling back a migration"))
    }

    async fn lock(&mut self) -> Result<(), Self::Error> {
        self.client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map(drop)
            .map_err(Error::pg("taking the migration lock"))
    }

    async fn unlock(&mut self) -> Result<(), Self::Error> {
        self.client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await
            .map(drop)
            .map_err(Error::pg("releasing the migration lock"))
    }

    fn now_micros(&self) -> i64 {
        nexus_core::Timestamp::now().as_micros()
    }
}

/// Brings the database's schema to head (under the advisory lock); returns the versions applied.
pub async fn migrate(client: &mut Client) -> Result<Vec<u32>> {
    Ok(Migrator::new(Dialect::Postgres)
        .up(&mut PgDriver::new(client), None)
        .await?)
}
