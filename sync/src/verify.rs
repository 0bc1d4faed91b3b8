//! `verify`: row counts and an order-independent checksum per table, over
//! a canonical encoding of each row, computed on both sides.

use std::collections::HashSet;

use futures_util::{TryStreamExt, pin_mut};
use nexus_core::{CHANGE_TABLES, Changes, canonical_json};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio_postgres::types::ToSql;

use crate::error::{Error, Result};
use crate::replicate::Replicator;

/// The comparison of one table.
#[derive(Debug, Clone, Serialize)]
pub struct TableCheck {
    /// The table.
    pub table: &'static str,
    /// Rows in the store.
    pub source_rows: u64,
    /// Rows in PostgreSQL.
    pub target_rows: u64,
    /// Order-independent checksum of the store's rows (hex).
    pub source_checksum: String,
    /// The same over PostgreSQL's rows.
    pub target_checksum: String,
}

impl TableCheck {
    /// Whether both sides hold the same rows.
    pub fn equal(&self) -> bool {
        self.source_rows == self.target_rows && self.source_checksum == self.target_checksum
    }
}

/// The comparison of every replicated table.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The store's change sequence at the comparison.
    pub source_seq: i64,
    /// Per table, in load order.
    pub tables: Vec<TableCheck>,
}

impl VerifyReport {
    /// Whether every table is equal.
    pub fn equal(&self) -> bool {
        self.tables.iter().all(TableCheck::equal)
    }

    /// One line per table that differs, naming what differs.
    pub fn differences(&self) -> Vec<String> {
        self.tables
            .iter()
            .filter(|t| !t.equal())
            .map(|t| {
                if t.source_rows != t.target_rows {
                    format!(
                        "{}: {} rows in the store, {} in PostgreSQL",
                        t.table, t.source_rows, t.target_rows
                    )
                } else {
                    format!(
                        "{}: same row count ({}), different contents",
                        t.table, t.source_rows
                    )
                }
            })
            .collect()
    }
}

/// Order-independent sum of row hashes.
#[derive(Default)]
struct Acc {
    rows: u64,
    sum: u128,
}

impl Acc {
    fn add(&mut self, fields: &[Option<&str>]) {
        let mut h = Sha256::new();
        for f in fields {
            match f {
                Some(s) => {
                    h.update([1u8]);
                    h.update((s.len() as u64).to_le_bytes());
                    h.update(s.as_bytes());
                }
                None => h.update([0u8]),
            }
        }
        let d = h.finalize();
        self.sum = self
            .sum
            .wrapping_add(u128::from_le_bytes(d[..16].try_into().expect("16 bytes")));
        self.rows += 1;
    }

    fn hex(&self) -> String {
        format!("{:032x}", self.sum)
    }
}

fn s(v: i64) -> String {
    v.to_string()
}

fn canon(value: &str) -> String {
    serde_json::from_str::<serde_json::Value>(value)
        .map_or_else(|_| format!("invalid:{value}"), |v| canonical_json(&v))
}

/// How a row's change sequence takes part in the comparison: a row the
/// store wrote is compared with its number (PostgreSQL keeps it in
/// `origin_seq`); a row that came from PostgreSQL by a pull only by content.
fn seq(change_seq: i64, pulled: &HashSet<i64>) -> String {
    if pulled.contains(&change_seq) {
        PULLED.to_string()
    } else {
        s(change_seq)
    }
}

const PULLED: &str = "pulled";

fn add_source(acc: &mut [Acc; 5], c: &Changes, pulled: &HashSet<i64>) {
    for r in &c.files {
        acc[0].add(&[
            Some(&r.path_id),
            Some(&r.tenant_id),
            Some(&r.virtual_path),
            Some(&r.backend_id),
            Some(&r.physical_path),
            Some(&s(r.size_bytes)),
            r.content_hash.as_deref(),
            r.file_type.as_deref(),
            Some(&s(r.created_at)),
            Some(&s(r.updated_at)),
            r.deleted_at.map(s).as_deref(),
            Some(&s(r.current_version)),
            Some(&seq(r.change_seq, pulled)),
        ]);
    }
    for r in &c.versions {
        acc[1].add(&[
            Some(&r.version_id),
            Some(&r.path_id),
            Some(&s(r.version_number)),
            Some(&r.backend_id),
            Some(&r.physical_path),
            r.content_hash.as_deref(),
            Some(&s(r.size_bytes)),
            r.mime_type.as_deref(),
            r.parent_version_id.as_deref(),
            Some(&r.source_type),
            r.change_reason.as_deref(),
            r.created_by.as_deref(),
            Some(&s(r.created_at)),
            Some(&seq(r.change_seq, pulled)),
        ]);
    }
    for r in &c.metadata {
        acc[2].add(&[
            Some(&r.path_id),
            Some(&r.key),
            Some(&canon(&r.value)),
            Some(&s(r.created_at)),
            Some(&s(r.updated_at)),
            Some(&seq(r.change_seq, pulled)),
        ]);
    }
    for r in &c.chunks {
        acc[3].add(&[
            Some(&r.tenant_id),
            Some(&r.content_hash),
            Some(&s(r.size_bytes)),
            Some(&r.storage_path),
            Some(&s(r.ref_count)),
            Some(&s(r.created_at)),
            r.last_accessed_at.map(s).as_deref(),
            r.protected_until.map(s).as_deref(),
            Some(&seq(r.change_seq, pulled)),
        ]);
    }
    for r in &c.tombstones {
        acc[4].add(&[
            Some(&r.table_name),
            Some(&r.key1),
            Some(&r.key2),
            Some(&s(r.deleted_at)),
            Some(&seq(r.change_seq, pulled)),
        ]);
    }
}

