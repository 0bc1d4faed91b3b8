//! The runner: all migration logic, over the primitives of a [`Driver`].

use std::fmt;
use std::future::Future;

use crate::{Dialect, Migration};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A migration recorded as applied in `_nexus_migrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    /// Its version.
    pub version: u32,
    /// Its name when it was applied.
    pub name: String,
    /// [`Migration::checksum`] when it was applied.
    pub checksum: String,
    /// When it was applied, microseconds since the Unix epoch (UTC).
    pub applied_at: i64,
}

/// Which way a migration runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Applying `up`.
    Up,
    /// Applying `down`.
    Down,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Up => "up",
            Direction::Down => "down",
        })
    }
}

/// The state of one migration in a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationStatus {
    /// Applied, and the embedded scripts still have the recorded checksum.
    Applied {
        /// The migration.
        migration: Migration,
        /// When it was applied (microseconds since the Unix epoch).
        applied_at: i64,
    },
    /// Applied, but the embedded scripts changed since: the runner refuses this database.
    Modified {
        /// The migration as embedded now.
        migration: Migration,
        /// The checksum recorded when it was applied.
        recorded_checksum: String,
    },
    /// Not applied yet.
    Pending {
        /// The migration.
        migration: Migration,
    },
    /// Recorded in the database but unknown to this binary (the database is newer).
    Unknown {
        /// The record.
        applied: AppliedMigration,
    },
}

/// What can go wrong while migrating. Each variant names the versions involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// An applied migration's scripts were edited after it was applied.
    #[error(
        "migration {version} ({name}) was edited after it was applied: recorded checksum {recorded}, embedded checksum {embedded}; restore the original file and add a new migration instead"
    )]
    ChecksumMismatch {
        /// The version.
        version: u32,
        /// Its name.
        name: String,
        /// The checksum recorded in the database.
        recorded: String,
        /// The checksum of the embedded scripts.
        embedded: String,
    },
    /// The database records a migration this binary does not have.
    #[error(
        "the database has migration {version} ({name}) applied, but this binary only knows versions up to {head}; use a newer nexus"
    )]
    UnknownApplied {
        /// The recorded version.
        version: u32,
        /// The recorded name.
        name: String,
        /// The newest version this binary knows.
        head: u32,
    },
    /// A migration is pending below one that is already applied.
    #[error(
        "migration {pending} is not applied but the later migration {applied} is; the database was migrated out of order"
    )]
    OutOfOrder {
        /// The pending version.
        pending: u32,
        /// The applied later version.
        applied: u32,
    },
    /// The requested target version does not exist.
    #[error("there is no migration version {target}; versions go from 0 (base) to {head}")]
    UnknownTarget {
        /// The requested version.
        target: u32,
        /// The newest version this binary knows.
        head: u32,
    },
    /// One migration failed; its transaction was rolled back.
    #[error(
        "migration {version} ({name}) failed going {direction}; applied before the failure: {applied:?}: {source}"
    )]
    Failed {
        /// The version that failed.
        version: u32,
        /// Its name.
        name: &'static str,
        /// Up or down.
        direction: Direction,
        /// Versions applied in the database when it failed (unchanged by the failure).
        applied: Vec<u32>,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// The driver failed outside a migration (reading state, locking).
    #[error("migration bookkeeping failed while {action}: {source}")]
    Driver {
        /// What the runner was doing.
        action: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
}

/// The primitives a database engine provides to the [`Migrator`].
///
/// Futures need not be `Send`; the embedded engine runs them in place.
pub trait Driver {
    /// The engine's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Runs a script of one or more statements.
    fn execute_batch(&mut self, sql: &str) -> impl Future<Output = Result<(), Self::Error>>;

    /// Reads `_nexus_migrations`, ascending by version. The table exists.
    fn applied(&mut self) -> impl Future<Output = Result<Vec<AppliedMigration>, Self::Error>>;

    /// Records `m` as applied (inside the current transaction).
    fn record(&mut self, m: &AppliedMigration) -> impl Future<Output = Result<(), Self::Error>>;

    /// Removes the record of `version` (inside the current transaction).
    fn unrecord(&mut self, version: u32) -> impl Future<Output = Result<(), Self::Error>>;

    /// Starts a transaction.
    fn begin(&mut self) -> impl Future<Output = Result<(), Self::Error>>;

    /// Commits the transaction.
    fn commit(&mut self) -> impl Future<Output = Result<(), Self::Error>>;

    /// Rolls the transaction back.
    fn rollback(&mut self) -> impl Future<Output = Result<(), Self::Error>>;

    /// Takes an exclusive lock so that two processes cannot migrate at once
    /// (an advisory lock on PostgreSQL). The default does nothing.
    fn lock(&mut self) -> impl Future<Output = Result<(), Self::Error>> {
        async { Ok(()) }
    }

    /// Releases [`Driver::lock`].
    fn unlock(&mut self) -> impl Future<Output = Result<(), Self::Error>> {
        async { Ok(()) }
    }

    /// The current time, microseconds since the Unix epoch (UTC).
    fn now_micros(&self) -> i64;
}

/// Applies and reverts the embedded migrations of one dialect.
#[derive(Debug, Clone, Copy)]
pub struct Migrator {
    dialect: Dialect,
    migrations: &'static [Migration],
}

impl Migrator {
    /// The migrator for the embedded migrations of `dialect`.
    pub fn new(dialect: Dialect) -> Self {
        Self::with_migrations(dialect, dialect.migrations())
    }

    /// A migrator over another list (ascending by version); for tests of the runner itself.
    pub fn with_migrations(dialect: Dialect, migrations: &'static [Migration]) -> Self {
        Self {
            dialect,
            migrations,
        }
    }

    /// The dialect.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The migrations, ascending.
    pub fn migrations(&self) -> &'static [Migration] {
        self.migrations
    }

    /// The newest version (0 if there are none).
    pub fn head(&self) -> u32 {
        self.migrations.last().map_or(0, |m| m.version)
    }

    fn find(&self, version: u32) -> Option<&'static Migration> {
        self.migrations.iter().find(|m| m.version == version)
    }

    /// The state of every migration, known or recorded, by version.
    pub async fn status<D: Driver>(
        &self,
        driver: &mut D,
    ) -> Result<Vec<MigrationStatus>, MigrateError> {
        let applied = self.read_applied(driver).await?;
        let mut out = Vec::new();
        for m in self.migrations {
            out.push(match applied.iter().find(|a| a.version == m.version) {
                Some(a) if a.checksum == m.checksum() => MigrationStatus::Applied {
                    migration: *m,
                    applied_at: a.applied_at,
                },
                Some(a) => MigrationStatus::Modified {
                    migration: *m,
                    recorded_checksum: a.checksum.clone(),
                },
                None => MigrationStatus::Pending { migration: *m },
            });
        }
        for a in applied {
            if self.find(a.version).is_none() {
                out.push(MigrationStatus::Unknown { applied: a });
            }
        }
        Ok(out)
    }

    /// The highest applied version (0 at base), after checking every record.
    pub async fn current<D: Driver>(&self, driver: &mut D) -> Result<u32, MigrateError> {
        let applied = self.read_applied(driver).await?;
        self.verify(&applied)?;
        Ok(applied.last().map_or(0, |a| a.version))
    }

    /// Applies pending migrations up to `target` (head when `None`), each in
    /// its own transaction, holding [`Driver::lock`]. Returns the versions
    /// applied, ascending; a target below the current version applies nothing.
    pub async fn up<D: Driver>(
        &self,
        driver: &mut D,
        target: Option<u32>,
    ) -> Result<Vec<u32>, MigrateError> {
        let target = target.unwrap_or(self.head());
        self.check_target(target)?;
        lock(driver).await?;
        let result = self.up_locked(driver, target).await;
        unlock(driver, result).await
    }

    /// Reverts applied migrations down to `to` (0 is base), newest first, each
    /// in its own transaction, holding [`Driver::lock`]. Returns the versions
    /// reverted, descending.
    pub async fn down<D: Driver>(&self, driver: &mut D, to: u32) -> Result<Vec<u32>, MigrateError> {
        self.check_target(to)?;
        lock(driver).await?;
        let result = self.down_locked(driver, to).await;
        unlock(driver, result).await
    }

    fn check_target(&self, target: u32) -> Result<(), MigrateError> {
        if target > self.head() {
            return Err(MigrateError::UnknownTarget {
                target,
                head: self.head(),
            });
        }
        Ok(())
    }

    async fn up_locked<D: Driver>(
        &self,
        driver: &mut D,
        target: u32,
    ) -> Result<Vec<u32>, MigrateError> {
        let applied = self.read_applied(driver).await?;
        self.verify(&applied)?;
        let mut applied_versions: Vec<u32> = applied.iter().map(|a| a.version).collect();
        let max_applied = applied_versions.last().copied().unwrap_or(0);
        let mut done = Vec::new();
        for m in self.migrations {
            if applied_versions.contains(&m.version) {
                continue;
            }
            if m.version < max_applied {
                return Err(MigrateError::OutOfOrder {
                    pending: m.version,
                    applied: max_applied,
                });
            }
            if m.version > target {
                break;
            }
            step(driver, m, Direction::Up, &applied_versions).await?;
            applied_versions.push(m.version);
            done.push(m.version);
        }
        Ok(done)
    }

    async fn down_locked<D: Driver>(
        &self,
        driver: &mut D,
        to: u32,
    ) -> Result<Vec<u32>, MigrateError> {
        let applied = self.read_applied(driver).await?;
        self.verify(&applied)?;
        let mut applied_versions: Vec<u32> = applied.iter().map(|a| a.version).collect();
        let mut done = Vec::new();
        for a in applied.iter().rev() {
            if a.version <= to {
                break;
            }
            let m = self.find(a.version).expect("verified above");
            step(driver, m, Direction::Down, &applied_versions).await?;
            applied_versions.pop();
            done.push(m.version);
        }
        Ok(done)
    }

    async fn read_applied<D: Driver>(
        &self,
        driver: &mut D,
    ) -> Result<Vec<AppliedMigration>, MigrateError> {
        driver
            .execute_batch(self.dialect.bookkeeping_ddl())
            .await
            .map_err(|e| driver_err("creating _nexus_migrations", e))?;
        let mut applied = driver
            .applied()
            .await
            .map_err(|e| driver_err("reading _nexus_migrations", e))?;
        applied.sort_by_key(|a| a.version);
        Ok(applied)
    }

    /// Refuses records this binary does not know and edited migrations.
    fn verify(&self, applied: &[AppliedMigration]) -> Result<(), MigrateError> {
        for a in applied {
            let Some(m) = self.find(a.version) else {
                return Err(MigrateError::UnknownApplied {
                    version: a.version,
                    name: a.name.clone(),
                    head: self.head(),
                });
            };
            let embedded = m.checksum();
            if embedded != a.checksum {
                return Err(MigrateError::ChecksumMismatch {
                    version: a.version,
                    name: m.name.to_string(),
                    recorded: a.checksum.clone(),
                    embedded,
                });
            }
        }
        Ok(())
    }
}

fn driver_err<E: std::error::Error + Send + Sync + 'static>(
    action: &'static str,
    e: E,
) -> MigrateError {
    MigrateError::Driver {
        action,
        source: Box::new(e),
    }
}

/// Applies one migration in one direction in its own transaction, recording
/// or unrecording it there too; on failure rolls back and names the versions.
async fn step<D: Driver>(
    driver: &mut D,
    m: &'static Migration,
    direction: Direction,
    applied: &[u32],
) -> Result<(), MigrateError> {
    let result = async {
        driver.begin().await?;
        match direction {
            Direction::Up => {
                driver.execute_batch(m.up).await?;
                let record = AppliedMigration {
                    version: m.version,
                    name: m.name.to_string(),
                    checksum: m.checksum(),
                    applied_at: driver.now_micros(),
                };
                driver.record(&record).await?;
            }
            Direction::Down => {
                driver.execute_batch(m.down).await?;
                driver.unrecord(m.version).await?;
            }
        }
        driver.commit().await
    }
    .await;
    if let Err(e) = result {
        let _ = driver.rollback().await;
        return Err(MigrateError::Failed {
            version: m.version,
            name: m.name,
            direction,
            applied: applied.to_vec(),
            source: Box::new(e),
        });
    }
    Ok(())
}

async fn lock<D: Driver>(driver: &mut D) -> Result<(), MigrateError> {
    driver
        .lock()
        .await
        .map_err(|e| driver_err("taking the migration lock", e))
}

/// Releases the lock whatever the outcome; the body's error wins over an unlock error.
async fn unlock<D: Driver>(
    driver: &mut D,
    result: Result<Vec<u32>, MigrateError>,
) -> Result<Vec<u32>, MigrateError> {
    let unlocked = driver.unlock().await;
    let done = result?;
    unlocked.map_err(|e| driver_err("releasing the migration lock", e))?;
    Ok(done)
}
