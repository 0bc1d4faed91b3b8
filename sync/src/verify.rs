//! `verify`: row counts and an order-independent checksum per table, over
//! a canonical encoding of each row, computed on both sides.

use std::collections::HashSet;

use futures_util::{TryStreamExt, pin_mut};
use nexus_core::tables::{Cell, Column, Kind, TABLES, Table, TableRow};
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
                        "{}: {} in the store, {} in PostgreSQL",
                        t.table,
                        rows(t.source_rows),
                        t.target_rows
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

/// "1 row", "2 rows".
fn rows(n: u64) -> String {
    match n {
        1 => "1 row".to_string(),
        n => format!("{n} rows"),
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
    add_rows(&mut acc[0], &c.files, pulled);
    add_rows(&mut acc[1], &c.versions, pulled);
    add_rows(&mut acc[2], &c.metadata, pulled);
    add_rows(&mut acc[3], &c.chunks, pulled);
    add_rows(&mut acc[4], &c.tombstones, pulled);
}

/// Each row's cells as text in column order (JSON canonical, NULL as
/// none), then its change sequence as [`seq`] has it.
fn add_rows<T: TableRow>(acc: &mut Acc, rows: &[T], pulled: &HashSet<i64>) {
    let columns = T::TABLE.columns;
    for r in rows {
        let mut fields: Vec<Option<String>> = r
            .cells()
            .iter()
            .zip(columns)
            .map(|(cell, column)| match cell {
                Cell::Null => None,
                Cell::Int(i) => Some(i.to_string()),
                Cell::Text(t) if column.kind == Kind::Json => Some(canon(t)),
                Cell::Text(t) => Some(t.to_string()),
            })
            .collect();
        fields.push(Some(seq(r.change_seq(), pulled)));
        let refs: Vec<Option<&str>> = fields.iter().map(|f| f.as_deref()).collect();
        acc.add(&refs);
    }
}

/// A column as text in PostgreSQL, as [`add_rows`] encodes it.
fn target_column(c: &Column) -> String {
    match c.kind {
        Kind::Uuid | Kind::Int | Kind::Int4 | Kind::Json => format!("{}::text", c.name),
        Kind::Time => format!("{}::text", nexus_postgres::codec::micros(c.name)),
        Kind::Text => c.name.to_string(),
    }
}

/// The query of every row of `t` in PostgreSQL, as [`add_rows`] encodes
/// them (with [`TARGET_SEQ`] last).
fn target_query(t: &Table) -> String {
    format!(
        "SELECT {}, {TARGET_SEQ} FROM {}",
        t.select_list(target_column),
        t.name
    )
}

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
        for (i, table) in TABLES.iter().enumerate() {
            let mut acc = Acc::default();
            let sql = target_query(table);
            let json: Vec<usize> = table
                .columns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.kind == Kind::Json)
                .map(|(i, _)| i)
                .collect();
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
                for &j in &json {
                    fields[j] = fields[j].as_deref().map(canon);
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