/// Every column as text, timestamps as integer microseconds, in the same order as `add_source`;
/// `{seq}` stands for [`TARGET_SEQ`].
const TARGET_QUERIES: [&str; 5] = [
    "SELECT path_id::text, tenant_id, virtual_path, backend_id, physical_path, size_bytes::text, content_hash, \
     file_type, (extract(epoch FROM created_at) * 1000000)::int8::text, \
     (extract(epoch FROM updated_at) * 1000000)::int8::text, (extract(epoch FROM deleted_at) * 1000000)::int8::text, \
     current_version::text, {seq} FROM file_paths",
    "SELECT version_id::text, path_id::text, version_number::text, backend_id, physical_path, content_hash, \
     size_bytes::text, mime_type, parent_version_id::text, source_type, change_reason, created_by, \
     (extract(epoch FROM created_at) * 1000000)::int8::text, {seq} FROM version_history",
    "SELECT path_id::text, key, value::text, (extract(epoch FROM created_at) * 1000000)::int8::text, \
     (extract(epoch FROM updated_at) * 1000000)::int8::text, {seq} FROM file_metadata",
    "SELECT tenant_id, content_hash, size_bytes::text, storage_path, ref_count::text, \
     (extract(epoch FROM created_at) * 1000000)::int8::text, (extract(epoch FROM last_accessed_at) * 1000000)::int8::text, \
     (extract(epoch FROM protected_until) * 1000000)::int8::text, {seq} FROM content_chunks",
    "SELECT table_name, key1, key2, (extract(epoch FROM deleted_at) * 1000000)::int8::text, {seq} \
     FROM tombstones",
];

/// The source's change sequence of a row it pushed (PostgreSQL keeps it in
/// `origin_seq`; rows synced before schema version 3 have no `origin_id`),
/// else [`PULLED`]: rows of other sources, and rows PostgreSQL wrote
/// itself, reach the store only by a pull.
const TARGET_SEQ: &str = "CASE WHEN origin_id = $1 OR (origin_id IS NULL AND origin_seq IS NOT NULL) \
     THEN origin_seq::text ELSE 'pulled' END";

impl Replicator {
    /// Compares every replicated table of the store with PostgreSQL.
    pub async fn verify(&self) -> Result<VerifyReport> {
        let client = self.target().connect(crate::APPLICATION_NAME, None).await?;
        let mut source: [Acc; 5] = Default::default();
        let (source_seq, source_id) = {
            let mut snap = self.store().snapshot().await?;
            let head = snap.change_seq();
            let pulled = snap.pulled(0, head)?;
            let mut after = 0;
            while after < head {
                let through = snap.window_end(after, 10_000)?;
                add_source(&mut source, &snap.changes(after, through)?, &pulled);
                after = through;
            }
            (head, snap.source_id().to_string())
        };
        let mut tables = Vec::new();
        for (i, sql) in TARGET_QUERIES.iter().enumerate() {
            let mut acc = Acc::default();
            let sql = sql.replace("{seq}", TARGET_SEQ);
            let stream = client
                .query_raw(&sql, [&source_id as &(dyn ToSql + Sync)])
                .await
                .map_err(Error::pg("reading the target for verify"))?;
            pin_mut!(stream);
            while let Some(row) = stream
                .try_next()
                .await
                .map_err(Error::pg("reading the target for verify"))?
            {
                let mut fields: Vec<Option<String>> = (0..row.len()).map(|c| row.get(c)).collect();
                if i == 2 {
                    fields[2] = fields[2].as_deref().map(canon);
                }
                let refs: Vec<Option<&str>> = fields.iter().map(|f| f.as_deref()).collect();
                acc.add(&refs);
            }
            tables.push(TableCheck {
                table: CHANGE_TABLES[i],
                source_rows: source[i].rows,
                target_rows: acc.rows,
                source_checksum: source[i].hex(),
                target_checksum: acc.hex(),
            });
        }
        Ok(VerifyReport { source_seq, tables })
    }
}
