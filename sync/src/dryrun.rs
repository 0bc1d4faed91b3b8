//! `sync --dry-run`: what a run would send, and every value that would not
//! convert, without any DDL or write on the target.

use nexus_core::CHANGE_TABLES;
use serde::Serialize;

use crate::convert;
use crate::error::{Error, Result};
use crate::replicate::{Replicator, SyncMode, target_position};

/// At most this many problems are listed (all are counted).
pub const MAX_LISTED_PROBLEMS: usize = 1000;

/// What a run would do.
#[derive(Debug, Clone, Serialize)]
pub struct DryRunReport {
    /// The store's identity as a source.
    pub source_id: String,
    /// The target's watermark for this store (0 when it has none or no schema yet).
    pub from_seq: i64,
    /// The store's change sequence now.
    pub to_seq: i64,
    /// Whether the target has the Nexus schema yet.
    pub target_has_schema: bool,
    /// Full load, incremental, or nothing to do.
    pub mode: SyncMode,
    /// Rows that would be sent, per table.
    pub tables: Vec<(&'static str, u64)>,
    /// Values that would not convert (the first [`MAX_LISTED_PROBLEMS`]).
    pub problems: Vec<String>,
    /// How many values would not convert.
    pub problem_count: usize,
}

impl Replicator {
    /// Reports what [`Replicator::sync`] would send, and every value that
    /// would not convert, without changing the target.
    pub async fn dry_run(&self) -> Result<DryRunReport> {
        let client = self.target().connect(crate::APPLICATION_NAME, None).await?;
        let has_schema: bool = client
            .query_one("SELECT to_regclass('nexus_sync_state') IS NOT NULL", &[])
            .await
            .map_err(Error::pg("inspecting the target"))?
            .get(0);
        let mut snap = self.store().snapshot().await?;
        let source_id = snap.source_id().to_string();
        let head = snap.change_seq();
        let (watermark, empty) = if has_schema {
            target_position(
                &nexus_postgres::Cached::new(&client, &Default::default()),
                &source_id,
                head,
            )
            .await?
        } else {
            (0, true)
        };
        let counts = snap.count_changes(watermark, head)?;
        let mut problems = Vec::new();
        let mut after = watermark;
        while after < head {
            let through = snap.window_end(after, 10_000)?;
            let _ = convert::batch(snap.changes(after, through)?, &mut problems);
            after = through;
        }
        let problem_count = problems.len();
        problems.truncate(MAX_LISTED_PROBLEMS);
        Ok(DryRunReport {
            source_id,
            from_seq: watermark,
            to_seq: head,
            target_has_schema: has_schema,
            mode: if watermark == head {
                SyncMode::UpToDate
            } else if watermark == 0 && empty {
                SyncMode::Full
            } else {
                SyncMode::Incremental
            },
            tables: CHANGE_TABLES.iter().copied().zip(counts).collect(),
            problems,
            problem_count,
        })
    }
}
