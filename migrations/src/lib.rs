//! Versioned, reversible schema migrations for the Nexus metadata store.
//!
//! The schema has exactly one source: the SQL files under `migrations/sqlite/`
//! and `migrations/postgres/`, named `NNNN_name.up.sql` / `NNNN_name.down.sql`.
//! They are embedded into the binary at build time (`include_str!`), so no file
//! system is needed at run time (the WebAssembly build relies on this).
//!
//! The [`Migrator`] holds the whole runner logic: it records applied versions
//! with their checksums in the table `_nexus_migrations`, applies each
//! migration in its own transaction, refuses to run when an applied migration
//! was edited afterwards, and migrates up to head or a version, down to a
//! version or to base, and reports status. A database engine plugs in by
//! implementing the few primitives of [`Driver`].
//!
//! ```
//! use nexus_migrations::{Dialect, Migrator};
//!
//! let migrator = Migrator::new(Dialect::Sqlite);
//! assert!(migrator.head() >= 1);
//! assert_eq!(migrator.migrations()[0].version, 1);
//! ```

#![warn(missing_docs)]

mod runner;

pub use runner::{AppliedMigration, Direction, Driver, MigrateError, MigrationStatus, Migrator};

use sha2::{Digest, Sha256};

/// One embedded migration: a version, a name and its two scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// The version number, from the file name (`0001_...` is 1).
    pub version: u32,
    /// The name, from the file name (`0001_initial...` is `initial`).
    pub name: &'static str,
    /// The script that migrates up to this version.
    pub up: &'static str,
    /// The script that undoes `up`.
    pub down: &'static str,
}

impl Migration {
    /// SHA-256, in hex, of both scripts: editing either after the migration
    /// was applied makes the runner refuse the database.
    pub fn checksum(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.up.as_bytes());
        hasher.update([0u8]);
        hasher.update(self.down.as_bytes());
        hex::encode(hasher.finalize())
    }
}

/// The SQL dialects the store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// SQLite files, written by the turso engine.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Dialect {
    /// The embedded migrations of this dialect, in ascending version order.
    pub fn migrations(self) -> &'static [Migration] {
        match self {
            Dialect::Sqlite => embedded::SQLITE,
            Dialect::Postgres => embedded::POSTGRES,
        }
    }

    /// The lower-case name used in folder names and messages.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }

    /// DDL of the bookkeeping table, idempotent.
    pub fn bookkeeping_ddl(self) -> &'static str {
        match self {
            Dialect::Sqlite => {
                "CREATE TABLE IF NOT EXISTS _nexus_migrations (\
                 version INTEGER PRIMARY KEY, name TEXT NOT NULL, \
                 checksum TEXT NOT NULL, applied_at INTEGER NOT NULL)"
            }
            Dialect::Postgres => {
                "CREATE TABLE IF NOT EXISTS _nexus_migrations (\
                 version integer PRIMARY KEY, name text NOT NULL, \
                 checksum text NOT NULL, applied_at bigint NOT NULL)"
            }
        }
    }
}

mod embedded {
    use super::Migration;
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_ascend_from_one_without_gaps() {
        let versions: Vec<u32> = Dialect::Sqlite
            .migrations()
            .iter()
            .map(|m| m.version)
            .collect();
        let expected: Vec<u32> = (1..=versions.len() as u32).collect();
        assert_eq!(versions, expected);
    }

    #[test]
    fn both_dialects_have_the_same_versions_and_names() {
        let names = |d: Dialect| {
            d.migrations()
                .iter()
                .map(|m| (m.version, m.name))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(Dialect::Sqlite), names(Dialect::Postgres));
        assert!(!Dialect::Postgres.migrations().is_empty());
    }

    #[test]
    fn checksum_changes_when_either_script_changes() {
        let m = Dialect::Sqlite.migrations()[0];
        let edited_up = Migration {
            up: "SELECT 1;",
            ..m
        };
        let edited_down = Migration {
            down: "SELECT 1;",
            ..m
        };
        assert_ne!(m.checksum(), edited_up.checksum());
        assert_ne!(m.checksum(), edited_down.checksum());
        assert_eq!(m.checksum(), m.checksum());
        assert_eq!(m.checksum().len(), 64);
    }

    #[test]
    fn every_script_is_non_empty() {
        for m in Dialect::Sqlite
            .migrations()
            .iter()
            .chain(Dialect::Postgres.migrations())
        {
            assert!(!m.up.trim().is_empty(), "{} up is empty", m.version);
            assert!(!m.down.trim().is_empty(), "{} down is empty", m.version);
        }
    }
}
