//! Counts describing a store.

use crate::engine::text;
use crate::error::Result;
use crate::model::Stats;
use crate::store::Store;

impl Store {
    /// Counts for this handle's tenant.
    pub async fn stats(&self) -> Result<Stats> {
        let mut e = self.reader().await;
        let t = &*self.tenant;
        e.read(|e| {
            // The live files and their bytes in one pass; the bytes summed
            // in two halves of 32 bits: one SUM of sizes near 2^63
            // overflows SQLite's integer (an error, not a wrong answer).
            let (files, high, low) = e
                .query_one(
                    "SELECT COUNT(*), COALESCE(SUM(size_bytes >> 32), 0), COALESCE(SUM(size_bytes & 4294967295), 0) \
                     FROM file_paths WHERE tenant_id = ?1 AND deleted_at IS NULL",
                    &[text(t)],
                    |r| Ok((r.int(0)?, r.int(1)?, r.int(2)?)),
                )?
                .unwrap_or((0, 0, 0));
            let total_bytes = u64::try_from((i128::from(high) << 32) + i128::from(low)).unwrap_or(u64::MAX);
            let mut count = |sql: &'static str| -> Result<i64> {
                Ok(e.query_one(sql, &[text(t)], |r| r.int(0))?.unwrap_or(0))
            };
            let deleted_files = count("SELECT COUNT(*) FROM file_paths WHERE tenant_id = ?1 AND deleted_at IS NOT NULL")?;
            let metadata_entries = count(
                "SELECT COUNT(*) FROM file_metadata m JOIN file_paths p ON p.path_id = m.path_id \
                 WHERE p.tenant_id = ?1 AND p.deleted_at IS NULL",
            )?;
            let versions = count(
                "SELECT COUNT(*) FROM version_history v JOIN file_paths p ON p.path_id = v.path_id \
                 WHERE p.tenant_id = ?1 AND p.deleted_at IS NULL",
            )?;
            let chunks = count("SELECT COUNT(*) FROM content_chunks WHERE tenant_id = ?1")?;
            let change_seq = e
                .query_one("SELECT change_seq FROM nexus_state WHERE id = 1", &[], |r| r.int(0))?
                .unwrap_or(0);
            let schema_version = e
                .query_one("SELECT COALESCE(MAX(version), 0) FROM _nexus_migrations", &[], |r| r.int(0))?
                .unwrap_or(0);
            let n = |v: i64| u64::try_from(v).unwrap_or(0);
            Ok(Stats {
                tenant: t.to_string(),
                files: n(files),
                total_bytes,
                deleted_files: n(deleted_files),
                metadata_entries: n(metadata_entries),
                versions: n(versions),
                chunks: n(chunks),
                change_seq,
                schema_version: u32::try_from(schema_version).unwrap_or(0),
            })
        })
    }
}
